"""benchmarks/ stays navigable: files are named by what they measure (never by a work item), every benchmark path
that the docs, presets, code and scripts cite exists, and ``make bench`` (benchmarks/run_all.py) covers every
self-contained script of perf/ and checks/."""

from __future__ import annotations

import importlib.util
import itertools
import re
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
CITED = re.compile(r"benchmarks/[\w./{},*-]+?\.(?:py|sh|json)\b")


def _citing_files() -> list[Path]:
    """Every text file of the repository that may cite a benchmark."""
    files = [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "docs").glob("*.md"))]
    for folder, patterns in ((ROOT / "robustlab", ("*.py", "*.yaml")), (ROOT / "tests", ("*.py",)),
                             (BENCH, ("*.py", "*.sh"))):
        files += [p for pattern in patterns for p in sorted(folder.rglob(pattern))]
    return files


def _expand(path: str) -> list[str]:
    """``a_{x,y}_b`` -> ``a_x_b``, ``a_y_b`` (the shell's brace expansion, as scripts and docs write it)."""
    parts = re.split(r"\{([^{}]*)\}", path)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def _exists(path: str) -> bool:
    return any(ROOT.glob(path)) if "*" in path else (ROOT / path).is_file()


def _run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_all", BENCH / "run_all.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_benchmark_is_named_after_a_work_item() -> None:
    named = [str(p.relative_to(ROOT)) for p in BENCH.rglob("*") if re.search(r"issue", p.name, re.IGNORECASE)]
    assert not named


def test_every_cited_benchmark_path_exists() -> None:
    """A result a benchmark script only names as its output may not exist yet; every other citation must."""
    missing = sorted({f"{path} (cited in {f.relative_to(ROOT)})" for f in _citing_files()
                      for match in CITED.finditer(f.read_text(encoding="utf-8"))
                      for path in _expand(match.group())
                      if not _exists(path) and not (f.is_relative_to(BENCH) and path.endswith(".json"))})
    assert not missing, "\n".join(missing)


def test_run_all_covers_perf_and_checks() -> None:
    run_all = _run_all()
    listed = {script for script, _ in run_all.BENCHMARKS.values()}
    listed |= {command.split()[0] for command in run_all.NEEDS_RUN.values()}
    listed |= {command.split()[0] for command in run_all.NEEDS_PACKAGE.values()}
    assert all((BENCH / script).is_file() for script in listed), listed
    present = {str(p.relative_to(BENCH)) for folder in ("perf", "checks") for p in (BENCH / folder).glob("*.py")}
    assert present == listed
