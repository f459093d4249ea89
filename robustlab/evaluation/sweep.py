"""Robust accuracy versus eps: the protocol's first attack re-run alone at each radius of ``eps_sweep``.

Each radius is an independent evaluation (not cumulative over radii) seeded exactly as a protocol whose only
attack is that one at that radius, so a sweep value equals ``robustlab evaluate --eps E --n eps_sweep_n``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.core.rng import derive_seed
from robustlab.evaluation.config import EvalConfig
from robustlab.evaluation.named import first_attack_config, named_attacks
from robustlab.evaluation.robust import accuracy_of, robust_flags


def eps_key(eps: float) -> str:
    """The JSON key of a swept radius: ``repr`` of the float, which round-trips exactly (``0.3`` -> ``"0.3"``)."""
    return repr(float(eps))


@dataclass
class EpsSweep:
    """Accuracy per radius (keyed by :func:`eps_key`, in sweep order), the points used, the attack, seconds."""

    accuracy: dict[str, float]
    n: int
    attack: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


def run_eps_sweep(model: nn.Module, x: Tensor, y: Tensor, cfg: EvalConfig, *, show_progress: bool = False) -> EpsSweep:
    """Run ``cfg``'s first attack at each ``cfg.eps_sweep`` radius on the first ``cfg.eps_sweep_n`` points of x.

    The attack keeps its configured steps, step size and restarts; only eps changes. Accuracy counts a point as
    robust iff it is classified correctly both clean and after the attack.
    """
    k = len(x) if cfg.eps_sweep_n is None else min(cfg.eps_sweep_n, len(x))
    base = first_attack_config(cfg)
    xs, ys = x[:k], y[:k]
    accuracy: dict[str, float] = {}
    timings: dict[str, float] = {}
    for eps in cfg.eps_sweep:
        attack = named_attacks(model, [base.model_copy(update={"eps": float(eps)})])
        torch.manual_seed(derive_seed(cfg.seed, "eval"))  # the seed a single-attack protocol at this eps uses
        t0 = time.perf_counter()
        _, flags, _ = robust_flags(model, xs, ys, attack, batch_size=cfg.batch_size, show_progress=show_progress,
                                   seed=derive_seed(cfg.seed, "eval"))
        accuracy[eps_key(eps)] = accuracy_of(flags[attack[0].name])
        timings[eps_key(eps)] = time.perf_counter() - t0
    described = base.model_dump(exclude_none=True, exclude={"eps"})
    return EpsSweep(accuracy=accuracy, n=k, attack=described, timings=timings)
