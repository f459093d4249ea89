"""What the trainer and the AToP purifier trainer share about their checkpoints: optimizer state as safetensors plus
JSON, and reading (and checking) the training state a ``last.safetensors`` carries, so a resume is exact or refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from robustlab.core.errors import CheckpointError, ConfigError
from robustlab.io.checkpoint import read_metadata


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into safetensors-ready tensors and JSON-ready scalars."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Inverse of :func:`optimizer_to_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, values in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def read_training_state(last: Path, state_key: str, what: str) -> dict[str, Any] | None:
    """The training state stored under ``state_key`` in checkpoint ``last``'s metadata; None when there is no
    checkpoint yet. A checkpoint without that state (another kind of run) is refused."""
    if not last.exists():
        return None
    meta = read_metadata(last)
    if state_key not in meta:
        raise CheckpointError(f"{last} holds no {what} state; it is not a {what} checkpoint")
    return json.loads(meta[state_key])


def require_same_config(state: dict[str, Any], config_hash: str, run_dir: Path, advice: str) -> None:
    """Refuse to resume a run folder whose checkpoint was written by another config."""
    if state.get("config_hash") != config_hash:
        raise ConfigError(f"run folder {run_dir} was trained with a different config (hash "
                          f"{state.get('config_hash')} vs {config_hash}); {advice}")
