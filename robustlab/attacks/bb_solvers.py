"""Brendel & Bethge's per-step trust-region problems (L2 and L-inf), batched over samples in float64.

Every step of B&B linearises the boundary at the current point ``x`` (normal ``b``, wanted change ``c`` of the
linearised logit difference) and solves, per sample, in the [0, 1] box and an L2 trust region of radius ``r``:

    min_delta ||x0 - x - delta||_p   s.t.   b . delta = c,   ||delta||_2 <= r,   0 <= x + delta <= 1.

As in foolbox 3.3.4 (the reference implementation) a sample first gets a feasibility test: if the box cannot reach
``b . delta = c`` at all, or only with a step longer than ``r`` (the box-constrained minimum L2 norm), the step is
the largest move towards the boundary inside the trust region and the box; otherwise the norm's solver runs: for L2
foolbox's active-set solver (the optimal step towards the boundary and towards ``x0`` on the unclamped coordinates,
clamping whatever leaves the box, at most 20 rounds), for L-inf a bisection over the L-inf radius ``eps`` around
``x0`` (21 rounds), each radius feasible when the minimum-L2 step to the boundary inside ``box ∩ B_inf(x0, eps)``
fits in the trust region (foolbox finds that step's Lagrange multiplier by a Newton iteration to 0.01 %; here it
is solved exactly, the equation being piecewise linear).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from robustlab.core.errors import InputError

#: The small constant foolbox adds to denominators.
TINY = 1e-10


def _col(v: Tensor) -> Tensor:
    """A per-sample (n,) tensor as a column (n, 1)."""
    return v[:, None]


def _clip(v: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Elementwise clip of ``v`` to ``[lo, hi]``."""
    return torch.minimum(torch.maximum(v, lo), hi)


def box_corner(x: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """The box step that changes ``b . delta`` most in the direction of ``sign(c)`` (foolbox's reachability test)."""
    up = torch.where(_col(c > 0), b > 0, b <= 0)
    return torch.where(up, 1.0 - x, -x)


def _saturation(direction: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Per sample, the scale ``t`` beyond which ``clip(t * direction, lo, hi)`` no longer changes."""
    pos = torch.where(direction > 0, hi / direction.where(direction > 0, torch.ones_like(direction)), 0.0)
    neg = torch.where(direction < 0, lo / direction.where(direction < 0, -torch.ones_like(direction)), 0.0)
    return torch.maximum(pos, neg).amax(1)


def _scale_bisection(direction: Tensor, lo: Tensor, hi: Tensor, t_lo: Tensor, t_hi: Tensor,
                     past: Callable[[Tensor], Tensor], iters: int = 60) -> tuple[Tensor, Tensor]:
    """Geometric bisection for the scale where ``past(clip(t * direction))`` turns true; returns ``(t_lo, t_hi)``.

    ``past`` must be monotone in ``t``; ``t_lo`` must satisfy ``not past`` (or be the answer) and ``t_hi`` ``past``.
    """
    for _ in range(iters):
        mid = torch.sqrt(t_lo * t_hi)
        hit = past(_clip(direction * _col(mid), lo, hi))
        t_hi, t_lo = torch.where(hit, mid, t_hi), torch.where(hit, t_lo, mid)
    return t_lo, t_hi


def min_norm_to_boundary(x: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Smallest ``||delta||_2`` with ``b . delta = c`` inside the box (the boundary must be reachable in the box)."""
    lo, hi = -x, 1.0 - x
    direction = torch.sign(_col(c)) * b
    t_sat = _saturation(direction, lo, hi)
    t_min = (c.abs() / (b * b).sum(1).clamp_min(TINY)).clamp_min(1e-300)  # clipping only lowers |b . delta|
    short = t_min < t_sat
    t_lo, t_hi = _scale_bisection(direction, lo, hi, t_min.clamp_max(t_sat), t_sat,
                                  lambda d: (d * direction).sum(1) >= c.abs())
    t = torch.where(short, t_hi, t_sat)
    return _clip(direction * _col(t), lo, hi).norm(dim=1)


def step_towards_boundary(x: Tensor, b: Tensor, c: Tensor, r: Tensor) -> Tensor:
    """The step that moves ``b . delta`` furthest towards ``c`` with ``||delta||_2 <= r`` inside the box.

    Solution ``clip(t sign(c) b)`` with the largest ``t`` whose step fits in the trust region.
    """
    lo, hi = -x, 1.0 - x
    direction = torch.sign(_col(c)) * b
    t_sat = _saturation(direction, lo, hi)
    t_min = (r / direction.norm(dim=1).clamp_min(TINY)).clamp_min(1e-300)  # clipping only shortens the step
    short = t_min < t_sat
    t_lo, _ = _scale_bisection(direction, lo, hi, t_min.clamp_max(t_sat), t_sat, lambda d: d.norm(dim=1) > r)
    t = torch.where(short, t_lo, t_sat)
    return _clip(direction * _col(t), lo, hi)


def l2_active_set_step(x0: Tensor, x: Tensor, b: Tensor, c: Tensor, r: Tensor, rounds: int = 20) -> Tensor:
    """Foolbox's L2 solver: closest step to ``x0`` on the linearised boundary, clamping coordinates leaving the box."""
    dx = x0 - x
    n, dim = x.shape
    clamped = torch.zeros_like(x, dtype=torch.bool)
    delta = torch.zeros_like(x)
    ck, rk = c.clone(), r.clone()
    clamp_c, clamp_norm = torch.zeros_like(c), torch.zeros_like(c)
    live = torch.ones(n, dtype=torch.bool, device=x.device)
    for _ in range(rounds):
        free = ~clamped
        bf = b * free
        bnorm = 1e-8 + (bf * bf).sum(1)
        b_dx = (bf * dx).sum(1) / bnorm
        ck_b = ck / bnorm
        free_step = dx + b * _col(ck_b - b_dx)
        boundary_norm = ((bf * _col(ck_b)) ** 2).sum(1)
        step_norm = (free_step * free_step * free).sum(1)
        descent_norm = (((dx - b * _col(b_dx)) ** 2) * free).sum(1)
        too_far = boundary_norm > rk * rk
        shrink = ~too_far & (step_norm > rk * rk)
        correct = torch.sqrt((rk * rk - boundary_norm).clamp_min(0.0)) / (torch.sqrt(descent_norm) + 1e-8)
        shrunk = _col(correct) * dx + b * _col(ck_b - correct * b_dx)
        step = torch.where(_col(too_far), b * _col(ck_b), torch.where(_col(shrink), shrunk, free_step))
        update = free & _col(live)
        delta = torch.where(update, step, delta)
        below = update & (x + delta <= 0.0)
        above = update & ~below & (x + delta >= 1.0)
        delta = torch.where(below, -x, torch.where(above, 1.0 - x, delta))
        new = below | above
        clamped |= new
        clamp_norm = clamp_norm + (delta * delta * new).sum(1)
        clamp_c = clamp_c + (b * delta * new).sum(1)
        live &= new.any(1) & (clamped.sum(1) < dim)
        if not bool(live.any()):
            break
        rk = torch.sqrt((r * r - clamp_norm).clamp_min(0.0))
        ck = c - clamp_c
    return delta


def _linf_box(x0: Tensor, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """Step bounds ``lo <= delta <= hi`` keeping ``x + delta`` in ``[0, 1] ∩ B_inf(x0, eps)``."""
    lo = torch.clamp(x0 - _col(eps), min=0.0) - x
    hi = torch.clamp(x0 + _col(eps), max=1.0) - x
    return lo, hi


def linf_multiplier(b: Tensor, lo: Tensor, hi: Tensor, c: Tensor) -> Tensor:
    """Exact ``lam`` with ``b . clip(lam b / 2, lo, hi) = c`` (``c`` reachable in the box), per sample.

    ``phi(lam) = b . clip(lam b / 2, lo, hi)`` is piecewise linear and nondecreasing with knots ``2 lo_n / b_n`` and
    ``2 hi_n / b_n``: sort the knots, accumulate ``phi`` at each, and interpolate on the segment that crosses ``c``.
    """
    nonzero = b != 0
    safe = torch.where(nonzero, b, torch.ones_like(b))
    knot_a = torch.where(nonzero, 2 * lo / safe, 0.0)
    knot_b = torch.where(nonzero, 2 * hi / safe, 0.0)
    slope_n = b * b / 2
    knots = torch.cat([torch.minimum(knot_a, knot_b), torch.maximum(knot_a, knot_b)], 1)
    change = torch.cat([slope_n, -slope_n], 1)
    knots, order = knots.sort(1)
    slope = change.gather(1, order).cumsum(1).clamp_min(0.0)  # the slope of phi just right of each knot
    base = torch.where(b > 0, b * lo, b * hi).sum(1, keepdim=True)  # phi left of every knot
    phi = torch.cat([base, base + (slope[:, :-1] * (knots[:, 1:] - knots[:, :-1])).cumsum(1)], 1)
    seg = (torch.searchsorted(phi.contiguous(), _col(c).contiguous()).squeeze(1) - 1).clamp(0, knots.shape[1] - 1)
    k, p, s = (t.gather(1, _col(seg)).squeeze(1) for t in (knots, phi, slope))
    lam = torch.where(s > 0, k + (c - p) / torch.where(s > 0, s, torch.ones_like(s)), k)
    return _clip(lam, knots[:, 0], knots[:, -1])


def _linf_radius_feasible(
    x0: Tensor, x: Tensor, b: Tensor, c: Tensor, r: Tensor, eps: Tensor
) -> tuple[Tensor, Tensor]:
    """Per sample: can ``b . delta = c`` be met in ``box ∩ B_inf(x0, eps)`` by a step within ``r``, and its multiplier.

    The minimum-L2 step there is ``clip(lam b / 2)`` with ``lam`` from :func:`linf_multiplier` (foolbox iterates
    Newton steps on ``lam`` to 0.01 %; the piecewise-linear equation is solved exactly here).
    """
    lo, hi = _linf_box(x0, x, eps)
    reach_hi = torch.where(b > 0, b * hi, b * lo).sum(1)
    reach_lo = torch.where(b > 0, b * lo, b * hi).sum(1)
    reachable = (c <= reach_hi) & (c >= reach_lo)
    lam = linf_multiplier(b, lo, hi, c)
    d = _clip(_col(lam) * b / 2, lo, hi)
    return reachable & ((d * d).sum(1) <= r * r), lam


def linf_radius_step(x0: Tensor, x: Tensor, b: Tensor, c: Tensor, r: Tensor, rounds: int = 21) -> Tensor:
    """Foolbox's L-inf solver: bisection over the smallest L-inf radius around ``x0`` at which the step is feasible."""
    eps_lo, eps_hi = torch.zeros_like(c), torch.ones_like(c)
    eps = torch.full_like(c, 0.5)
    lam = 2 * c / ((b * b).sum(1) + TINY)
    for _ in range(rounds):
        live = eps_hi - eps_lo > 1e-6
        if not bool(live.any()):
            break
        ok, lam_eps = _linf_radius_feasible(x0, x, b, c, r, eps)
        lower = live & ok
        eps_hi, lam = torch.where(lower, eps, eps_hi), torch.where(lower, lam_eps, lam)
        eps_lo = torch.where(live & ~ok, eps, eps_lo)
        eps = (eps_hi - eps_lo) / 2 + eps_lo
    lo, hi = _linf_box(x0, x, eps_hi)
    return _clip(_col(lam) * b / 2, lo, hi)


def trust_region_step(norm: str, x0: Tensor, x: Tensor, b: Tensor, c: Tensor, r: Tensor) -> Tensor:
    """One B&B step per sample (flat float64 ``(n, d)`` inputs, per-sample ``c`` and ``r``), as foolbox's ``solve``."""
    if norm not in ("l2", "linf"):
        raise InputError(f"the Brendel & Bethge step supports l2 and linf, got {norm!r}")
    corner = box_corner(x, b, c)
    reachable = (b * corner).sum(1).abs() >= c.abs()
    solvable = reachable & (corner.norm(dim=1) < r)
    unsure = (reachable & ~solvable).nonzero().squeeze(1)
    if unsure.numel() > 0:
        solvable[unsure] = min_norm_to_boundary(x[unsure], b[unsure], c[unsure]) <= r[unsure]
    delta = torch.zeros_like(x)
    rows = (~solvable).nonzero().squeeze(1)
    if rows.numel() > 0:
        delta[rows] = step_towards_boundary(x[rows], b[rows], c[rows], r[rows])
    rows = solvable.nonzero().squeeze(1)
    if rows.numel() > 0:
        solver = l2_active_set_step if norm == "l2" else linf_radius_step
        delta[rows] = solver(x0[rows], x[rows], b[rows], c[rows], r[rows])
    return delta
