"""The threat model: a norm ball of radius eps around each input, intersected with the [0, 1] image box.

One object is passed to every attack and written into every result, so the protocol is never implicit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor

from robustlab.core.errors import InputError
from robustlab.core.rng import sharded_rand

Norm = Literal["linf", "l2", "l1"]
NORMS: tuple[str, ...] = ("linf", "l2", "l1")
_ALIASES: dict[str, Norm] = {"inf": "linf", "linf": "linf", "l_inf": "linf", "li": "linf", "l2": "l2", "2": "l2",
                             "l1": "l1", "1": "l1"}


def canonical_norm(norm: str) -> Norm:
    """The norm named by ``norm`` or an alias of it (``"inf"``, ``"2"``, any case); InputError for anything else.

    ``ThreatModel`` applies it itself; callers holding a user's string call it first to get the ``Norm`` type."""
    canonical = _ALIASES.get(str(norm).lower())
    if canonical is None:
        raise InputError(f"unknown norm {norm!r}; valid norms: {', '.join(NORMS)}")
    return canonical


def _flat(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1)


def _per_sample(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a (N,) tensor so it broadcasts over an (N, ...) tensor."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def lp_norm(delta: Tensor, norm: str) -> Tensor:
    """Per-sample norm of a batch of perturbations, shape (N,)."""
    flat = _flat(delta)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    raise InputError(f"unknown norm {norm!r}; valid norms: {', '.join(NORMS)}")


def project_l1_ball(delta: Tensor, eps: Tensor | float) -> Tensor:
    """Euclidean projection of each sample onto the L1 ball of radius eps (Duchi et al. 2008, sort-based)."""
    flat = _flat(delta)
    n, d = flat.shape
    eps_t = torch.as_tensor(eps, dtype=flat.dtype, device=flat.device).expand(n)
    abs_v = flat.abs()
    inside = abs_v.sum(dim=1) <= eps_t
    mu, _ = abs_v.sort(dim=1, descending=True)
    cumsum = mu.cumsum(dim=1)
    ar = torch.arange(1, d + 1, device=flat.device, dtype=flat.dtype)
    cond = mu - (cumsum - eps_t[:, None]) / ar > 0
    rho = cond.to(flat.dtype).mul(ar).argmax(dim=1)  # last index where cond holds
    theta = (cumsum.gather(1, rho[:, None]).squeeze(1) - eps_t) / (rho + 1).to(flat.dtype)
    projected = flat.sign() * (abs_v - theta[:, None]).clamp_min(0)
    out = torch.where(inside[:, None], flat, projected)
    return out.view_as(delta)


def project_l1_box(delta: Tensor, x: Tensor, eps: Tensor | float) -> Tensor:
    """Exact Euclidean projection of ``x + delta`` onto {L1 ball of radius eps around x} & [0, 1], as a perturbation.

    Projecting onto the ball and then clipping to the box is not the projection onto their intersection (and wastes
    budget on coordinates the box cuts). The solution is ``sign(d_i) clip(|d_i| - lam, 0, u_i)`` with ``u_i`` the room
    the box leaves along ``sign(d_i)`` and ``lam >= 0`` the smallest value keeping the L1 norm <= eps (Croce & Hein
    2021, "Mind the box"). Only coordinates with ``|d_i| > 0`` and ``u_i > 0`` can contribute to the norm at any
    ``lam >= 0``; APGD-L1's iterates are sparse, so the threshold is solved on those alone (:func:`_l1_box_threshold`).
    """
    flat, xf = _flat(delta), _flat(x)
    n, dim = flat.shape
    work = torch.float32 if flat.device.type == "mps" else torch.float64  # the breakpoint sums need the precision
    eps_t = torch.as_tensor(eps, dtype=work, device=flat.device).expand(n)
    reach = torch.minimum(flat.abs(), torch.where(flat >= 0, 1 - xf, xf))  # > 0: the coordinate can be nonzero
    most = int((reach > 0).sum(dim=1).max()) if n else 0
    if most == 0:
        return torch.zeros_like(delta)
    index = None
    if most < dim:  # each row's live coordinates, padded with others (whose a = 0 or room = 0 moves no breakpoint)
        index = reach.topk(most, dim=1, sorted=False).indices
        d, xw = flat.gather(1, index).to(work), xf.gather(1, index).to(work)
    else:
        d, xw = flat.to(work), xf.to(work)
    a = d.abs()
    room = torch.where(d >= 0, 1.0 - xw, xw).clamp_min(0.0)
    lam = _l1_box_threshold(a, room, eps_t)
    out = (d.sign() * torch.minimum((a - lam).clamp_min(0.0), room)).to(delta.dtype)
    if index is not None:  # every coordinate left out projects to 0
        out = torch.zeros_like(flat).scatter_(1, index, out)
    return out.view_as(delta)


def _l1_box_threshold(a: Tensor, room: Tensor, eps_t: Tensor) -> Tensor:
    """Per row the smallest ``lam >= 0`` with ``sum clip(a - lam, 0, room) <= eps``, shape (N, 1).

    The sum is piecewise linear and non-increasing in ``lam`` with breakpoints ``a - room`` and ``a``: sorting them
    gives ``lam`` exactly (the reference bisects over the same list).
    """
    points = torch.cat((a - room, a), dim=1)
    slope_change = torch.cat((-torch.ones_like(a), torch.ones_like(a)), dim=1)
    points, order = points.sort(dim=1)
    slope = slope_change.gather(1, order).cumsum(dim=1)  # d norm / d lam just after each breakpoint
    gaps = points.diff(dim=1)
    values = room.sum(dim=1, keepdim=True) + torch.cat(
        (torch.zeros_like(points[:, :1]), (slope[:, :-1] * gaps).cumsum(dim=1)), dim=1)  # norm at each breakpoint
    j = (values > eps_t[:, None]).sum(dim=1).clamp(1, points.shape[1] - 1) - 1  # last breakpoint above eps
    lam = points.gather(1, j[:, None]) + (values.gather(1, j[:, None]) - eps_t[:, None]) / (
        -slope.gather(1, j[:, None])).clamp_min(1.0)
    return lam.clamp_min(0.0)  # the clipped point already lies in the ball: no shrinkage


@dataclass(frozen=True)
class ThreatModel:
    """An Lp ball of radius ``eps`` intersected with the [0, 1] box.

    ``ThreatModel("linf", 8/255)``; norms are ``linf``, ``l2`` and ``l1``.
    """

    norm: Norm
    eps: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", canonical_norm(self.norm))
        eps = float(self.eps)
        if not (eps > 0 and eps < float("inf")):
            raise InputError(f"eps must be a finite number > 0, got {self.eps}")
        if self.norm == "linf" and eps > 1.0:
            raise InputError(f"L-inf eps={eps} exceeds the [0, 1] box: every image would be reachable; use eps <= 1")
        object.__setattr__(self, "eps", eps)

    def to_dict(self) -> dict:
        """Plain-data form, written into every result."""
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.norm}(eps={self.eps:.6g})"

    def norm_of(self, delta: Tensor) -> Tensor:
        """Per-sample norm of ``delta`` in this threat model's norm."""
        return lp_norm(delta, self.norm)

    def project_delta(self, delta: Tensor, eps: Tensor | float | None = None) -> Tensor:
        """Project perturbations onto the norm ball (not the box)."""
        eps = self.eps if eps is None else eps
        if self.norm == "linf":
            if isinstance(eps, Tensor):
                e = _per_sample(eps, delta)
                return torch.maximum(torch.minimum(delta, e), -e)
            return delta.clamp(-eps, eps)
        if self.norm == "l2":
            norms = _flat(delta).norm(p=2, dim=1).clamp_min(1e-12)
            eps_t = torch.as_tensor(eps, dtype=delta.dtype, device=delta.device)
            factor = torch.clamp(eps_t / norms, max=1.0)
            return delta * _per_sample(factor, delta)
        return project_l1_ball(delta, eps)

    def project(self, x_adv: Tensor, x: Tensor, eps: float | None = None) -> Tensor:
        """Map ``x_adv`` onto the ball around ``x`` (radius ``eps``, default the threat's) intersected with [0, 1].

        L-inf and L2: the ball, then the box. Clipping after the ball keeps the point in the ball (x is in [0, 1], so
        clipping moves every coordinate towards x); for L-inf this is the exact projection onto the intersection.
        L1: the exact projection onto the intersection (:func:`project_l1_box`), since ball-then-box is not.
        """
        if self.norm == "l1":
            delta = project_l1_box(x_adv - x, x, self.eps if eps is None else eps)
        else:
            delta = self.project_delta(x_adv - x, eps)
        return (x + delta).clamp(0.0, 1.0)

    def random_start(self, x: Tensor) -> Tensor:
        """A uniformly random point of the ball (L-inf: per coordinate; L2/L1: uniform in the ball), in the box."""
        if self.norm == "linf":
            delta = (sharded_rand(x.shape, dtype=x.dtype, device=x.device) * 2 - 1) * self.eps
        else:
            n, d = x.shape[0], x[0].numel()
            if self.norm == "l2":
                direction = sharded_rand((n, d), dtype=x.dtype, device=x.device, normal=True)
                direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
                radius = sharded_rand((n, 1), dtype=x.dtype, device=x.device) ** (1.0 / d)
            else:  # L1: a Laplace direction normalised to the sphere, radius with the volume law
                u = sharded_rand((n, d), dtype=x.dtype, device=x.device).clamp_min(1e-12)
                sign = torch.where(sharded_rand((n, d), dtype=x.dtype, device=x.device) < 0.5, -1.0, 1.0)
                direction = sign * (-u.log())
                direction = direction / direction.abs().sum(dim=1, keepdim=True).clamp_min(1e-12)
                radius = sharded_rand((n, 1), dtype=x.dtype, device=x.device) ** (1.0 / d)
            delta = (direction * radius * self.eps).view_as(x)
        return self.project(x + delta, x)

    def steepest_ascent(self, grad: Tensor, l1_sparsity: float = 0.95) -> Tensor:
        """The unit-norm direction that increases a linearised loss the most.

        L-inf: sign(grad). L2: grad / ||grad||. L1: the true steepest direction is one coordinate; as in
        SLIDE (Tramer & Boneh 2019) we keep the coordinates above the ``l1_sparsity`` quantile of |grad|
        with their sign, scaled to unit L1 norm.
        """
        if self.norm == "linf":
            return grad.sign()
        flat = _flat(grad)
        if self.norm == "l2":
            return grad / _per_sample(flat.norm(p=2, dim=1).clamp_min(1e-12), grad)
        abs_g = flat.abs()
        k = max(1, int(round((1.0 - l1_sparsity) * flat.shape[1])))
        thresh = abs_g.topk(k, dim=1).values[:, -1:]
        mask = (abs_g >= thresh) & (abs_g > 0)
        direction = flat.sign() * mask
        direction = direction / direction.abs().sum(dim=1, keepdim=True).clamp_min(1e-12)
        return direction.view_as(grad)

    def contains(self, x_adv: Tensor, x: Tensor, atol: float = 1e-5) -> Tensor:
        """Per-sample boolean: is ``x_adv`` inside the ball (up to ``atol``, relative for L2/L1) and the box."""
        dist = self.norm_of(x_adv - x)
        tol = atol if self.norm == "linf" else atol * max(1.0, self.eps)
        in_ball = dist <= self.eps + tol
        in_box = (_flat(x_adv).amin(dim=1) >= 0) & (_flat(x_adv).amax(dim=1) <= 1)
        return in_ball & in_box
