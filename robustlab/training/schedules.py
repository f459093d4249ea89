"""Learning-rate schedules as pure functions of training progress (fractional epochs).

A stateless schedule makes resume exact: the learning rate at any step is recomputed, never restored.
"""

from __future__ import annotations

import math

from robustlab.training.config import ScheduleConfig


def lr_factor(cfg: ScheduleConfig, progress: float, total_epochs: float) -> float:
    """Multiplier of the base learning rate at ``progress`` epochs into a run of ``total_epochs``."""
    if cfg.warmup_epochs > 0 and progress < cfg.warmup_epochs and cfg.name != "onecycle":
        return (progress + 1e-8) / cfg.warmup_epochs
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "multistep":
        return cfg.gamma ** sum(1 for m in cfg.milestones if progress >= m)
    if cfg.name == "cosine":
        start = cfg.warmup_epochs
        t = min(1.0, max(0.0, (progress - start) / max(1e-8, total_epochs - start)))
        floor = cfg.final_lr_fraction
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.name == "onecycle":  # linear up to the peak, then linear down (Wong et al. 2020 fast AT)
        peak = cfg.peak_fraction * total_epochs
        if progress <= peak:
            return progress / max(peak, 1e-8)
        t = (progress - peak) / max(total_epochs - peak, 1e-8)
        return max(cfg.final_lr_fraction, 1.0 - t * (1.0 - cfg.final_lr_fraction))
    if cfg.name == "warmup-flat-anneal":  # CARSO's warmed_up_linneal, continuous in progress (the code steps per epoch)
        start = cfg.warmup_epochs + cfg.flat_epochs
        if progress < start:
            return 1.0
        t = min(1.0, (progress - start) / max(total_epochs - start, 1e-8))
        return 1.0 - t * (1.0 - cfg.final_lr_fraction)
    raise ValueError(f"unknown schedule {cfg.name}")
