"""Carlini-Wagner L2 (Carlini & Wagner 2017) and the base class for minimum-norm attacks.

CW-L2 optimises ``w`` with ``x_adv = (tanh(w) + 1) / 2`` (so the box holds by construction) and minimises
``||x_adv - x||_2^2 + c * max(z_y - max_{j != y} z_j, -kappa)`` (targeted: ``max(max_{j != t} z_j - z_t, -kappa)``)
with Adam. An outer per-sample binary search over ``c`` multiplies ``c`` by 10 until a first success and then
bisects between the largest failing and the smallest succeeding ``c``; the smallest-norm successful iterate seen in
any run is kept. The inner run aborts early when the total loss stops decreasing (checked every ``steps // 10``).
The default budget is the original's: up to 10,000 Adam steps per run, so early abort ends most runs long before;
``cw-l2-fast`` (:class:`CWL2Fast`) is the same attack with 1,000 steps, ten times cheaper on points that converge
slowly.
The input gradient of the margin term comes from :func:`input_gradient` (EoT included) and is chained through tanh.

Fixed-eps form (``attack(x, y)``): the minimal point if it lies in the threat's ball, otherwise that point projected
onto the ball (and box), so a returned point is always inside the threat model and counts only if the model
misclassifies it there. :meth:`MinNormAttack.minimal_perturbation` gives the uncut point and its success flag.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from robustlab.attacks.base import Attack, attack_mode, input_gradient, predict
from robustlab.attacks.losses import LossFn, cw_margin
from robustlab.attacks.pgd import _check_count
from robustlab.attacks.registry import register_attack
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel
from robustlab.core.validation import check_positive

ATANH_SHRINK = 1 - 1e-6  # keeps atanh finite for pixels at exactly 0 or 1
C_UPPER_UNSET = 1e10  # "no successful c yet" in the binary search (Carlini & Wagner's sentinel)


class MinNormAttack(Attack):
    """An attack that finds a minimal adversarial perturbation; as a fixed-eps attack it projects onto the ball."""

    def minimal_perturbation(self, x: Tensor, y: Tensor, target: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(x_adv, success)`` without the eps cut: x_adv is x where no adversarial point was found."""
        unbounded = copy.copy(self)
        unbounded.threat = ThreatModel(self.threat.norm, _box_diameter(x, self.threat.norm))
        x_adv = Attack.__call__(unbounded, x, y, target)  # input checks, attack mode and the box check
        with attack_mode(self.model):
            pred = predict(self.model, x_adv).argmax(1)
        success = pred == target.to(pred.device) if target is not None else pred != y.to(pred.device)
        return torch.where(_rows(success, x), x_adv, x), success

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """The minimal point where it lies inside the ball, else its projection onto the ball and the box."""
        x_min = self.minimize(x, y, target)
        inside = self.threat.norm_of(x_min - x) <= self.threat.eps
        return torch.where(_rows(inside, x), x_min, self.threat.project(x_min, x))

    def minimize(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Smallest adversarial point found per sample (x itself where none was found); inputs already validated."""
        raise NotImplementedError


def _box_diameter(x: Tensor, norm: str) -> float:
    """A radius whose ball holds the whole [0, 1] box around any x, so projection onto it changes nothing."""
    d = x[0].numel()
    return {"linf": 1.0, "l2": math.sqrt(d) + 1.0, "l1": d + 1.0}[norm]


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample mask to broadcast over a batch like ``like``."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


def _cw_objective(kappa: float, targeted: bool) -> LossFn:
    """The negated CW margin term ``-max(margin, -kappa)`` as an ascent loss of (logits, label)."""

    def objective(logits: Tensor, label: Tensor) -> Tensor:
        gap = cw_margin(logits, label)  # max_{j != label} z_j - z_label
        return (-gap if targeted else gap).clamp(max=kappa)

    return objective


ORIGINAL_STEPS = 10000  # Carlini & Wagner's MAX_ITERATIONS, with early abort
FAST_STEPS = 1000


@register_attack("cw-l2")
class CWL2(MinNormAttack):
    """``CWL2(model, ThreatModel("l2", eps), steps=10000, binary_search_steps=9)``: Carlini-Wagner L2 with Adam.

    ``steps`` is the most Adam steps per binary-search run (the original 10,000); with ``abort_early`` a run stops
    at the first check (every ``steps // 10``) where the loss fell by less than 0.01%. ``steps=1000`` (``cw-l2-fast``)
    is the quicker setting earlier versions used.
    """

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        steps: int = ORIGINAL_STEPS,
        binary_search_steps: int = 9,
        initial_const: float = 1e-3,
        confidence: float = 0.0,
        lr: float = 0.01,
        abort_early: bool = True,
        eot_samples: int = 1,
    ) -> None:
        super().__init__(model, threat, loss="cw", eot_samples=eot_samples)
        if threat.norm != "l2":
            raise InputError(f"CW-L2 needs an L2 threat model, got {threat}")
        self.steps = _check_count(steps, "steps")
        self.binary_search_steps = _check_count(binary_search_steps, "binary_search_steps")
        check_positive(initial_const, "initial_const")
        check_positive(lr, "lr")
        check_positive(confidence, "confidence", allow_zero=True)
        self.initial_const, self.confidence, self.lr = float(initial_const), float(confidence), float(lr)
        self.abort_early = bool(abort_early)

    def __repr__(self) -> str:
        return (
            f"CWL2({self.threat}, steps={self.steps}, binary_search_steps={self.binary_search_steps}, "
            f"initial_const={self.initial_const:g}, confidence={self.confidence:g}, lr={self.lr:g})"
        )

    def minimize(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Binary search over c per sample around Adam runs; keep the smallest-norm success of all runs."""
        targeted = target is not None
        label = target if target is not None else y
        n = x.shape[0]
        const = x.new_full((n,), self.initial_const)
        lower, upper = torch.zeros_like(const), torch.full_like(const, C_UPPER_UNSET)
        best = x.clone()
        best_dist = x.new_full((n,), float("inf"))
        for _ in range(self.binary_search_steps):
            succeeded = self._run(x, label, targeted, const, best, best_dist)
            upper = torch.where(succeeded, torch.minimum(upper, const), upper)
            lower = torch.where(succeeded, lower, torch.maximum(lower, const))
            const = torch.where(upper < C_UPPER_UNSET, (lower + upper) / 2, const * 10)
        return best

    def _run(self, x: Tensor, label: Tensor, targeted: bool, const: Tensor, best: Tensor, best_dist: Tensor) -> Tensor:
        """One Adam run at fixed per-sample c; updates ``best``/``best_dist`` in place; returns who succeeded."""
        objective = _cw_objective(self.confidence, targeted)
        w = torch.atanh((2 * x - 1) * ATANH_SHRINK).detach().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=self.lr)
        succeeded = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        check_every, prev = max(1, self.steps // 10), float("inf")
        for step in range(self.steps):
            tanh_w = torch.tanh(w.detach())
            x_adv = ((tanh_w + 1) / 2).clamp(0.0, 1.0)
            grad_obj, obj, logits = input_gradient(self.model, x_adv, label, objective, eot_samples=self.eot_samples)
            dist = (x_adv - x).flatten(1).pow(2).sum(1)
            gap = cw_margin(logits, label)
            success = (-gap if targeted else gap) > self.confidence
            improved = success & (dist < best_dist)
            best[improved] = x_adv[improved]
            best_dist[improved] = dist[improved]
            succeeded |= success
            total = float((dist - const * obj).sum())
            if self.abort_early and step % check_every == 0:
                if total > prev * 0.9999:
                    break
                prev = total
            grad_x = 2 * (x_adv - x) - _rows(const, x) * grad_obj  # d/dx of dist + c * f, with f = -obj
            w.grad = grad_x * (1 - tanh_w.pow(2)) / 2
            opt.step()
        return succeeded


@register_attack("cw-l2-fast")
class CWL2Fast(CWL2):
    """CW-L2 with at most 1,000 Adam steps per run (early abort every 100): a faster, slightly weaker setting."""

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        steps: int = FAST_STEPS,
        binary_search_steps: int = 9,
        initial_const: float = 1e-3,
        confidence: float = 0.0,
        lr: float = 0.01,
        abort_early: bool = True,
        eot_samples: int = 1,
    ) -> None:
        super().__init__(
            model, threat, steps=steps, binary_search_steps=binary_search_steps, initial_const=initial_const,
            confidence=confidence, lr=lr, abort_early=abort_early, eot_samples=eot_samples,
        )
