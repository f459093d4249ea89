"""PGD adversarial training (Madry et al. 2018) and FGSM-RS fast AT (Wong et al. 2020)."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from robustlab.training.objectives.base import Metrics, Objective, accuracy, register_objective


class AdversarialParams(BaseModel):
    """``natural_weight`` adds that multiple of clean cross-entropy (0 = Madry; ADR/ASCL use 1, an unweighted sum)."""

    model_config = ConfigDict(extra="forbid")
    natural_weight: float = Field(default=0.0, ge=0)


@register_objective("pgd-at")
class PGDAT(Objective):
    """min_theta E[ CE(f(x_adv), y) + natural_weight * CE(f(x), y) ], x_adv from the configured attack (PGD)."""

    Params = AdversarialParams

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Metrics]:
        x_adv = self.attack(model)(x, y)
        logits_adv = model(x_adv)
        loss = F.cross_entropy(logits_adv.float(), y)
        metrics: Metrics = {"adv_acc": accuracy(logits_adv, y)}
        if self.params.natural_weight > 0:
            logits = model(x)
            nat = F.cross_entropy(logits.float(), y)
            loss = loss + self.params.natural_weight * nat
            metrics["acc"] = accuracy(logits, y)
        metrics["loss"] = float(loss.detach())
        return loss, metrics


@register_objective("fast-at")
class FastAT(PGDAT):
    """FGSM with a uniform random start and step 1.25 eps (set the attack to ``fgsm-rs``); same loss as PGD-AT."""
