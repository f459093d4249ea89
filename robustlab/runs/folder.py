"""The layout of a run folder and the questions asked of it: which folder a path belongs to, which checkpoint file
a run names, which protocol and training attack it records. Reads YAML only (no unpickling, no model building)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from robustlab.core.errors import CheckpointError, ConfigError
from robustlab.io.atomic import atomic_write_text

CONFIG_FILE = "config.yaml"  # the TrainConfig the trainer ran
PRESET_FILE = "preset.yaml"  # the preset's name, scale, evaluation protocol and published numbers
SCALER_FILE = "scaler.json"  # a table's min-max scaler, fitted on the training rows
CHECKPOINTS = "checkpoints"


def run_folder_of(run: str | Path) -> Path:
    """The run folder of a run path or of a checkpoint file (inside its ``checkpoints/`` folder or beside it)."""
    run = Path(run)
    if run.is_dir():
        return run
    return run.parent.parent if run.parent.name == CHECKPOINTS else run.parent


def is_run_folder(path: Path) -> bool:
    """A folder the trainer wrote into (its config or its checkpoints)."""
    return path.is_dir() and ((path / CONFIG_FILE).exists() or (path / CHECKPOINTS).is_dir())


def resolve_checkpoint(run: str | Path, which: str = "best") -> Path:
    """The checkpoint file of ``run``: the file itself, or ``checkpoints/<which>.safetensors`` of a run folder.
    Each way of being wrong gets its own message: no such path, a folder that is not a run, a run not trained yet,
    a run whose ``which`` checkpoint is missing while another exists."""
    path = Path(run)
    if not path.exists():
        raise CheckpointError(f"no run folder or checkpoint at {path}")
    if path.is_file():
        return path
    if not is_run_folder(path):
        raise CheckpointError(f"{path} is not a run folder (no {CONFIG_FILE} or {CHECKPOINTS}/ in it); pass a run "
                              "folder written by `robustlab train` or a checkpoint file")
    folder = path / CHECKPOINTS
    ckpt = folder / f"{which}.safetensors"
    if ckpt.exists():
        return ckpt
    others = sorted(p.stem for p in folder.glob("*.safetensors") if not p.stem.startswith("optim-")) \
        if folder.is_dir() else []
    if not others:
        raise CheckpointError(f"{path} has no checkpoint yet: train it first (`robustlab train`), or resume the "
                              "training that was stopped")
    options = " or ".join(f"--which {o}" for o in others)
    raise CheckpointError(f"{path} has no {which!r} checkpoint (the training has not finished an epoch with "
                          f"validation, or was stopped); it has {', '.join(others)}: pass {options}")


def read_yaml_mapping(path: Path) -> dict[str, Any] | None:
    """The YAML mapping in ``path``, None when the file is absent; anything else in it is a ``ConfigError``."""
    if not path.exists():
        return None
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} must hold a mapping, got {type(doc).__name__}")
    return doc


def run_config(folder: str | Path) -> dict[str, Any]:
    """The run's ``config.yaml`` as a dict ({} when absent)."""
    return read_yaml_mapping(Path(folder) / CONFIG_FILE) or {}


def run_protocol_source(folder: str | Path) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(evaluation protocol, published numbers) recorded in the run's ``preset.yaml``; (None, {}) without one."""
    doc = read_yaml_mapping(Path(folder) / PRESET_FILE)
    if doc is None or doc.get("eval") is None:
        return None, dict((doc or {}).get("published") or {})
    if not isinstance(doc["eval"], dict):
        raise ConfigError(f"{Path(folder) / PRESET_FILE}: 'eval' must be a mapping")
    return dict(doc["eval"]), dict(doc.get("published") or {})


def training_attack(folder: str | Path) -> dict[str, Any] | None:
    """The attack the run was trained with (``objective.attack`` of its config), None for standard training or a
    folder without a config."""
    attack = (run_config(folder).get("objective") or {}).get("attack")
    return dict(attack) if isinstance(attack, dict) and attack.get("eps") is not None else None


def write_preset_file(run_dir: str | Path, preset: Any) -> Path:
    """Record a preset's name, scale, protocol and published numbers in ``run_dir/preset.yaml`` (atomically), so that
    ``robustlab evaluate RUN`` runs the preset's protocol and the store and report know what the run chases."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = {"preset": preset.name, "scale": preset.scale, "published": dict(preset.published or {}),
           "eval": preset.eval.model_dump(mode="json", exclude_none=True)}
    path = run_dir / PRESET_FILE
    atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False))
    return path
