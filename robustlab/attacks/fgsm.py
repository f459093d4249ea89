"""FGSM (Goodfellow et al. 2015) and FGSM-RS (Wong et al. 2020, "Fast is better than free").

Plain FGSM takes one step of size eps along the threat's steepest-ascent direction (the gradient sign for L-inf,
the normalised gradient for L2, the sparse SLIDE direction for L1). FGSM-RS starts from a uniformly random point
of the ball and takes one step of ``step_size`` (default 1.25 eps, Wong et al.'s alpha), then projects back.
"""

from __future__ import annotations

from torch import Tensor, nn

from robustlab.attacks.base import Attack
from robustlab.attacks.losses import LossFn
from robustlab.attacks.registry import register_attack
from robustlab.core.threat import ThreatModel
from robustlab.core.validation import check_positive

FGSM_RS_STEP = 1.25  # Wong et al. (2020): alpha = 1.25 eps with a uniform random start


@register_attack("fgsm")
class FGSM(Attack):
    """One gradient step: ``FGSM(model, threat)``; ``random_start=True`` gives FGSM-RS (fast adversarial training)."""

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        loss: str | LossFn = "ce",
        random_start: bool = False,
        step_size: float | None = None,
        eot_samples: int = 1,
    ) -> None:
        super().__init__(model, threat, loss=loss, eot_samples=eot_samples)
        if step_size is not None:
            check_positive(step_size, "step_size")
        self.random_start = bool(random_start)
        default = FGSM_RS_STEP * threat.eps if self.random_start else threat.eps
        self.step_size = float(step_size) if step_size is not None else default

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Start at x (or a random point of the ball), step once along the steepest-ascent direction, project."""
        x0 = self.threat.random_start(x) if self.random_start else x
        targeted = target is not None
        grad, _, _ = self.gradient(x0, target if target is not None else y, targeted=targeted)
        step = self.threat.steepest_ascent(grad).mul_(self.step_size)
        return self.threat.project(x0 + step, x)

    def __repr__(self) -> str:
        name = "FGSM-RS" if self.random_start else "FGSM"
        return f"{name}({self.threat}, step_size={self.step_size:.6g}, loss={self.loss_name!r}, eot={self.eot_samples})"


@register_attack("fgsm-rs")
class FGSMRS(FGSM):
    """FGSM-RS (Wong et al. 2020): FGSM with a uniform random start and step 1.25 eps; the registry's "fgsm-rs"."""

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        loss: str | LossFn = "ce",
        step_size: float | None = None,
        eot_samples: int = 1,
    ) -> None:
        super().__init__(model, threat, loss=loss, random_start=True, step_size=step_size, eot_samples=eot_samples)
