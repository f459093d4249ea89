"""Presets: one YAML file per (paper, table row) or per table with ``variants``, each with a ``quick`` (CPU minutes)
and a ``paper`` scale, and a ``reduced`` scale derived from ``quick``.

A preset file has ``train`` and ``eval`` sections (a TrainConfig and an EvalConfig), ``scales`` whose entries
override them, and ``published`` numbers copied from the source with their table reference. A file may instead
hold a table's rows as ``variants`` (one file per table, not one per row): each variant may set ``train``, ``eval``,
``scales`` and ``published`` (deep-merged over the file's), ``description`` and ``reference`` (replacing the
file's) and ``notes`` (appended to the file's). A variant is named ``<file>-<variant>`` unless it sets ``name``;
only the variants are presets then.
Resolution order at a scale: file train/eval, file ``scales[scale]``, variant train/eval, variant ``scales[scale]``.

``reduced`` is the 2-core CPU budget of the reduced-budget tables in docs/results.md: the ``quick`` resolution, then
:data:`REDUCED_TRAIN` (the first 10,000 training images, 3 epochs, fp32) and, only where ``quick`` evaluates on the
whole test set (``eval.n`` unset), :data:`REDUCED_EVAL` (the first 1,000 test points, the eps sweep if any on the
first 500, no AutoAttack, which does not fit a CPU budget); a ``quick`` protocol already capped to a few hundred
points (CARSO, CIFAR-10) is kept as it is. Then the file's and the variant's own ``scales.reduced``, if any, on top,
so a preset overrides any part of the derived budget by naming it there. A reduced run's name ends in ``-reduced``
(also when the file names its run), so it never shares a run folder with the ``quick`` run it derives from.
The fixed budget is not always smaller than ``quick``: CIFAR-10 and CARSO quick scales train on fewer images.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from robustlab.core.config import parse_config
from robustlab.core.dicts import deep_merge
from robustlab.core.errors import ConfigError, UnknownNameError
from robustlab.evaluation.config import EvalConfig
from robustlab.training.config import TrainConfig

SCALES = ("quick", "reduced", "paper")
# The reduced scale (module docstring): quick's resolution with these applied. Run names aside, the reduced-budget
# runs of docs/results.md were given this config as --set overrides (some left bf16 on; their CPU ran fp32).
REDUCED_BASE = "quick"
REDUCED_TRAIN: dict[str, Any] = {"data": {"train_subset": 10000}, "epochs": 3, "bf16": False}
REDUCED_EVAL: dict[str, Any] = {"n": 1000, "eps_sweep_n": 500, "autoattack": None}
_TOP_KEYS = {"name", "description", "reference", "train", "eval", "scales", "published", "notes", "variants"}
_VARIANT_KEYS = _TOP_KEYS - {"variants"}
_MERGED_KEYS = ("train", "eval", "scales", "published")


@dataclass
class Preset:
    """A resolved preset: configs for one scale plus the published numbers it chases."""

    name: str
    scale: str
    train: TrainConfig
    eval: EvalConfig
    description: str = ""
    reference: str = ""
    published: dict[str, Any] = field(default_factory=dict)
    notes: str = ""


def _preset_dir() -> Any:
    return resources.files("robustlab.presets")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["train.optimizer.lr=0.05", "eval.n=500"]`` -> nested dict; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} must look like section.key=value")
        path, raw = pair.split("=", 1)
        keys = path.strip().split(".")
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = yaml.safe_load(raw)
    return out


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a preset must be a mapping")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown top-level keys {sorted(unknown)}; valid: {sorted(_TOP_KEYS)}")
    variants = data.get("variants")
    if variants is not None:
        if not isinstance(variants, dict) or not variants:
            raise ConfigError(f"{where}: 'variants' must be a non-empty mapping of variant name -> overrides")
        for key, body in variants.items():
            if not isinstance(body, dict):
                raise ConfigError(f"{where}: variant {key!r} must be a mapping (use {{}} for no change)")
            bad = set(body) - _VARIANT_KEYS
            if bad:
                raise ConfigError(f"{where}: variant {key!r} has unknown keys {sorted(bad)}; "
                                  f"valid: {sorted(_VARIANT_KEYS)}")
    return data


def _expand(data: dict[str, Any], stem: str) -> dict[str, dict[str, Any]]:
    """Preset name -> its body; a file without variants is one preset. A variant's body keeps the file's
    sections and its own as two ``layers`` (applied in order: file train/eval, file scale, variant train/eval,
    variant scale), so a variant overrides the file at every scale; its ``published`` is deep-merged too."""
    base_name = str(data.get("name", stem))
    base_layer = {k: data.get(k) or {} for k in ("train", "eval", "scales")}
    variants = data.get("variants")
    common = {k: v for k, v in data.items() if k not in ("variants", "name", "train", "eval", "scales")}
    if variants is None:
        return {base_name: {**common, "layers": [base_layer]}}
    out: dict[str, dict[str, Any]] = {}
    for key, body in variants.items():
        merged = dict(common)
        for k in ("description", "reference"):
            if k in body:
                merged[k] = body[k]
        notes = [str(n).strip() for n in (common.get("notes"), body.get("notes")) if n]
        merged["notes"] = "\n".join(notes)
        merged["published"] = deep_merge(common.get("published") or {}, body.get("published") or {})
        merged["layers"] = [base_layer, {k: body.get(k) or {} for k in ("train", "eval", "scales")}]
        name = str(body.get("name", f"{base_name}-{key}"))
        if name in out:
            raise ConfigError(f"{stem}: two variants are named {name!r}")
        out[name] = merged
    return out


@lru_cache(maxsize=1)
def _bundled() -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """(preset name -> body, file stem -> its variant preset names) for every bundled YAML file."""
    index: dict[str, dict[str, Any]] = {}
    families: dict[str, list[str]] = {}
    for res in sorted(_preset_dir().iterdir(), key=lambda r: r.name):
        if not res.name.endswith(".yaml"):
            continue
        stem = res.name[: -len(".yaml")]
        data = _parse(res.read_text(), res.name)
        expanded = _expand(data, stem)
        for name in expanded:
            if name in index:
                raise ConfigError(f"preset name {name!r} is defined twice (second time in {res.name})")
        index.update(expanded)
        if data.get("variants") is not None:
            families[str(data.get("name", stem))] = list(expanded)
    return index, families


def list_presets() -> list[str]:
    """Names of the bundled presets, every variant included."""
    return sorted(_bundled()[0])


def _unknown(name: str) -> UnknownNameError:
    _, families = _bundled()
    if name in families:
        return UnknownNameError(f"{name!r} is a preset family; choose one of its variants: "
                                f"{', '.join(families[name])}")
    for family, members in sorted(families.items(), key=lambda kv: -len(kv[0])):
        if name.startswith(family + "-"):
            return UnknownNameError(f"unknown variant {name[len(family) + 1:]!r} of {family!r}; valid presets: "
                                    f"{', '.join(members)}")
    return UnknownNameError(f"unknown preset {name!r}; valid presets: {', '.join(list_presets())}")


def _read(name_or_path: str, variant: str | None) -> tuple[str, dict[str, Any]]:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        data = _parse(path.read_text(), name_or_path)
        presets = _expand(data, path.stem)
        if data.get("variants") is None:
            if variant is not None:
                raise ConfigError(f"{name_or_path} has no variants; drop variant={variant!r}")
            return next(iter(presets.items()))
        base_name = str(data.get("name", path.stem))
        keys = {k: str(b.get("name", f"{base_name}-{k}")) for k, b in data["variants"].items()}
        choice = keys.get(variant or "", variant)
        if choice not in presets:
            raise UnknownNameError(f"{name_or_path}: choose a variant (valid: {', '.join(keys)})" if variant is None
                                   else f"{name_or_path}: unknown variant {variant!r}; valid: {', '.join(keys)}")
        return choice, presets[choice]
    index, _ = _bundled()
    name = name_or_path if variant is None else f"{name_or_path}-{variant}"
    if name not in index:
        raise _unknown(name)
    return name, index[name]


def _check_scale(name: str, layers: list[dict[str, Any]], scale: str) -> None:
    """A preset offers the scales its files name plus ``reduced`` wherever it offers ``quick``; one that names no
    scale offers every scale of :data:`SCALES` (its train/eval sections are then the whole config)."""
    named = {s for layer in layers for s in layer["scales"]}
    offered = (named | ({"reduced"} if REDUCED_BASE in named else set())) if named else set(SCALES)
    if scale in offered:
        return
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; this preset has: {', '.join(sorted(offered))}")
    why = f" (it is derived from {REDUCED_BASE!r}, which this preset lacks)" if scale == "reduced" else ""
    raise ConfigError(f"preset {name} has no {scale!r} scale{why}; it has: {', '.join(sorted(offered))}")


def _resolve(layers: list[dict[str, Any]], scale: str) -> dict[str, Any]:
    """Merge the layers at ``scale`` (module docstring); ``reduced`` resolves ``quick``, applies the reduced
    budget, then every layer's own ``scales.reduced``."""
    base = REDUCED_BASE if scale == "reduced" else scale
    merged: dict[str, Any] = {"train": {}, "eval": {}}
    for layer in layers:
        merged = deep_merge(merged, {"train": layer["train"], "eval": layer["eval"]})
        merged = deep_merge(merged, layer["scales"].get(base) or {})
    if scale != "reduced":
        return merged
    merged = deep_merge(merged, {"train": REDUCED_TRAIN})
    if "name" in merged["train"]:  # a file that names its run: the reduced run gets its own folder too
        merged["train"]["name"] = f"{merged['train']['name']}-reduced"
    if merged["eval"].get("n") is None:  # quick's protocol runs on the whole test set: cut it to the CPU budget
        cut = dict(REDUCED_EVAL)
        if not merged["eval"].get("eps_sweep"):
            cut.pop("eps_sweep_n")  # no sweep to cut: leave the config as the documented runs had it
        merged = deep_merge(merged, {"eval": cut})
    for layer in layers:
        merged = deep_merge(merged, layer["scales"].get("reduced") or {})
    return merged


def load_preset(
    name_or_path: str, scale: str = "quick", overrides: dict[str, Any] | None = None, variant: str | None = None
) -> Preset:
    """Resolve a preset (bundled name, e.g. ``udr-mnist-trades``, or YAML path; ``variant`` picks a row of a
    file with variants) at ``scale`` with optional nested ``overrides``."""
    name, data = _read(name_or_path, variant)
    layers = data["layers"]
    _check_scale(name, layers, scale)
    merged = _resolve(layers, scale)
    merged = deep_merge(merged, overrides or {})
    unknown = set(merged) - {"train", "eval"}
    if unknown:
        raise ConfigError(f"overrides may only touch 'train' and 'eval', got {sorted(unknown)}")
    merged["train"].setdefault("name", f"{name}-{scale}")
    return Preset(
        name=name, scale=scale, train=parse_config(merged["train"], TrainConfig, "train"),
        eval=parse_config(merged["eval"], EvalConfig, "eval"), description=data.get("description", ""),
        reference=data.get("reference", ""), published=copy.deepcopy(data.get("published", {}) or {}),
        notes=data.get("notes", ""),
    )
