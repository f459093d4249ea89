"""DeepFool (Moosavi-Dezfooli et al. 2016), multi-class, L2 and L-inf.

Each step linearises ``f_k = z_k - z_y`` for the ``n_candidates`` classes with the highest clean logits, picks the
class whose linearised boundary is closest, ``l_k = |f_k| / ||grad f_k||_q`` (q the dual norm: 2 for L2, 1 for
L-inf), and adds the step that reaches it: ``r = (|f_k| + 1e-4) / ||w||_2^2 * w`` (L2) or
``(|f_k| + 1e-4) / ||w||_1 * sign(w)`` (L-inf), ``w = grad f_k``. The iterate is
``clip(x + (1 + overshoot) * r_total, 0, 1)``; a sample stops once misclassified. On a linear model one step lands
at the exact minimal perturbation times ``1 + overshoot``. The per-class gradients come from
:func:`input_gradient` (EoT included). Fixed-eps and ``minimal_perturbation`` forms: see :class:`MinNormAttack`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from robustlab.attacks.base import input_gradient, predict
from robustlab.attacks.cw import MinNormAttack, _rows
from robustlab.attacks.multitarget import target_order
from robustlab.attacks.pgd import _check_count
from robustlab.attacks.registry import register_attack
from robustlab.core.threat import ThreatModel
from robustlab.core.validation import check_positive

DEEPFOOL_STEP_PAD = 1e-4  # Moosavi-Dezfooli et al.'s reference code adds this to |f_k| to cross the boundary


def _logit_gap(y: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """Loss ``z_k - z_y`` of (logits, k) for a fixed batch of true labels y, for :func:`input_gradient`."""

    def gap(logits: Tensor, k: Tensor) -> Tensor:
        logits = logits.float()
        return logits.gather(1, k[:, None]).squeeze(1) - logits.gather(1, y[:, None]).squeeze(1)

    return gap


@register_attack("deepfool")
class DeepFool(MinNormAttack):
    """``DeepFool(model, ThreatModel("l2" or "linf", eps), steps=50, overshoot=0.02, n_candidates=10)``; untargeted."""

    supports_targeted = False
    norms = ("linf", "l2")

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        steps: int = 50,
        overshoot: float = 0.02,
        n_candidates: int = 10,
        eot_samples: int = 1,
    ) -> None:
        super().__init__(model, threat, loss="cw", eot_samples=eot_samples)
        self.steps = _check_count(steps, "steps")
        self.n_candidates = _check_count(n_candidates, "n_candidates")
        check_positive(overshoot, "overshoot", allow_zero=True)
        self.overshoot = float(overshoot)

    def __repr__(self) -> str:
        return (
            f"DeepFool({self.threat}, steps={self.steps}, overshoot={self.overshoot:g}, "
            f"n_candidates={self.n_candidates})"
        )

    def minimize(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """DeepFool iterations on the not-yet-fooled samples; x itself where ``steps`` were not enough."""
        candidates = target_order(predict(self.model, x), y, self.n_candidates)
        r_total = torch.zeros_like(x)
        x_adv = x.clone()
        active = predict(self.model, x).argmax(1) == y
        for _ in range(self.steps):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            r_total[idx] += self._step(x_adv[idx], y[idx], candidates[idx])
            x_adv[idx] = (x[idx] + (1 + self.overshoot) * r_total[idx]).clamp(0.0, 1.0)
            active[idx] = predict(self.model, x_adv[idx]).argmax(1) == y[idx]
        return torch.where(_rows(active, x), x, x_adv)

    def _step(self, x_adv: Tensor, y: Tensor, candidates: Tensor) -> Tensor:
        """The step onto the closest linearised boundary among the candidate classes."""
        gap = _logit_gap(y)
        dual = 1 if self.threat.norm == "linf" else 2
        best_dist = x_adv.new_full((x_adv.shape[0],), float("inf"))
        best_step = torch.zeros_like(x_adv)
        for i in range(candidates.shape[1]):
            w, f, _ = input_gradient(self.model, x_adv, candidates[:, i], gap, eot_samples=self.eot_samples)
            w_norm = w.flatten(1).norm(p=dual, dim=1).clamp_min(1e-12)
            dist = f.abs() / w_norm
            scale = (f.abs() + DEEPFOOL_STEP_PAD) / (w_norm if dual == 1 else w_norm.pow(2))
            step = _rows(scale, x_adv) * (w.sign() if dual == 1 else w)
            closer = dist < best_dist
            best_dist = torch.where(closer, dist, best_dist)
            best_step = torch.where(_rows(closer, x_adv), step, best_step)
        return best_step
