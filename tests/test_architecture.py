"""The package's layers: every import (module level or inside a function) goes down the layers or stays inside its
own, no modules import each other in a circle, and no private name is imported from another package.

Run alone with ``python -m pytest tests/test_architecture.py``; docs/architecture.md draws the same layers.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "robustlab"

#: Bottom to top. A module may import from its own layer and the layers below it, never above.
LAYERS: list[set[str]] = [
    {"core"},                  # errors, validation, threat model, config bases, registries
    {"utils", "io"},           # device, progress; atomic writes, hashes, checkpoints
    {"data"},
    {"models"},
    {"runs"},                  # run folders, loading trained models
    {"attacks"},
    {"purification"},          # defences as models: CARSO, AToP's transforms and purifiers
    {"evaluation"},            # protocols, robust accuracy, sanity checks (the trainer validates with these)
    {"training"},              # the trainer, objectives, the AToP purifier trainer
    {"store", "analysis"},
    {"report"},
    {"presets"},
    {"app", "cli"},            # whole jobs and the command line
]
LAYER_OF = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> Iterator[tuple[str, list[str]]]:
    """(imported robustlab module, names imported from it) for every import statement of ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full, []) if full in MODULES else (base, [alias.name])


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _ in _imports(module):
            resolved = _resolve(target) if target.startswith("robustlab") else None
            # importing an ancestor package's face (robustlab/__init__) is not a dependency on its contents
            if resolved and resolved != module and not module.startswith(resolved + "."):
                edges[module].add(resolved)
    return edges


def test_every_subpackage_has_a_layer() -> None:
    tops = {_top(m) for m in MODULES} - {""}
    assert tops == set(LAYER_OF), f"packages without a layer: {tops - set(LAYER_OF)}; stale: {set(LAYER_OF) - tops}"


def test_imports_only_go_down() -> None:
    upward = []
    for module, targets in _edges().items():
        if _top(module) not in LAYER_OF:
            continue
        for target in targets:
            if _top(target) in LAYER_OF and LAYER_OF[_top(target)] > LAYER_OF[_top(module)]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that run up the layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycles() -> None:
    edges = _edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    assert not cycles, f"modules that import each other in a circle: {cycles}"


def test_no_private_names_across_packages() -> None:
    private = [f"{module} imports {target}.{name}"
               for module in MODULES for target, names in _imports(module) if target.startswith("robustlab")
               for name in names if name.startswith("_") and not name.startswith("__")
               and _top(_resolve(target) or "") != _top(module)]
    assert not private, "\n".join(private)


@pytest.mark.parametrize("probe", ["upward", "cycle"])
def test_the_checks_can_fail(probe: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks above see a planted upward import and a planted cycle (so a pass means something)."""
    real = _edges()
    planted = {m: set(t) for m, t in real.items()}
    if probe == "upward":
        planted["robustlab.core.errors"].add("robustlab.cli")
        monkeypatch.setattr(sys.modules[__name__], "_edges", lambda: planted)
        with pytest.raises(AssertionError, match="robustlab.core.errors -> robustlab.cli"):
            test_imports_only_go_down()
    else:
        planted["robustlab.core.errors"].add("robustlab.core.threat")
        monkeypatch.setattr(sys.modules[__name__], "_edges", lambda: planted)
        with pytest.raises(AssertionError, match="circle"):
            test_no_import_cycles()
