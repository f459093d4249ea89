"""Brendel & Bethge (2019), "Accurate, reliable and fast robustness evaluation": the boundary-following attack.

Follows foolbox 3.3.4's ``BrendelBethgeAttack`` (the reference implementation), for L2 and L-inf:

1. **Start.** An adversarial point per sample: by default foolbox's ``LinearSearchBlendedUniformNoiseAttack`` (up to
   ``init_directions`` uniform-noise images until one is misclassified, then the smallest blend ``(1 - a) x + a n`` on
   a grid of ``init_steps`` that is adversarial), or a PGD-20 point at ``init_eps`` (the thesis's start: foolbox's
   ``LinfPGD(steps=20, abs_stepsize=eps/2)``, the CCE "wPGD2" rows at 2 eps), or any ``init_attack``. Samples without
   an adversarial start fail.
2. **Boundary.** ``binary_search_steps`` bisections between ``x`` and the start (L2 on the segment, L-inf on the
   L-inf ball around ``x`` clipping the start's perturbation, as foolbox's ``mid_points``).
3. **Steps.** Per step the logit difference ``l = z_y - max_{k != y} z_k`` (targeted: ``max_{k != t} z_k - z_t``)
   and its gradient at the current point; the gradient is averaged with ``momentum`` over steps (the boundary normal
   ``b``); the wanted change is ``c = -overshoot l`` outside the adversarial region and ``-(2 - overshoot) l`` inside;
   the trust-region problem of :mod:`robustlab.attacks.bb_solvers` gives the step. The trust radius is foolbox's
   ``lr * N * d`` (``d`` the input size, box width 1, ``N`` the number of samples in the call: foolbox normalises by
   the batch tensor's size), multiplied by ``lr_decay`` every ``steps // lr_num_decay`` steps. ``radius_batch`` fixes
   ``N`` (1: the per-image radius ``lr * d``) so that results do not depend on how a data set is chunked.
4. **Output.** The closest adversarial point visited (every point is checked by a forward pass before it counts).

As a fixed-eps :class:`Attack` (the thesis's use) a sample is reported robust at eps iff the norm found exceeds eps:
it gets its closest point when that lies within eps, else ``x``; samples within eps stop early.
:meth:`BrendelBethge.minimal_perturbation` returns the closest point without the cut. Thesis settings: L-inf, 200 steps
(UDR, Tables 1/4/8) or 100 steps x 3 repeats (CCE), on 1000 test samples.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustlab.attacks.base import Attack, BoundarySearchAttack, predict
from robustlab.attacks.bb_solvers import trust_region_step
from robustlab.attacks.pgd import PGD, _check_count, attack_success
from robustlab.attacks.registry import register_attack
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel, lp_norm
from robustlab.core.validation import check_positive


def _expand(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample (N,) tensor to broadcast over (N, ...)."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


@register_attack("bb")
class BrendelBethge(BoundarySearchAttack):
    """``BrendelBethge(model, threat, steps=200)``: minimum-norm B&B (foolbox 3.3.4's algorithm), L-inf and L2.

    Defaults are foolbox's (lr 1e-3 halved 20 times over the run, momentum 0.8, overshoot 1.1, 10 bisections,
    blended-noise start) except ``steps`` (the thesis's 200; foolbox's default is 1000).
    """

    norms = ("linf", "l2")

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        steps: int = 200,
        lr: float = 1e-3,
        lr_decay: float = 0.5,
        lr_num_decay: int = 20,
        momentum: float = 0.8,
        overshoot: float = 1.1,
        binary_search_steps: int = 10,
        init_attack: Attack | None = None,
        init_eps: float | None = None,
        init_directions: int = 1000,
        init_steps: int = 1000,
        radius_batch: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(model, threat, loss="cw")
        if init_attack is not None and init_eps is not None:
            raise InputError("pass either init_attack or init_eps, not both")
        self.steps = _check_count(steps, "steps")
        self.lr_num_decay = _check_count(lr_num_decay, "lr_num_decay")
        self.binary_search_steps = _check_count(binary_search_steps, "binary_search_steps")
        self.init_directions = _check_count(init_directions, "init_directions")
        self.init_steps = _check_count(init_steps, "init_steps")
        self.radius_batch = None if radius_batch is None else _check_count(radius_batch, "radius_batch")
        check_positive(lr, "lr")
        check_positive(lr_decay, "lr_decay")
        if not 0.0 <= momentum < 1.0:
            raise InputError(f"momentum must lie in [0, 1), got {momentum}")
        if not 1.0 <= overshoot < 2.0:
            raise InputError(f"overshoot must lie in [1, 2), got {overshoot}")
        self.lr, self.lr_decay, self.momentum = float(lr), float(lr_decay), float(momentum)
        self.overshoot, self.seed = float(overshoot), int(seed)
        if init_eps is not None:
            check_positive(init_eps, "init_eps")
            eps = min(float(init_eps), 1.0) if threat.norm == "linf" else float(init_eps)
            init_attack = PGD(model, ThreatModel(threat.norm, eps), steps=20, step_size=eps / 2, early_stop=True)
        self.init_attack = init_attack

    def __repr__(self) -> str:
        start = "blended-noise" if self.init_attack is None else repr(self.init_attack)
        return (f"BrendelBethge({self.threat}, steps={self.steps}, lr={self.lr:g}, momentum={self.momentum:g}, "
                f"init={start})")

    def _search(self, x: Tensor, y: Tensor, target: Tensor | None, stop_at: float | None) -> tuple[Tensor, Tensor]:
        """Closest adversarial point and its norm per sample (inf where none); samples within ``stop_at`` stop early."""
        targeted = target is not None
        label = target if target is not None else y
        best_norm = x.new_full((x.shape[0],), float("inf"))
        best = x.clone()
        clean = self._fooled(x, label, targeted)
        best_norm[clean] = 0.0
        todo = (~clean).nonzero().squeeze(1)
        if todo.numel() == 0:
            return best, best_norm
        start = self._start(x[todo], y[todo], None if target is None else target[todo]).to(x.dtype)
        ok = self._fooled(start, label[todo], targeted)
        rows = todo[ok]
        if rows.numel() > 0:
            scale = x.shape[0] if self.radius_batch is None else self.radius_batch
            best[rows], best_norm[rows] = self._descend(x[rows], start[ok], label[rows], targeted, stop_at, scale)
        return best, best_norm

    def _start(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """The starting points: ``init_attack``'s output, or foolbox's blended-uniform-noise linear search."""
        if self.init_attack is not None:
            return self.init_attack(x, y, target)
        targeted = target is not None
        label = target if target is not None else y
        gen = torch.Generator().manual_seed(self.seed)
        noise, have = x.clone(), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.init_directions):
            draw = torch.rand(x.shape, generator=gen, dtype=torch.float64).to(device=x.device, dtype=x.dtype)
            take = ~have & self._fooled(draw, label, targeted)
            noise[take], have = draw[take], have | take
            if bool(have.all()):
                break
        blend = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        open_rows = have.clone()
        for alpha in torch.linspace(0.0, 1.0, self.init_steps + 1).tolist():
            idx = open_rows.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            hit = self._fooled((1 - alpha) * x[idx] + alpha * noise[idx], label[idx], targeted)
            blend[idx[hit]] = alpha
            open_rows[idx[hit]] = False
        return ((1 - _expand(blend, x)) * x + _expand(blend, x) * noise).clamp(0.0, 1.0)

    def _descend(
        self, x0: Tensor, start: Tensor, label: Tensor, targeted: bool, stop_at: float | None, batch: int
    ) -> tuple[Tensor, Tensor]:
        """B&B from adversarial ``start`` points: bisection onto the boundary, then the trust-region steps.

        The trust radius is ``lr * batch * d`` as in foolbox (whose radius scales with the number of samples).
        """
        n, dim = x0.shape[0], math.prod(x0.shape[1:])
        best, best_norm = start.clone(), lp_norm(start - x0, self.threat.norm)
        xk = self._boundary(x0, start, label, targeted)
        flat0 = x0.flatten(1).double()
        normal = torch.zeros(n, dim, dtype=torch.float64, device=x0.device)
        lrs = torch.full((n,), self.lr, dtype=torch.float64, device=x0.device)
        decay_every = max(1, int(self.steps / self.lr_num_decay))
        for step in range(1, self.steps + 1):
            running = best_norm > stop_at if stop_at is not None else torch.ones_like(best_norm, dtype=torch.bool)
            idx = running.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            diff, grad, adv = self._margin(xk[idx], label[idx], targeted)
            self._record(x0, xk, idx, adv, best, best_norm)
            grad = grad.flatten(1).double()
            normal[idx] = grad if step == 1 else (1 - self.momentum) * grad + self.momentum * normal[idx]
            if (step + 1) % decay_every == 0:
                lrs *= self.lr_decay
            diff = diff.double()
            wanted = torch.where(diff > 0, -self.overshoot * diff, -(2 - self.overshoot) * diff)
            delta = trust_region_step(self.threat.norm, flat0[idx], xk[idx].flatten(1).double(), normal[idx],
                                      wanted, lrs[idx] * (batch * dim))
            xk[idx] = (xk[idx] + delta.view_as(xk[idx]).to(xk.dtype)).clamp(0.0, 1.0)
        idx = torch.arange(n, device=x0.device)
        self._record(x0, xk, idx, self._fooled(xk, label, targeted), best, best_norm)  # the last step's point too
        return best, best_norm

    def _record(self, x0: Tensor, xk: Tensor, idx: Tensor, adv: Tensor, best: Tensor, best_norm: Tensor) -> None:
        """Keep ``xk[idx]`` as the best point where it is adversarial and closer than the best so far (in place)."""
        dist = lp_norm(xk[idx] - x0[idx], self.threat.norm)
        closer = adv & (dist < best_norm[idx])
        rows = idx[closer]
        best[rows], best_norm[rows] = xk[rows], dist[closer]

    def _margin(self, x: Tensor, label: Tensor, targeted: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Logit difference (negative once adversarial), its input gradient, and the success of ``x``."""
        x_req = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(x_req)
            other = logits.detach().scatter(1, label[:, None], float("-inf")).argmax(1)
            own, best_other = logits.gather(1, label[:, None])[:, 0], logits.gather(1, other[:, None])[:, 0]
            diff = best_other - own if targeted else own - best_other
            (grad,) = torch.autograd.grad(diff.sum(), x_req)
        return diff.detach(), grad, attack_success(logits.detach(), label, targeted)

    def _boundary(self, x: Tensor, x_adv: Tensor, label: Tensor, targeted: bool) -> Tensor:
        """Bisection between ``x`` and adversarial ``x_adv`` (foolbox's ``mid_points`` per norm); adversarial end."""
        lo, hi = x.new_zeros(x.shape[0]), x.new_ones(x.shape[0])
        for _ in range(self.binary_search_steps):
            mid = (lo + hi) / 2
            fooled = self._fooled(self._mid_point(x, x_adv, mid), label, targeted)
            hi, lo = torch.where(fooled, mid, hi), torch.where(fooled, lo, mid)
        return self._mid_point(x, x_adv, hi)

    def _mid_point(self, x: Tensor, x_adv: Tensor, frac: Tensor) -> Tensor:
        """L2: the point ``frac`` of the way to ``x_adv``; L-inf: ``x_adv``'s perturbation clipped to ``frac``."""
        frac = _expand(frac, x)
        if self.threat.norm == "l2":
            return frac * x_adv + (1 - frac) * x
        return x + torch.maximum(torch.minimum(x_adv - x, frac), -frac)

    def _fooled(self, x: Tensor, label: Tensor, targeted: bool) -> Tensor:
        """Per-sample success of the point ``x``."""
        return attack_success(predict(self.model, x), label, targeted)
