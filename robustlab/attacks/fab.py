"""FAB, the Fast Adaptive Boundary attack (Croce & Hein 2020), L-inf, L2 and L1, untargeted and FAB-T.

Each step linearises the decision boundary at the iterate ``x1``, projects both ``x1`` and the original ``x0`` onto
that hyperplane intersected with the [0, 1] box (exactly, with the minimal L-inf, L2 or L1 step), and moves to the
convex combination ``(1 - a)(x1 + eta d1) + a (x0 + eta d2)`` with ``a = min(|d1| / (|d1| + |d2|), alpha_max)``: the
pull towards ``x0`` keeps the result close to the original. Every adversarial iterate is recorded if it is the
smallest so far and then pulled back, ``x1 <- x0 + beta (x1 - x0)``, to search for a closer boundary point.
Restarts after the first begin at a random point of the sphere of radius ``min(best, eps) / 2`` around ``x0``.

``FAB`` chooses, at each step, the class whose linearised boundary is closest (it needs the gradients of all logit
differences: one batched forward/backward over the classes). ``FABTargeted`` (FAB-T, as in AutoAttack) attacks the
boundary to one class at a time, for each of the top ``n_target_classes`` non-true classes, with one gradient per
step; given an explicit ``target`` it instead seeks a point classified as the target.

As an :class:`Attack` with the threat's eps, a sample gets its minimal adversarial point when that is within eps
and stays at ``x`` otherwise; :meth:`minimal_perturbation` gives the minimal points without the eps cut.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.attacks.base import BoundarySearchAttack, input_gradient, predict
from robustlab.attacks.losses import cw_margin
from robustlab.attacks.registry import register_attack
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel, lp_norm
from robustlab.core.validation import check_positive

_HUGE = 1e30  # the step size that stands for "the hyperplane is out of the box's reach"
_L1_TOP = 32  # largest |w| tried before a full sort (FAB-T L1 on MNIST: 2 go all the way at the median, 9 at the 90th)
_NEWTON_STEPS = 8  # Newton steps of the hyperplane projection before the sort takes the rows left (5 do on MNIST L-inf)
_JACOBIAN_ROWS = 2048  # images per forward/backward when the untargeted Jacobian is batched over classes

# (x1, label) -> (logit difference at x1, its input gradient flattened)
BoundaryFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
SuccessFn = Callable[[Tensor, Tensor], Tensor]


def _check_count(value: int, name: str) -> int:
    """Require an integer >= 1."""
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def project_hyperplane_box_l1(p: Tensor, w: Tensor, c: Tensor, *, top: int = _L1_TOP) -> Tensor:
    """Minimal-L1 step ``d`` with ``w . d = c`` and ``p + d`` in [0, 1], per row of (M, D) inputs.

    L1 buys the most ``w . d`` per unit on the coordinates of largest ``|w|``: they move to the box edge along
    ``sign(w)`` in that order until one, moved part way, closes the gap (the reference's ``projection_l1``). Where the
    hyperplane cannot be reached inside the box every coordinate with ``w_i != 0`` goes to its edge. A few coordinates
    close the gap on most rows, so the ``top`` largest ``|w|`` are tried first and only the rows they leave open are
    sorted whole (the same step, up to which of several equal ``|w|`` moves first).
    """
    sign = torch.where(c < 0, -1.0, 1.0).to(p.dtype)
    w, c = w * sign[:, None], c * sign
    aw = w.abs()
    room = torch.where(w > 0, 1.0 - p, p).clamp_min(0.0)
    k = min(top, p.shape[1])
    aw_sorted, order = aw.topk(k, dim=1) if k < p.shape[1] else aw.sort(dim=1, descending=True)
    amount, moved = _fill_in_order(aw_sorted, room.gather(1, order), c)
    step = torch.zeros_like(aw).scatter_(1, order, amount)
    if k < p.shape[1]:
        short = moved == k  # every coordinate tried went all the way
        out_of_reach = short & ((aw * room).sum(1) < c)  # not even all of them would do: each goes to its edge
        step = torch.where(out_of_reach[:, None], room, step)
        rest = (short & ~out_of_reach).nonzero().squeeze(1)  # the others are sorted whole
        if rest.numel() > 0:
            aw_sorted, order = aw[rest].sort(dim=1, descending=True)
            amount, _ = _fill_in_order(aw_sorted, room[rest].gather(1, order), c[rest])
            step[rest] = torch.zeros_like(amount).scatter_(1, order, amount)
    return torch.sign(w) * step


def _fill_in_order(aw_sorted: Tensor, room_sorted: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """How far each coordinate moves when they fill ``c`` in the given order (``|w|`` descending), and per row how
    many went all the way (all of them: ``c`` is not reached with these coordinates)."""
    gain = (aw_sorted * room_sorted).cumsum(1)  # w . d with the first j coordinates at their edge
    m = (gain < c[:, None]).sum(1, keepdim=True)  # coordinates moved all the way
    rank = torch.arange(aw_sorted.shape[1], device=aw_sorted.device)[None]
    before = torch.where(m > 0, gain.gather(1, (m - 1).clamp_min(0)), torch.zeros_like(c[:, None]))
    partial = (c[:, None] - before) / aw_sorted.gather(1, m.clamp_max(aw_sorted.shape[1] - 1)).clamp_min(1e-30)
    amount = torch.where(rank < m, room_sorted, torch.where(rank == m, torch.minimum(partial, room_sorted), 0.0))
    return amount, m.squeeze(1)


def project_hyperplane_box(p: Tensor, w: Tensor, c: Tensor, norm: str, *, newton_steps: int = _NEWTON_STEPS
                           ) -> Tensor:
    """Minimal-norm step ``d`` (L-inf, L2 or L1) with ``w . d = c`` and ``p + d`` in [0, 1], per row of (M, D) inputs
    with ``p`` in [0, 1].

    With the box, the optimum is ``d_i = sign(w_i) min(s k_i, room_i)`` (``k_i = 1`` for L-inf, ``|w_i|`` for L2);
    ``w . d`` is piecewise linear, concave and increasing in ``s``, so ``s`` is found exactly: by Newton's method
    from below (``newton_steps`` steps; a row is done once its set of saturated coordinates stops changing), and by
    sorting the breakpoints for the rows it leaves (0: sort every row). Where the hyperplane cannot be reached inside
    the box the step goes as far towards it as the box allows.
    """
    if norm == "l1":
        return project_hyperplane_box_l1(p, w, c)
    direction, c, room, slope, brk = _breakpoint_problem(p, w, c, norm)
    s, solved = _breakpoint_newton(slope, brk, c, newton_steps)
    if not bool(solved.all()):
        rest = (~solved).nonzero().squeeze(1)
        s = s.index_put((rest,), _breakpoint_sorted(slope[rest], brk[rest], c[rest]))
    reach = s[:, None] if norm == "linf" else s[:, None] * w.abs()
    return direction * torch.minimum(reach, room)


def _breakpoint_problem(p: Tensor, w: Tensor, c: Tensor, norm: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The projection as ``sum_i slope_i min(s, brk_i) = c`` in ``s >= 0``: returns the direction each coordinate
    moves in (``sign(w) sign(c)``, 0 where w is 0), ``|c|``, each coordinate's room to the box edge in that
    direction, the slopes and the breakpoints. A zero-weight coordinate has slope 0, so its breakpoint is immaterial.
    """
    direction = torch.sign(w) * torch.where(c < 0, -1.0, 1.0).to(p.dtype)[:, None]
    room = torch.where(direction > 0, 1.0 - p, p)  # p is in the box, so the room is >= 0
    aw = w.abs()
    if norm == "linf":
        return direction, c.abs(), room, aw, room
    return direction, c.abs(), room, aw * aw, room / aw.clamp_min(1e-30)


def _breakpoint_newton(slope: Tensor, brk: Tensor, c: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """``s`` with ``sum_i slope_i min(s, brk_i) = c`` per row by Newton's method, and which rows it solved.

    Starting below the root (``c / sum slope``), each tangent root of the concave function stays below it and passes
    at least one breakpoint; a row is solved once ``{brk <= s}`` is the set its ``s`` was computed from, which makes
    ``s`` an exact root (or, with no free slope left, the sign that the hyperplane is out of the box's reach). The
    sums are products with the 0/1 mask (a ``where`` per sum costs twice as much), the free slope summed directly
    rather than as the total minus the saturated part, which would cancel."""
    mass = slope * brk.clamp_max(_HUGE / 1e10)  # a saturated coordinate's share of w . d
    s = c / slope.sum(1).clamp_min(1e-30)
    count = torch.full_like(c, -1.0)
    solved = torch.zeros_like(c, dtype=torch.bool)
    for _ in range(steps + 1):
        saturated = (brk <= s[:, None]).to(slope.dtype)
        n_saturated = saturated.sum(1)
        solved = (n_saturated == count) & torch.isfinite(s)
        if bool(solved.all()):
            break
        count = n_saturated
        s = (c - (mass * saturated).sum(1)) / (slope * (1.0 - saturated)).sum(1).clamp_min(1e-30)
    return s, solved


def _breakpoint_sorted(slope: Tensor, brk: Tensor, c: Tensor) -> Tensor:
    """The same ``s`` by sorting the breakpoints (``_HUGE`` where the hyperplane is out of the box's reach).

    The free slope past each breakpoint is a suffix sum, not the total minus a prefix sum: in float32 that
    difference cancels to ~1e-7 of the total, which a breakpoint of 1e6 (an L2 coordinate with a tiny weight) turns
    into an error larger than c itself."""
    brk_sorted, order = brk.sort(dim=1)
    slope_sorted = slope.gather(1, order)
    cum_sat = (slope_sorted * brk_sorted.clamp_max(_HUGE / 1e10)).cumsum(1)  # saturated coordinates' w . d
    free_from = slope_sorted.flip(1).cumsum(1).flip(1)  # slope of the coordinates from the j-th breakpoint on
    free_after = torch.cat((free_from[:, 1:], torch.zeros_like(free_from[:, :1])), 1)
    value_at_brk = cum_sat + brk_sorted * free_after
    m = (value_at_brk < c[:, None]).sum(1)  # breakpoints passed before w . d reaches c
    unreachable = m == brk.shape[1]
    idx = m.clamp_max(brk.shape[1] - 1)[:, None]
    sat_prev = torch.where(m[:, None] > 0, cum_sat.gather(1, (idx - 1).clamp_min(0)), 0.0)
    s = ((c[:, None] - sat_prev) / free_from.gather(1, idx).clamp_min(1e-30)).squeeze(1)
    return torch.where(unreachable, torch.full_like(s, _HUGE), s)  # unreachable: go to the box edge


def _random_sphere(shape: torch.Size, norm: str, gen: torch.Generator | None, like: Tensor) -> Tensor:
    """Random points on the unit L-inf, L2 or L1 sphere (L2 and L1 normalise a Gaussian, as the reference does),
    drawn on the CPU so a seed gives the same points everywhere."""
    t = torch.rand(shape, generator=gen) * 2 - 1 if norm == "linf" else torch.randn(shape, generator=gen)
    t = t / lp_norm(t, norm).clamp_min(1e-12).reshape(-1, *([1] * (len(shape) - 1)))
    return t.to(device=like.device, dtype=like.dtype)


class _FABBase(BoundarySearchAttack):
    """Shared FAB machinery: one run, restarts, the eps cut; subclasses say which boundary to project onto."""

    norms = ("linf", "l2", "l1")

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        steps: int = 100,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, threat)
        self.steps = _check_count(steps, "steps")
        self.restarts = _check_count(restarts, "restarts")
        if not 0.0 <= float(alpha_max) <= 1.0:
            raise InputError(f"alpha_max must lie in [0, 1], got {alpha_max}")
        check_positive(eta, "eta")
        if not 0.0 < float(beta) < 1.0:
            raise InputError(f"beta must lie in (0, 1), got {beta}")
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)
        self.seed = seed

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.threat}, steps={self.steps}, restarts={self.restarts}, "
            f"alpha_max={self.alpha_max}, eta={self.eta}, beta={self.beta}, seed={self.seed})"
        )

    # ----------------------------------------------------------------------------------------- public entry points

    def _search(self, x: Tensor, y: Tensor, target: Tensor | None, stop_at: float | None) -> tuple[Tensor, Tensor]:
        """Best point and its norm per sample (inf where none); ``stop_at`` skips work on samples already within it."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------- shared machinery

    def _generator(self) -> torch.Generator | None:
        """A fresh CPU generator from ``seed`` (None: torch's global generator)."""
        return None if self.seed is None else torch.Generator().manual_seed(int(self.seed))

    def _restarts(
        self,
        x0: Tensor,
        label: Tensor,
        boundary: BoundaryFn,
        success: SuccessFn,
        stop_at: float | None,
        gen: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        """All runs for one boundary choice; samples that succeed already at ``x0`` get norm 0 and are not attacked."""
        n = x0.shape[0]
        best = x0.clone()
        best_norm = x0.new_full((n,), float("inf"))
        done = success(predict(self.model, x0), label)
        best_norm[done] = 0.0
        for r in range(self.restarts):
            todo = ~done if stop_at is None else ~(best_norm <= stop_at)
            idx = todo.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            start = x0[idx] if r == 0 else self._random_start(x0[idx], best_norm[idx], gen)
            x_r, norm_r = self._run(x0[idx], label[idx], start, boundary, success)
            better = norm_r < best_norm[idx]
            best[idx[better]] = x_r[better]
            best_norm[idx[better]] = norm_r[better]
        return best, best_norm

    def _random_start(self, x0: Tensor, best_norm: Tensor, gen: torch.Generator | None) -> Tensor:
        """A point at distance ``min(best, eps) / 2`` from ``x0`` in a random direction, in the box."""
        radius = torch.clamp(best_norm, max=self.threat.eps) * 0.5
        direction = _random_sphere(x0.shape, self.threat.norm, gen, x0)
        return (x0 + direction * radius.reshape(-1, *([1] * (x0.dim() - 1)))).clamp(0.0, 1.0)

    def _run(
        self, x0: Tensor, label: Tensor, x1: Tensor, boundary: BoundaryFn, success: SuccessFn
    ) -> tuple[Tensor, Tensor]:
        """One FAB run from ``x1``: the smallest adversarial iterate per sample and its norm (inf where none)."""
        n = x0.shape[0]
        shape = (-1, *([1] * (x0.dim() - 1)))
        x0f = x0.reshape(n, -1)
        best, best_norm = x0.clone(), x0.new_full((n,), float("inf"))
        for _ in range(self.steps):
            df, dg = boundary(x1, label)
            x1f = x1.reshape(n, -1)
            # the hyperplane {z : df + dg . (z - x1) = 0}, reached from x1 and from x0
            steps = project_hyperplane_box(
                torch.cat((x1f, x0f)), torch.cat((dg, dg)), torch.cat((-df, -df - ((x0f - x1f) * dg).sum(1))), self._n
            )
            d1, d2 = steps[:n].view_as(x1), steps[n:].view_as(x1)
            a = lp_norm(steps, self._n).clamp_min(1e-8)
            alpha = (a[:n] / (a[:n] + a[n:])).clamp(0.0, self.alpha_max).reshape(shape)
            # (1 - alpha)(x1 + eta d1) + alpha (x0 + eta d2), in fused ops
            x1 = torch.lerp(torch.add(x1, d1, alpha=self.eta), torch.add(x0, d2, alpha=self.eta), alpha)
            x1 = x1.clamp_(0.0, 1.0)
            adv = success(predict(self.model, x1), label)
            delta = x1 - x0
            dist = lp_norm(delta, self._n)
            improved = adv & (dist < best_norm)
            best = torch.where(improved.reshape(shape), x1, best)
            best_norm = torch.where(improved, dist, best_norm)
            x1 = torch.where(adv.reshape(shape), torch.add(x0, delta, alpha=self.beta), x1)
        return best, best_norm

    @property
    def _n(self) -> str:
        return self.threat.norm

    def _dual_norm(self, g: Tensor) -> Tensor:
        """Dual norm of gradients along the last dim: L1 for L-inf distances, L2 for L2, L-inf for L1."""
        if self._n == "l1":
            return g.abs().amax(-1)
        return g.abs().sum(-1) if self._n == "linf" else g.norm(p=2, dim=-1)


def _pair_difference(logits: Tensor, pair: Tensor) -> Tensor:
    """``z[pair[:, 0]] - z[pair[:, 1]]`` per sample: the logit difference whose zero set is a pairwise boundary."""
    logits = logits.float()
    return logits.gather(1, pair[:, :1]).squeeze(1) - logits.gather(1, pair[:, 1:]).squeeze(1)


def _misclassified(logits: Tensor, y: Tensor) -> Tensor:
    """Untargeted success."""
    return logits.argmax(1) != y


@register_attack("fab")
class FAB(_FABBase):
    """``FAB(model, threat, steps=100)``: untargeted FAB towards the closest linearised boundary among all classes."""

    supports_targeted = False

    def _search(self, x: Tensor, y: Tensor, target: Tensor | None, stop_at: float | None) -> tuple[Tensor, Tensor]:
        """Restarted FAB runs with the closest-boundary choice."""
        if target is not None:
            raise InputError("FAB is untargeted; use FABTargeted for a target")
        num_classes = predict(self.model, x[:1]).shape[1]

        def boundary(x1: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
            return self._closest_boundary(x1, label, num_classes)

        return self._restarts(x, y, boundary, _misclassified, stop_at, self._generator())

    def _closest_boundary(self, x1: Tensor, y: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
        """Logit difference and gradient for the class whose linearised boundary is nearest to ``x1``."""
        df, dg = self._jacobian(x1, y, num_classes)  # (n, K), (n, K, D)
        dist = df.abs() / (self._dual_norm(dg) + 1e-12)
        dist.scatter_(1, y[:, None], float("inf"))
        j = dist.argmin(1)
        rows = torch.arange(x1.shape[0], device=x1.device)
        return df[rows, j], dg[rows, j]

    def _jacobian(self, x1: Tensor, y: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
        """``z_k - z_y`` and its input gradient for every class k: one forward/backward on class-replicated inputs."""
        n = x1.shape[0]
        per_chunk = max(1, _JACOBIAN_ROWS // n)
        dfs, dgs = [], []
        for k0 in range(0, num_classes, per_chunk):
            ks = torch.arange(k0, min(k0 + per_chunk, num_classes), device=x1.device)
            pair = torch.stack((ks.repeat_interleave(n), y.repeat(len(ks))), dim=1)
            x_rep = x1.repeat(len(ks), *([1] * (x1.dim() - 1)))
            grad, diff, _ = input_gradient(self.model, x_rep, pair, _pair_difference, eot_samples=self.eot_samples)
            dfs.append(diff.reshape(len(ks), n).T)
            dgs.append(grad.reshape(len(ks), n, -1).transpose(0, 1))
        return torch.cat(dfs, 1).to(x1.dtype), torch.cat(dgs, 1)


@register_attack("fab-t")
class FABTargeted(_FABBase):
    """``FABTargeted(model, threat, n_target_classes=9)``: FAB-T, one boundary ``z_t - z_y`` per target class.

    Without ``target`` (the AutoAttack use) each of the top ``n_target_classes`` non-true classes is tried in turn
    and a sample keeps its smallest misclassified point. With ``target`` the attack seeks points classified as the
    target, projecting onto the boundary between the target and the strongest other class.
    """

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        steps: int = 100,
        n_target_classes: int = 9,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            model, threat, steps=steps, restarts=restarts, alpha_max=alpha_max, eta=eta, beta=beta, seed=seed
        )
        self.n_target_classes = _check_count(n_target_classes, "n_target_classes")

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", n_target_classes={self.n_target_classes})"

    def _search(self, x: Tensor, y: Tensor, target: Tensor | None, stop_at: float | None) -> tuple[Tensor, Tensor]:
        """Explicit target: one search; otherwise one search per top class, keeping each sample's smallest point."""
        gen = self._generator()
        if target is not None:
            return self._restarts(x, target, self._target_boundary, _classified_as, stop_at, gen)
        logits = predict(self.model, x)
        n_targets = min(self.n_target_classes, logits.shape[1] - 1)
        ranked = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).argsort(1, descending=True)
        best, best_norm = x.clone(), x.new_full((x.shape[0],), float("inf"))
        for i in range(n_targets):
            idx = torch.arange(x.shape[0], device=x.device)
            if stop_at is not None:
                idx = (~(best_norm <= stop_at)).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            pair = torch.stack((ranked[idx, i], y[idx]), dim=1)
            x_i, norm_i = self._restarts(x[idx], pair, self._pair_boundary, _pair_misclassified, stop_at, gen)
            better = norm_i < best_norm[idx]
            best[idx[better]] = x_i[better]
            best_norm[idx[better]] = norm_i[better]
        return best, best_norm

    def _pair_boundary(self, x1: Tensor, pair: Tensor) -> tuple[Tensor, Tensor]:
        """``z_t - z_y`` and its gradient: one forward/backward."""
        grad, diff, _ = input_gradient(self.model, x1, pair, _pair_difference, eot_samples=self.eot_samples)
        return diff.to(x1.dtype), grad.reshape(x1.shape[0], -1)

    def _target_boundary(self, x1: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """``z_t - max_{k != t} z_k`` and its gradient: the boundary the target must cross next."""
        grad, diff, _ = input_gradient(self.model, x1, target, cw_margin, targeted=True, eot_samples=self.eot_samples)
        return diff.to(x1.dtype), grad.reshape(x1.shape[0], -1)


def _pair_misclassified(logits: Tensor, pair: Tensor) -> Tensor:
    """FAB-T's success in AutoAttack: misclassified (any class but the true one, ``pair[:, 1]``)."""
    return logits.argmax(1) != pair[:, 1]


def _classified_as(logits: Tensor, target: Tensor) -> Tensor:
    """Targeted success."""
    return logits.argmax(1) == target
