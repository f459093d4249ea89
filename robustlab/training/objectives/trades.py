"""TRADES (Zhang et al. 2019): clean cross-entropy plus beta times KL(p(x) || p(x_adv)), x_adv maximising that KL.

The inner attack starts, by default, from the configured attack's uniform random start (the thesis's pseudo-code,
U(-eps, eps)); ``start: normal`` uses the official TRADES (and MART) code's start ``x + 0.001 N(0, I)`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import Tensor, nn

from robustlab.core.errors import ConfigError
from robustlab.core.rng import sharded_rand
from robustlab.core.threat import ThreatModel
from robustlab.training.objectives.adversarial import AdversarialObjective, AdversarialParams
from robustlab.training.objectives.base import Metrics, ObjectiveConfig, accuracy, register_objective
from robustlab.training.objectives.losses import kl_per_sample

Start = Literal["uniform", "normal"]
NORMAL_START_STD = 0.001  # TRADES' and MART's official code: x_adv = x + 0.001 * randn


@dataclass(frozen=True)
class GaussianStartThreat(ThreatModel):
    """The same ball, but its random start is the official TRADES one, ``x + std * N(0, I)`` (the first attack
    step projects it into the ball and the box, as the official code's first step does)."""

    std: float = NORMAL_START_STD

    def random_start(self, x: Tensor) -> Tensor:
        return x + self.std * sharded_rand(x.shape, dtype=x.dtype, device=x.device, normal=True)


class OfficialStartParams(AdversarialParams):
    """The options of :class:`OfficialStart`: ``start`` ("uniform", the thesis's, by default; "normal" = official
    TRADES and MART code)."""

    start: Start = "uniform"


class OfficialStart(AdversarialObjective):
    """Adds the ``start`` option (params field): "normal" crafts from ``x + 0.001 N(0, I)`` as TRADES' and MART's
    official code do; "uniform" keeps the attack's own start. UDR's soft-ball attack has its own start."""

    params: OfficialStartParams

    def __init__(self, cfg: ObjectiveConfig) -> None:
        super().__init__(cfg)
        if self.params.start == "normal" and self.params.udr is not None:
            raise ConfigError(f"objective {self.name!r}: start 'normal' applies to the hard-ball attack only; "
                              "remove it or the 'udr' option (valid starts: 'uniform', 'normal')")

    def craft(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if self.params.start != "normal":
            return super().craft(model, x, y)
        attack = self.attack(model, loss=self.attack_loss_fn(model, x), random_start=True)
        attack.threat = GaussianStartThreat(attack.threat.norm, attack.threat.eps)
        return attack(x, y)


class TRADESParams(OfficialStartParams):
    """``beta`` weighs the robustness (KL) term: 6 on CIFAR-10, 1 in the UDR MNIST setting; ``start`` as in the
    module doc ("uniform", the thesis's, by default; "normal" = official TRADES code)."""

    beta: float = Field(default=6.0, ge=0)


@register_objective("trades")
class TRADES(OfficialStart):
    """min_theta E[ CE(f(x), y) + beta * KL(p(x) || p(x_adv)) ]; the attack ascends the same KL (clean side fixed).

    Gradients flow through both sides of the KL in the outer loss, as in the official code.
    """

    Params: ClassVar[type[BaseModel]] = TRADESParams
    params: TRADESParams
    attack_loss = "kl"

    def outer_loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Metrics]:
        logits, logits_adv = model(x), model(x_adv)
        natural = F.cross_entropy(logits.float(), y)
        robust = kl_per_sample(logits, logits_adv).mean()
        loss = natural + self.params.beta * robust
        return loss, {"acc": accuracy(logits, y), "adv_acc": accuracy(logits_adv, y), "kl": float(robust.detach())}
