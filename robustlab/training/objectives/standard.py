"""Standard (non-robust) training: cross-entropy on clean inputs."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.training.objectives.base import Metrics, Objective, accuracy, register_objective


@register_objective("standard")
class Standard(Objective):
    """Empirical risk minimisation with cross-entropy."""

    needs_attack = False

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Metrics]:
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        return loss, {"loss": float(loss.detach()), "acc": accuracy(logits, y)}
