"""ADV-EN (thesis ch.4 A9): PGD adversarial training of an ensemble treated as one model, objective ``adv-en``.

Adversarial examples are crafted against the ensemble output f^en (the log of the mean member softmax). The loss is
``CE(f^en(x_adv), y) + natural_weight CE(f^en(x), y)`` (``loss_on: ensemble``, the paper's "the whole ensemble as one
model"; natural_weight 1 = the thesis's L_AT = L(f(x)) + L(f(x_a))). ``loss_on: members`` is the released code's
loss instead: the sum over members of their own cross-entropies on the same two batches.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import Tensor, nn

from robustlab.models.ensemble import as_ensemble, log_mean_softmax, member_logits
from robustlab.training.objectives.base import Metrics, accuracy, register_objective
from robustlab.training.objectives.pgd_at import PGDAT, PGDATParams


class AdvEnParams(PGDATParams):
    """``natural_weight`` (default 1) on the clean term; ``loss_on``: ensemble output (paper) or members (code)."""

    natural_weight: float = Field(default=1.0, ge=0)
    loss_on: Literal["ensemble", "members"] = "ensemble"


def members_ce(member_z: Tensor, y: Tensor) -> Tensor:
    """Sum over members of each member's mean cross-entropy, from stacked logits (K, N, C)."""
    total = F.cross_entropy(member_z[0].float(), y)
    for z in member_z[1:]:
        total = total + F.cross_entropy(z.float(), y)
    return total


@register_objective("adv-en")
class AdvEn(PGDAT):
    """PGD-AT on the ensemble output; examples crafted against f^en (the attack sees the whole ensemble)."""

    model_kind = "ensemble"

    Params: ClassVar[type[BaseModel]] = AdvEnParams
    params: AdvEnParams

    def outer_loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Metrics]:
        as_ensemble(model, who="objective 'adv-en'")
        if self.params.loss_on == "ensemble":
            return super().outer_loss(model, x, x_adv, y)
        z_adv = member_logits(model, x_adv)
        loss = members_ce(z_adv, y)
        metrics: Metrics = {"adv_acc": accuracy(log_mean_softmax(z_adv.detach()), y)}
        if self.params.natural_weight > 0:
            z = member_logits(model, x)
            loss = loss + self.params.natural_weight * members_ce(z, y)
            metrics["acc"] = accuracy(log_mean_softmax(z.detach()), y)
        return loss, metrics
