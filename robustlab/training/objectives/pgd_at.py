"""PGD adversarial training (Madry et al. 2018), FGSM-RS fast AT (Wong et al. 2020) and AWP-AT (Wu et al. 2020).

The thesis's Eq. 5 weighs the adversarial term, ``CE(f(x)) + beta CE(f(x'))``; here the clean term is weighted
instead, ``CE(f(x')) + natural_weight CE(f(x))``: the same loss up to a factor (natural_weight = 1/beta), identical
for the beta = 1 (MNIST) setting.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import Tensor, nn

from robustlab.training.objectives.adversarial import AdversarialObjective, AdversarialParams
from robustlab.training.objectives.awp import AWPParams
from robustlab.training.objectives.base import Metrics, accuracy, register_objective


class PGDATParams(AdversarialParams):
    """``natural_weight`` adds that multiple of clean cross-entropy (0 = Madry; the UDR/ADR MNIST setting uses 1)."""

    natural_weight: float = Field(default=0.0, ge=0)


@register_objective("pgd-at")
class PGDAT(AdversarialObjective):
    """min_theta E[ CE(f(x_adv), y) + natural_weight * CE(f(x), y) ], x_adv from the configured attack (PGD)."""

    Params: ClassVar[type[BaseModel]] = PGDATParams
    params: PGDATParams

    def outer_loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Metrics]:
        logits_adv = model(x_adv)
        loss = F.cross_entropy(logits_adv.float(), y)
        metrics: Metrics = {"adv_acc": accuracy(logits_adv, y)}
        if self.params.natural_weight > 0:
            logits = model(x)
            loss = loss + self.params.natural_weight * F.cross_entropy(logits.float(), y)
            metrics["acc"] = accuracy(logits, y)
        return loss, metrics


@register_objective("fast-at")
class FastAT(PGDAT):
    """FGSM with a uniform random start and step 1.25 eps (set the attack to ``fgsm-rs``); same loss as PGD-AT."""


class AWPATParams(PGDATParams):
    """PGD-AT's parameters with ``awp`` on by default (gamma 0.01, proxy lr 0.01, no warm-up)."""

    awp: AWPParams | None = Field(default_factory=AWPParams)


@register_objective("awp-at")
class AWPAT(PGDAT):
    """AWP-AT (Wu et al. 2020; UDR's WRN setting): PGD-AT (natural_weight 0) with adversarial weight perturbation.

    A convenience name for ``pgd-at`` with ``params: {awp: {gamma: 0.01}}``; the perturbation is computed on the
    same loss, CE(f(x_adv), y), with x_adv crafted at the unperturbed weights.
    """

    Params: ClassVar[type[BaseModel]] = AWPATParams
    params: AWPATParams
