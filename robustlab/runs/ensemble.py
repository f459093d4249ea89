"""An ensemble assembled from trained runs: each run's net becomes a member, under one shared normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from robustlab.core.errors import ConfigError
from robustlab.models.ensemble import Ensemble
from robustlab.models.normalized import Normalized
from robustlab.runs.loading import load_trained_model


def ensemble_from_runs(runs: Sequence[str | Path], which: str = "best",
                       device: str | torch.device = "cpu") -> nn.Module:
    """Load trained run folders (or checkpoints) as the members of one ensemble, wrapped like ``create_model`` does.

    Every run must be on the same dataset (same input shape, classes and normalisation); the result carries a
    ``model_spec`` of the ``ensemble`` registry model, so it can be saved and reloaded as one checkpoint.
    """
    runs = list(runs)
    if len(runs) < 2:
        raise ConfigError(f"an ensemble needs at least 2 member runs, got {len(runs)}")
    loaded = [load_trained_model(r, which=which, device=device) for r in runs]
    datasets = [meta["dataset"] for _, meta in loaded]
    if len(set(datasets)) > 1:
        raise ConfigError(f"ensemble member runs were trained on different datasets {datasets}; "
                          "members must share input shape, classes and normalisation")
    nets, specs, wrappers = [], [], []
    for (model, meta), run in zip(loaded, runs, strict=True):
        if not isinstance(model, Normalized):
            raise ConfigError(f"{run}: expected a registry model wrapped in Normalized, got {type(model).__name__}")
        if meta["model"] == "ensemble":
            raise ConfigError(f"{run} is already an ensemble; list its member runs instead")
        nets.append(model.net)
        specs.append({"name": meta["model"], "kwargs": model.model_spec.get("kwargs", {})})
        wrappers.append(model)
    first = wrappers[0]
    if any(not torch.equal(m.mean, first.mean) or not torch.equal(m.std, first.std) for m in wrappers):
        raise ConfigError("ensemble member runs use different input normalisation; they must share one dataset")
    wrapped = Normalized(Ensemble(nets), first.mean.flatten(), first.std.flatten(),
                         in_channels=first.in_channels).to(first.mean.device)
    wrapped.model_spec = {"model": "ensemble", "dataset": datasets[0], "kwargs": {"members": specs}}
    wrapped.eval()
    return wrapped
