"""R+FGSM (Tramer et al. 2018; thesis Eq. 2.19), L-inf only.

``x' = x + alpha * sign(N(0, I))`` (clipped to the box), then ``x_adv = x' + (eps - alpha) * sign(grad L(x'))``
projected onto the ball and the box. The spec leaves ``alpha`` open; the default is Tramer et al.'s ``eps / 2``.
"""

from __future__ import annotations

from torch import Tensor, nn

from robustlab.attacks.base import Attack
from robustlab.attacks.losses import LossFn
from robustlab.attacks.registry import register_attack
from robustlab.core.errors import InputError
from robustlab.core.rng import sharded_rand
from robustlab.core.threat import ThreatModel


@register_attack("rfgsm")
class RFGSM(Attack):
    """``RFGSM(model, threat, alpha=eps/2)``: a random sign step of ``alpha``, then FGSM with ``eps - alpha``."""

    norms = ("linf",)  # R+FGSM is defined for L-inf only

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        alpha: float | None = None,
        loss: str | LossFn = "ce",
        eot_samples: int = 1,
    ) -> None:
        super().__init__(model, threat, loss=loss, eot_samples=eot_samples)
        alpha = threat.eps / 2 if alpha is None else float(alpha)
        if not (0.0 <= alpha < threat.eps):
            raise InputError(f"alpha must lie in [0, eps) = [0, {threat.eps:g}), got {alpha}")
        self.alpha = alpha

    def __repr__(self) -> str:
        return f"RFGSM({self.threat}, alpha={self.alpha:.6g}, loss={self.loss_name!r}, eot={self.eot_samples})"

    def random_step(self, x: Tensor) -> Tensor:
        """The first step ``x + alpha * sign(N(0, I))`` clipped to the box: alpha away per coordinate inside it."""
        noise = sharded_rand(x.shape, dtype=x.dtype, device=x.device, normal=True)
        return (x + self.alpha * noise.sign()).clamp(0.0, 1.0)

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Random step, then one gradient-sign step of ``eps - alpha`` from there, projected."""
        x1 = self.random_step(x)
        targeted = target is not None
        grad, _, _ = self.gradient(x1, target if target is not None else y, targeted=targeted)
        return self.threat.project(x1 + (self.threat.eps - self.alpha) * grad.sign(), x)
