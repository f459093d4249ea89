"""Brendel & Bethge (2019), simplified: a minimal-norm attack that walks along the decision boundary towards x.

**This is a simplified variant, not the full B&B optimiser.** The original solves, at every step, a trust-region
quadratic/linear program (per norm) that moves along the boundary while keeping the linearised adversarial constraint.
Here each step does the same thing in closed form:

1. the current best adversarial point ``b`` lies on the boundary (found by binary search on the segment ``x -> b``);
2. the margin ``max_{k != y} z_k - z_y`` (targeted: ``z_t - max_{k != t} z_k``) is linearised at ``b`` with one
   gradient, and ``x`` is projected onto that hyperplane inside the [0, 1] box with the exact minimal-norm projection
   (:func:`robustlab.attacks.fab.project_hyperplane_box`), overshooting by ``overshoot`` relatively;
3. the candidate is ``b + alpha (p - b)``, a boundary-following step of trust-region size ``alpha`` (doubled, up to
   1, after an accepted step, halved after a rejected one); if it is adversarial, a binary search towards ``x`` puts
   it back on the boundary and it replaces ``b`` when it is closer.

Every returned point has been checked adversarial by a forward pass. The start is a PGD point: by default, as in the
thesis's code, foolbox's ``LinfPGD(steps=20, abs_stepsize=eps/2, random_start=True)`` (the same PGD for L2), run at
``init_eps`` (default: the threat's eps; the CCE "B&B (wPGD2)" rows start from 2 eps); or any ``init_attack``.
Samples the start does not fool have no adversarial point and fail. Thesis settings: L-inf, 200 B&B steps (UDR,
Tables 1/4/8) or 100 steps x 3 repeats (CCE), on 1000 test samples.

As a fixed-eps :class:`Attack` it returns the closest adversarial point found when it lies within eps (else ``x``);
samples already within eps stop early. :meth:`BrendelBethge.minimal_perturbation` returns it without the cut.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustlab.attacks.base import Attack, BoundarySearchAttack, input_gradient, predict
from robustlab.attacks.fab import project_hyperplane_box
from robustlab.attacks.losses import LossFn
from robustlab.attacks.pgd import PGD, _check_count, attack_success
from robustlab.attacks.registry import register_attack
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel, lp_norm
from robustlab.core.validation import check_positive


def _expand(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample (N,) tensor to broadcast over (N, ...)."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def _pair_gap(other: Tensor) -> LossFn:
    """The loss ``z_other - z_y`` per sample: positive once class ``other`` beats the label."""

    def gap(logits: Tensor, label: Tensor) -> Tensor:
        logits = logits.float()
        return (logits.gather(1, other[:, None]) - logits.gather(1, label[:, None])).squeeze(1)

    return gap


@register_attack("bb")
class BrendelBethge(BoundarySearchAttack):
    """``BrendelBethge(model, threat, steps=200)``: PGD start, then boundary-following steps that shrink the norm.

    A simplified B&B (see the module docstring): closed-form projections onto the linearised boundary instead of the
    original trust-region solver. L-inf and L2.
    """

    norms = ("linf", "l2")

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        steps: int = 200,
        init_attack: Attack | None = None,
        init_eps: float | None = None,
        binary_steps: int = 10,
        overshoot: float = 1e-3,
        n_classes: int = 3,
    ) -> None:
        super().__init__(model, threat, loss="cw")
        if init_attack is not None and init_eps is not None:
            raise InputError("pass either init_attack or init_eps, not both")
        self.steps = _check_count(steps, "steps")
        self.binary_steps = _check_count(binary_steps, "binary_steps")
        self.n_classes = _check_count(n_classes, "n_classes")
        check_positive(overshoot, "overshoot", allow_zero=True)
        self.overshoot = float(overshoot)
        if init_attack is None:
            eps = threat.eps if init_eps is None else float(init_eps)
            eps = min(eps, 1.0) if threat.norm == "linf" else eps
            init_attack = PGD(model, ThreatModel(threat.norm, eps), steps=20, step_size=eps / 2, early_stop=True)
        self.init_attack = init_attack

    def __repr__(self) -> str:
        return f"BrendelBethge({self.threat}, steps={self.steps}, init={self.init_attack!r})"

    def _search(self, x: Tensor, y: Tensor, target: Tensor | None, stop_at: float | None) -> tuple[Tensor, Tensor]:
        """Best adversarial point and its norm per sample (inf where none); samples within ``stop_at`` stop early."""
        targeted = target is not None
        label = target if targeted else y
        best_norm = x.new_full((x.shape[0],), float("inf"))
        best = x.clone()
        clean = self._fooled(x, label, targeted)
        best_norm[clean] = 0.0
        start = self.init_attack(x, y, target).to(x.dtype)
        ok = (~clean & self._fooled(start, label, targeted)).nonzero().squeeze(1)
        if ok.numel() > 0:
            best[ok] = self._boundary(x[ok], start[ok], label[ok], targeted)
            best_norm[ok] = lp_norm(best[ok] - x[ok], self.threat.norm)
        alpha = x.new_ones(x.shape[0])
        for _ in range(self.steps):
            running = torch.isfinite(best_norm) & (best_norm > 0)
            if stop_at is not None:
                running &= best_norm > stop_at
            idx = running.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            self._step(x, label, targeted, idx, best, best_norm, alpha)
        return best, best_norm

    def _step(
        self, x: Tensor, label: Tensor, targeted: bool, idx: Tensor, best: Tensor, best_norm: Tensor, alpha: Tensor
    ) -> None:
        """One boundary-following step on the rows ``idx``, updating ``best``, ``best_norm`` and ``alpha`` in place."""
        xi, b, lab = x[idx], best[idx], label[idx]
        cand = b + _expand(alpha[idx], b) * (self._tangent_target(xi, b, lab, targeted) - b)
        succ = self._fooled(cand, lab, targeted)
        accepted = torch.zeros_like(succ)
        s = succ.nonzero().squeeze(1)
        if s.numel() > 0:
            new = self._boundary(xi[s], cand[s], lab[s], targeted)
            new_norm = lp_norm(new - xi[s], self.threat.norm)
            closer = new_norm < best_norm[idx[s]]
            rows = idx[s[closer]]
            best[rows], best_norm[rows] = new[closer], new_norm[closer]
            accepted[s[closer]] = True
        alpha[idx] = torch.where(accepted, (alpha[idx] * 2).clamp_max(1.0), alpha[idx] / 2)

    def _tangent_target(self, x: Tensor, b: Tensor, label: Tensor, targeted: bool) -> Tensor:
        """The box-constrained minimal-norm projection of ``x`` onto a linearised boundary at ``b``.

        Untargeted, the pairwise boundaries ``z_k = z_y`` of the ``n_classes`` highest other classes at ``b`` are
        linearised and the nearest projection wins (with one class this is the plain margin); targeted, the margin.
        """
        logits = predict(self.model, b)
        if targeted:
            others = [None]
        else:
            ranked = logits.scatter(1, label[:, None], float("-inf")).argsort(dim=1, descending=True)
            others = [ranked[:, r] for r in range(min(self.n_classes, logits.shape[1] - 1))]
        best_d, best_size = torch.zeros_like(x), x.new_full((x.shape[0],), float("inf"))
        for k in others:
            d = self._project_onto_linearisation(x, b, label, targeted, k)
            size = lp_norm(d, self.threat.norm)
            closer = size < best_size
            best_d, best_size = torch.where(_expand(closer, x), d, best_d), torch.where(closer, size, best_size)
        return (x + best_d * (1 + self.overshoot)).clamp(0.0, 1.0)

    def _project_onto_linearisation(
        self, x: Tensor, b: Tensor, label: Tensor, targeted: bool, other: Tensor | None
    ) -> Tensor:
        """Step ``d`` from ``x`` onto the hyperplane where the linearisation at ``b`` of the objective is zero.

        The objective is positive on the adversarial side: ``z_other - z_y``, or the margin when ``other`` is None.
        """
        if other is None:
            grad, obj, _ = self.gradient(b, label, targeted=targeted)
        else:
            grad, obj, _ = input_gradient(self.model, b, label, _pair_gap(other), eot_samples=self.eot_samples)
        grad = grad.flatten(1)
        c = (grad * (b - x).flatten(1)).sum(1) - obj.to(x.dtype)  # x + d on the plane: grad . d = c
        return project_hyperplane_box(x.flatten(1), grad, c, self.threat.norm).view_as(x)

    def _boundary(self, x: Tensor, x_adv: Tensor, label: Tensor, targeted: bool) -> Tensor:
        """Binary search on the segment ``x -> x_adv`` (adversarial end) for the adversarial point nearest ``x``."""
        lo, hi = x.new_zeros(x.shape[0]), x.new_ones(x.shape[0])
        for _ in range(self.binary_steps):
            mid = (lo + hi) / 2
            fooled = self._fooled(x + _expand(mid, x) * (x_adv - x), label, targeted)
            hi, lo = torch.where(fooled, mid, hi), torch.where(fooled, lo, mid)
        out = x + _expand(hi, x) * (x_adv - x)
        sure = self._fooled(out, label, targeted)  # rounding could undo a tie: fall back to the checked end
        return torch.where(_expand(sure, x), out, x_adv)

    def _fooled(self, x: Tensor, label: Tensor, targeted: bool) -> Tensor:
        """Per-sample success of the point ``x``."""
        return attack_success(predict(self.model, x), label, targeted)
