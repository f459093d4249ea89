"""Momentum Iterative Method, MI-FGSM (Dong et al. 2018; thesis Eqs. 2.22-2.23).

``g <- decay * g + grad / ||grad||_1`` (L1 norm per sample, ``g_0 = 0``) and ``x <- project(x + step_size * d(g))``
from ``x_0 = x``, where ``d`` is the threat's steepest-ascent direction: ``sign(g)`` for L-inf (the paper), the
normalised ``g`` for L2 and the SLIDE direction for L1. The step and projection are PGD's, so ``decay=0`` is BIM.
Default step size ``eps / steps`` (Dong et al.: ``alpha = eps / T``); the last iterate is returned, as in the paper.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustlab.attacks.losses import LossFn
from robustlab.attacks.pgd import PGD
from robustlab.attacks.registry import register_attack
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel


@register_attack("mim")
class MIM(PGD):
    """``MIM(model, threat, steps=10, decay=1.0)``: BIM whose steps follow an L1-normalised gradient momentum."""

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        steps: int = 10,
        step_size: float | None = None,
        decay: float = 1.0,
        loss: str | LossFn = "ce",
        eot_samples: int = 1,
    ) -> None:
        default_step = threat.eps / steps if isinstance(steps, int) and steps > 0 else None
        super().__init__(
            model,
            threat,
            steps=steps,
            step_size=step_size if step_size is not None else default_step,
            random_start=False,
            restarts=1,
            loss=loss,
            eot_samples=eot_samples,
            early_stop=False,
        )
        decay = float(decay)
        if not (decay >= 0 and decay < float("inf")):
            raise InputError(f"decay must be a finite number >= 0, got {decay}")
        self.decay = decay

    def __repr__(self) -> str:
        return (
            f"MIM({self.threat}, steps={self.steps}, step_size={self.step_size:.6g}, decay={self.decay:g}, "
            f"loss={self.loss_name!r}, eot={self.eot_samples})"
        )

    def _run(self, x: Tensor, label: Tensor, targeted: bool, *, evaluate: bool) -> tuple[Tensor, Tensor, Tensor]:
        """One momentum run from x; PGD's ``_step`` does the ascent step and the projection."""
        x_adv = x.clone()
        bounds = self._linf_bounds(x)
        momentum = torch.zeros_like(x)
        for _ in range(self.steps):
            grad, _, _ = self.gradient(x_adv, label, targeted=targeted)
            l1 = grad.abs().flatten(1).sum(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
            momentum = momentum.mul_(self.decay).add_(grad / l1)
            x_adv = self._step(x_adv, momentum.clone(), x, bounds)  # _step may overwrite its gradient argument
        if not evaluate:
            return x_adv, x_adv.new_empty(0), label.new_empty(0, dtype=torch.bool)
        obj, fooled = self._evaluate(x_adv, label, targeted)
        return x_adv, obj, fooled
