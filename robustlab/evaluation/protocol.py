"""An evaluation protocol from config: which split, how many points, which attacks, which sanity checks."""

from __future__ import annotations

import time
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from robustlab.attacks.spec import build_attack
from robustlab.data import ImageData
from robustlab.evaluation.result import EvaluationResult
from robustlab.evaluation.robust import NamedAttack, accuracy_of, grad_health, robust_flags
from robustlab.threat import ThreatModel
from robustlab.training.config import AttackConfig, Strict
from robustlab.utils.rng import derive_seed

#: Robust accuracy above this at ``large_eps`` means the attack is not working (masking or a broken model).
LARGE_EPS_MAX_ACCURACY = 0.10


class EvalConfig(Strict):
    """Evaluation protocol: attacks run in order, each on the points all earlier ones failed on."""

    split: Literal["test", "val"] = "test"
    n: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=500, ge=1)
    seed: int = 0
    attacks: list[AttackConfig] = Field(min_length=1)
    large_eps: float | None = Field(default=None, gt=0)
    grad_check_n: int = Field(default=200, ge=0)


def attack_label(cfg: AttackConfig) -> str:
    """Human-readable, unique-enough name: ``pgd-50x3 linf eps=0.3``."""
    steps = f"-{cfg.steps}" if cfg.steps else ""
    restarts = f"x{cfg.restarts}" if cfg.restarts and cfg.restarts > 1 else ""
    return f"{cfg.name}{steps}{restarts} {cfg.norm} eps={cfg.eps:.4g}"


def named_attacks(model: nn.Module, cfgs: list[AttackConfig]) -> list[NamedAttack]:
    """Build each configured attack with evaluation settings (early stop on fooled points where supported)."""
    out = []
    for cfg in cfgs:
        extra: dict[str, Any] = {"early_stop": True} if cfg.name in ("pgd", "bim") else {}
        attack = build_attack(cfg, model, **extra)
        settings = cfg.model_dump(exclude_none=True, exclude={"norm", "eps"})
        out.append(NamedAttack(attack_label(cfg), attack, ThreatModel(cfg.norm, cfg.eps), settings))
    return out


def run_protocol(
    model: nn.Module,
    data: ImageData,
    cfg: EvalConfig,
    *,
    model_info: dict[str, Any] | None = None,
    show_progress: bool = False,
) -> EvaluationResult:
    """Evaluate ``model`` on ``data`` (already the chosen split) under ``cfg``; includes the sanity checks."""
    n = len(data) if cfg.n is None else min(cfg.n, len(data))
    indices = torch.arange(n)
    x, y = data.float_images(indices), data.labels[indices]
    model.eval()
    attacks = named_attacks(model, cfg.attacks)
    torch.manual_seed(derive_seed(cfg.seed, "eval"))
    t0 = time.perf_counter()
    clean, flags, timings = robust_flags(model, x, y, attacks, batch_size=cfg.batch_size, show_progress=show_progress)
    timings["total"] = time.perf_counter() - t0
    sanity: dict[str, Any] = {}
    if cfg.grad_check_n:
        k = min(cfg.grad_check_n, n)
        sanity.update(grad_health(model, x[:k], y[:k], cfg.batch_size))
    if cfg.large_eps is not None:
        big = cfg.attacks[0].model_copy(update={"eps": min(cfg.large_eps, 1.0) if cfg.attacks[0].norm == "linf"
                                                else cfg.large_eps})
        torch.manual_seed(derive_seed(cfg.seed, "large-eps"))
        _, big_flags, _ = robust_flags(model, x, y, named_attacks(model, [big]), batch_size=cfg.batch_size)
        acc = accuracy_of(next(iter(big_flags.values())))
        sanity.update(large_eps=big.eps, large_eps_accuracy=acc, large_eps_collapsed=acc <= LARGE_EPS_MAX_ACCURACY)
    robust = {name: accuracy_of(mask) for name, mask in flags.items()}
    worst = accuracy_of(list(flags.values())[-1])
    sanity["accuracy_monotone_in_attacks"] = all(a >= b for a, b in zip([accuracy_of(clean), *robust.values()],
                                                                         robust.values()))
    per_sample = {"clean": clean.tolist(), **{k: v.tolist() for k, v in flags.items()}}
    first = cfg.attacks[0]
    return EvaluationResult(
        dataset=data.info.name, split=data.split, n=n, indices=indices.tolist(),
        threat=ThreatModel(first.norm, first.eps).to_dict(), protocol=[a.describe() for a in attacks],
        clean_accuracy=accuracy_of(clean), robust_accuracy=robust, worst_case_accuracy=worst,
        per_sample=per_sample, seed=cfg.seed, timings=timings, sanity=sanity, model=model_info or {},
    )
