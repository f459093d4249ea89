"""TRADES (Zhang et al. 2019): clean cross-entropy plus beta times KL(p(x) || p(x_adv)), x_adv maximising that KL."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from robustlab.training.objectives.adversarial import AdversarialObjective, AdversarialParams
from robustlab.training.objectives.base import Metrics, accuracy, register_objective
from robustlab.training.objectives.losses import kl_per_sample


class TRADESParams(AdversarialParams):
    """``beta`` weighs the robustness (KL) term: 6 on CIFAR-10, 1 in the UDR MNIST setting."""

    beta: float = Field(default=6.0, ge=0)


@register_objective("trades")
class TRADES(AdversarialObjective):
    """min_theta E[ CE(f(x), y) + beta * KL(p(x) || p(x_adv)) ]; the attack ascends the same KL (clean side fixed).

    Gradients flow through both sides of the KL in the outer loss, as in the official code.
    """

    Params = TRADESParams
    attack_loss = "kl"

    def outer_loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Metrics]:
        logits, logits_adv = model(x), model(x_adv)
        natural = F.cross_entropy(logits.float(), y)
        robust = kl_per_sample(logits, logits_adv).mean()
        loss = natural + self.params.beta * robust
        return loss, {"acc": accuracy(logits, y), "adv_acc": accuracy(logits_adv, y), "kl": float(robust.detach())}
