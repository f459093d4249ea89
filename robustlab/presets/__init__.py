"""Presets: one YAML file per (paper, table row), each with a ``quick`` (CPU minutes) and a ``paper`` scale.

A preset file has ``train`` and ``eval`` sections (a TrainConfig and an EvalConfig), ``scales`` whose entries
override them, and ``published`` numbers copied from the source with their table reference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from robustlab.errors import ConfigError, UnknownNameError
from robustlab.evaluation.protocol import EvalConfig
from robustlab.training.config import TrainConfig, parse_config

SCALES = ("quick", "paper")
_TOP_KEYS = {"name", "description", "reference", "train", "eval", "scales", "published", "notes"}


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


def list_presets() -> list[str]:
    """Names of the bundled presets."""
    return sorted(p.name[: -len(".yaml")] for p in _preset_dir().iterdir() if p.name.endswith(".yaml"))


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base``; lists and scalars are replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


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


def _read(name_or_path: str) -> tuple[str, dict[str, Any]]:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        text = path.read_text()
        default_name = path.stem
    else:
        res = _preset_dir() / f"{name_or_path}.yaml"
        if not res.is_file():
            raise UnknownNameError(f"unknown preset {name_or_path!r}; valid presets: {', '.join(list_presets())}")
        text = res.read_text()
        default_name = name_or_path
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name_or_path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name_or_path}: a preset must be a mapping")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{name_or_path}: unknown top-level keys {sorted(unknown)}; valid: {sorted(_TOP_KEYS)}")
    return data.get("name", default_name), data


def load_preset(name_or_path: str, scale: str = "quick", overrides: dict[str, Any] | None = None) -> Preset:
    """Resolve a preset (bundled name or YAML path) at ``scale`` with optional nested ``overrides``."""
    name, data = _read(name_or_path)
    scales = data.get("scales", {}) or {}
    if scale not in scales and scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; this preset has: {', '.join(scales) or 'none'}")
    if scale not in scales and scales:
        raise ConfigError(f"preset {name} has no {scale!r} scale; it has: {', '.join(scales)}")
    merged = {"train": data.get("train", {}), "eval": data.get("eval", {})}
    merged = deep_merge(merged, scales.get(scale, {}) or {})
    merged = deep_merge(merged, overrides or {})
    unknown = set(merged) - {"train", "eval"}
    if unknown:
        raise ConfigError(f"overrides may only touch 'train' and 'eval', got {sorted(unknown)}")
    merged["train"].setdefault("name", f"{name}-{scale}")
    return Preset(
        name=name, scale=scale, train=parse_config(merged["train"], TrainConfig, "train"),
        eval=parse_config(merged["eval"], EvalConfig, "eval"), description=data.get("description", ""),
        reference=data.get("reference", ""), published=data.get("published", {}) or {}, notes=data.get("notes", ""),
    )
