"""Tiny configs and a slowed-down objective shared by the training tests and their subprocesses."""

from __future__ import annotations

import time
from typing import Any

from robustlab.core.config import parse_config
from robustlab.training.config import TrainConfig
from robustlab.training.objectives import register_objective
from robustlab.training.objectives.pgd_at import PGDAT


@register_objective("slow-pgd-at")
class SlowPGDAT(PGDAT):
    """PGD-AT that sleeps a little per step, so a subprocess can be killed in the middle of an epoch."""

    def loss(self, model, x, y):  # type: ignore[override]
        time.sleep(0.15)
        return super().loss(model, x, y)


def tiny_config(**overrides: Any) -> TrainConfig:
    """A seconds-long MNIST run: 256 images, MLP, PGD-3 AT with random start, Adam, cosine."""
    cfg: dict[str, Any] = {
        "name": "tiny",
        "seed": 3,
        "epochs": 2,
        "batch_size": 32,
        "data": {"dataset": "mnist", "val_size": 5000, "train_subset": 256},
        "model": {"name": "mlp", "kwargs": {"hidden": [32]}},
        "optimizer": {"name": "adam", "lr": 0.003},
        "schedule": {"name": "cosine"},
        "objective": {"name": "pgd-at", "attack": {"name": "pgd", "norm": "linf", "eps": 0.1, "steps": 3}},
        "validation": {"n": 64, "attack": {"name": "pgd", "norm": "linf", "eps": 0.1, "steps": 3}},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return parse_config(cfg, TrainConfig)
