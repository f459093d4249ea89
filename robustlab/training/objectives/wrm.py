"""WRM (Sinha, Namkoong & Duchi 2018): distributionally robust training with a fixed Lagrange multiplier gamma.

Inner maximisation, per sample, by gradient ascent from x (no random start, no ball projection):
``x' = argmax CE(f(x'), y) - gamma * c(x', x)``, with ``c = ||x' - x||_2^2`` (``cost: squared``, the default:
Sinha et al.'s paper and TF code, whose ascent on ``eps_WRM * CE - 1/2 ||x' - x||^2`` with ``eps_WRM = 0.5 / gamma``
is the same problem; the thesis's WRM gammas, 0.05 on MNIST and 0.5 on CIFAR with eps_WRM = 0.5 / gamma, use this
convention) or ``c = 1/2 ||x' - x||_2^2`` (``cost: half_squared``: the same problem at twice the gamma). Outer loss
``CE(f(x'), y)``.

``steps`` counts every ascent update. The default, 16, is the reference's: ``attacks_tf.wrm`` (duchi-lab/
certifiable-distributional-robustness) takes an initial step ``x + eps_WRM grad CE`` and then ``steps=15`` steps of
``1/sqrt(t + 2)``, t = 0..14. The step size is ``step_size`` if set (it must satisfy ``step_size * k * gamma < 2``,
k = 2 or 1 from the cost, or the quadratic term diverges), else that schedule written for our objective,
``1 / (k gamma sqrt(t + 1))`` for update t = 0, 1, ...: update 0 from x is the reference's initial step and update
t >= 1 its step t - 1.

Deliberate differences from the reference code: every iterate is clipped to [0, 1] (the TF code leaves the box;
inputs outside it are not images), and the CE uses the hard labels (the reference trains on 0.1-smoothed labels).
The ``attack`` section of the config is only for validation; steps and step size come from the parameters here.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import Tensor, nn

from robustlab.attacks.base import attack_mode, input_gradient
from robustlab.core.errors import ConfigError
from robustlab.training.objectives.adversarial import AdversarialObjective, AdversarialParams
from robustlab.training.objectives.base import Metrics, ObjectiveConfig, accuracy, register_objective, unwrap


def _per_sample_ce(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


class WRMParams(AdversarialParams):
    """``gamma`` (> 0): the fixed Lagrange multiplier (larger = closer to x); ``steps``: ascent updates (16 = the
    reference's initial step + 15); ``step_size``: constant step, or None for the reference schedule; ``cost``: see
    the module doc."""

    gamma: float = Field(gt=0)
    steps: int = Field(default=16, ge=1)
    step_size: float | None = Field(default=None, gt=0)
    cost: Literal["half_squared", "squared"] = "squared"


@register_objective("wrm")
class WRM(AdversarialObjective):
    """min_theta E[ CE(f(x*), y) ], x* = argmax_x' CE(f(x'), y) - gamma c(x', x) by per-sample gradient ascent."""

    Params: ClassVar[type[BaseModel]] = WRMParams
    params: WRMParams

    def __init__(self, cfg: ObjectiveConfig) -> None:
        super().__init__(cfg)
        p = self.params
        if p.udr is not None:
            raise ConfigError("objective 'wrm' has its own inner maximisation (fixed gamma); the 'udr' option does "
                              "not apply to it")
        if cfg.eps_warmup_epochs > 0:
            raise ConfigError("objective 'wrm' has no eps ball to warm up (gamma is fixed); remove eps_warmup_epochs")
        if p.step_size is not None and p.step_size * self.curvature >= 2:
            raise ConfigError(f"wrm: step_size * {self.curvature / p.gamma:g} * gamma = "
                              f"{p.step_size * self.curvature:g} must be < 2 or the ascent diverges; "
                              f"use step_size < {2 / self.curvature:g} or leave it unset for the reference schedule")

    @property
    def curvature(self) -> float:
        """Second derivative of the penalty gamma * c along any direction: gamma (half_squared) or 2 gamma."""
        return self.params.gamma * (2.0 if self.params.cost == "squared" else 1.0)

    @property
    def eps_wrm(self) -> float:
        """Sinha et al.'s ``eps = 0.5 / gamma`` (their code's multiplier of CE), for logging and comparison."""
        return 0.5 / self.params.gamma

    def step_size_at(self, t: int) -> float:
        """The ascent step of iteration ``t`` (0-based)."""
        if self.params.step_size is not None:
            return self.params.step_size
        return 1.0 / (self.curvature * math.sqrt(t + 1))

    def craft(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Gradient ascent on ``CE(f(x'), y) - gamma c(x', x)`` from x, clipped to [0, 1] after every step."""
        bare = unwrap(model)
        x = x.detach()
        x_adv = x.clone()
        with attack_mode(bare):
            for t in range(self.params.steps):
                grad, _, _ = input_gradient(bare, x_adv, y, _per_sample_ce)
                ascent = grad.to(x.dtype) - self.curvature * (x_adv - x)
                x_adv = (x_adv + self.step_size_at(t) * ascent).clamp(0.0, 1.0)
        return x_adv.detach()

    def outer_loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Metrics]:
        logits_adv = model(x_adv)
        loss = F.cross_entropy(logits_adv.float(), y)
        dist = (x_adv - x).flatten(1).norm(dim=1)
        return loss, {"adv_acc": accuracy(logits_adv, y), "wrm_l2": float(dist.mean()),
                      "wrm_linf": float((x_adv - x).abs().flatten(1).amax(dim=1).mean())}
