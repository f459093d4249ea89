"""Square Attack (Andriushchenko et al. 2020): a score-based random search that needs forward passes only.

Each iteration proposes a change on one random square window and keeps it when the margin loss
``z_y - max_{k != y} z_k`` (targeted: ``max_{k != t} z_k - z_t``) goes down; only samples not yet fooled keep
querying. L-inf starts from vertical stripes of +-eps and sets windows to the vertices +-eps (per channel); L2 starts
from a grid of pseudo-Gaussian blobs and moves mass between two windows while staying on the eps sphere, as in the
reference implementation. The window area is ``p * H * W`` with ``p`` halved at iterations
{10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000}, rescaled to the query budget. Random draws come from a local
generator seeded with ``seed``, so a call is reproducible; the window position is shared by the batch (as in the
AutoAttack port). Failed samples return the point with the lowest margin found.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustlab.attacks.base import Attack, predict
from robustlab.attacks.losses import cw_margin
from robustlab.attacks.registry import register_attack
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel

_P_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # iterations (of 10000) at which p halves


def _check_count(value: int, name: str) -> int:
    """Require an integer >= 1."""
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _per_sample_l2(t: Tensor) -> Tensor:
    """L2 norm of each sample, shaped (N, 1, 1, 1) to broadcast."""
    return t.flatten(1).norm(p=2, dim=1).reshape(-1, 1, 1, 1)


def _normalize(t: Tensor) -> Tensor:
    """Each sample scaled to unit L2 norm (zero stays zero)."""
    return t / (_per_sample_l2(t) + 1e-12)


def _rectangles(rows: int, cols: int) -> Tensor:
    """Nested rectangles weighted 1/(k+1)^2 around the centre, unit L2 norm: half of the reference's L2 blob."""
    delta = torch.zeros(rows, cols)
    r0, c0 = rows // 2, cols // 2
    for k in range(max(r0 + 1, c0 + 1)):
        delta[max(r0 - k, 0) : min(r0 - k + 2 * k + 1, rows), max(c0 - k, 0) : min(c0 - k + 2 * k + 1, cols)] += (
            1.0 / (k + 1) ** 2
        )
    return delta / delta.norm().clamp_min(1e-12)


class _Draws:
    """The attack's random numbers, from one CPU generator so results do not depend on the device."""

    def __init__(self, seed: int, device: torch.device, dtype: torch.dtype) -> None:
        self.gen = torch.Generator().manual_seed(int(seed))
        self.device, self.dtype = device, dtype

    def signs(self, *shape: int) -> Tensor:
        """Uniform random +-1 of the given shape."""
        t = torch.randint(0, 2, shape, generator=self.gen) * 2 - 1
        return t.to(device=self.device, dtype=self.dtype)

    def integer(self, high: int) -> int:
        """A uniform integer in [0, high]."""
        return int(torch.randint(0, high + 1, (1,), generator=self.gen))

    def blob(self, s: int) -> Tensor:
        """The reference's L2 window pattern: +rectangles on one half, -rectangles on the other, random orientation."""
        delta = torch.cat((_rectangles(s // 2, s), -_rectangles(s - s // 2, s)))
        delta = delta / delta.norm().clamp_min(1e-12)
        if bool(torch.rand(1, generator=self.gen) > 0.5):
            delta = delta.T
        return delta.to(device=self.device, dtype=self.dtype)


@register_attack("square")
class Square(Attack):
    """``Square(model, threat, n_queries=5000)``: score-based random search on square windows (L-inf or L2).

    Uses only forward passes under ``torch.no_grad``; ``restarts`` reruns it on samples still not fooled.
    """

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        n_queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(model, threat)
        if threat.norm not in ("linf", "l2"):
            raise InputError(f"Square supports the linf and l2 norms, got {threat.norm!r}")
        self.n_queries = _check_count(n_queries, "n_queries")
        if not 0.0 < float(p_init) <= 1.0:
            raise InputError(f"p_init must lie in (0, 1], got {p_init}")
        self.p_init = float(p_init)
        self.restarts = _check_count(restarts, "restarts")
        self.seed = int(seed)

    def __repr__(self) -> str:
        return (
            f"Square({self.threat}, n_queries={self.n_queries}, p_init={self.p_init}, "
            f"restarts={self.restarts}, seed={self.seed})"
        )

    @torch.no_grad()
    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Run ``restarts`` searches on the samples not yet fooled; keep each sample's lowest-margin point."""
        targeted = target is not None
        label = target if targeted else y
        draws = _Draws(self.seed, x.device, x.dtype)
        best = x.clone()
        best_margin = self._margin(x, label, targeted)
        for _ in range(self.restarts):
            idx = (best_margin > 0).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x_r, margin_r = self._run(x[idx], label[idx], targeted, draws)
            better = margin_r < best_margin[idx]
            best[idx[better]] = x_r[better]
            best_margin[idx[better]] = margin_r[better]
        return best

    def _margin(self, x: Tensor, label: Tensor, targeted: bool) -> Tensor:
        """The margin loss; <= 0 once the sample is fooled (misclassified, or classified as the target)."""
        m = cw_margin(predict(self.model, x), label)
        return m if targeted else -m

    def _p(self, it: int) -> float:
        """Fraction of pixels in the window at iteration ``it``, the reference schedule rescaled to ``n_queries``."""
        it = int(it / self.n_queries * 10000)
        return self.p_init / 2 ** sum(it > t for t in _P_SCHEDULE)

    def _run(self, x: Tensor, label: Tensor, targeted: bool, draws: _Draws) -> tuple[Tensor, Tensor]:
        """One random search; returns the best points and their margins."""
        x_best = self._init_linf(x, draws) if self.threat.norm == "linf" else self._init_l2(x, draws)
        margin = self._margin(x_best, label, targeted)
        for it in range(self.n_queries):
            idx = (margin > 0).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x_c, xb_c = x[idx], x_best[idx]
            step = self._step_linf if self.threat.norm == "linf" else self._step_l2
            x_new = step(x_c, xb_c, self._p(it), draws)
            margin_new = self._margin(x_new, label[idx], targeted)
            improved = margin_new < margin[idx]
            x_best.index_copy_(0, idx, torch.where(improved.reshape(-1, 1, 1, 1), x_new, xb_c))
            margin.index_copy_(0, idx, torch.where(improved, margin_new, margin[idx]))
        return x_best, margin

    def _init_linf(self, x: Tensor, draws: _Draws) -> Tensor:
        """Vertical stripes: one random sign per channel and column."""
        n, c, _, w = x.shape
        return (x + self.threat.eps * draws.signs(n, c, 1, w)).clamp(0.0, 1.0)

    def _step_linf(self, x: Tensor, x_best: Tensor, p: float, draws: _Draws) -> Tensor:
        """Set one square window (shared position, per-sample per-channel sign) to a vertex of the ball."""
        n, c, h, w = x.shape
        eps = self.threat.eps
        s = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)
        vh, vw = draws.integer(h - s), draws.integer(w - s)
        x_new = x_best.clone()
        x_new[:, :, vh : vh + s, vw : vw + s] += 2.0 * eps * draws.signs(n, c, 1, 1)
        return torch.minimum(torch.maximum(x_new, x - eps), x + eps).clamp(0.0, 1.0)

    def _init_l2(self, x: Tensor, draws: _Draws) -> Tensor:
        """A grid of up to 5 x 5 blobs with random signs per sample and channel, scaled to the eps sphere."""
        n, c, h, w = x.shape
        s = max(min(h, w) // 5, 1)
        nh, nw = min(5, h // s), min(5, w // s)
        oh, ow = (h - nh * s) // 2, (w - nw * s) // 2
        delta = torch.zeros_like(x)
        for i in range(nh):
            for j in range(nw):
                vh, vw = oh + i * s, ow + j * s
                delta[:, :, vh : vh + s, vw : vw + s] += draws.blob(s) * draws.signs(n, c, 1, 1)
        return (x + _normalize(delta) * self.threat.eps).clamp(0.0, 1.0)

    def _step_l2(self, x: Tensor, x_best: Tensor, p: float, draws: _Draws) -> Tensor:
        """Move perturbation mass: empty a second window, refill the first with a new blob, keep ||delta|| = eps."""
        n, c, h, w = x.shape
        eps = self.threat.eps
        delta = x_best - x
        s = max(int(round(math.sqrt(p * h * w))), 3)
        s = min(s + 1 - s % 2, h, w)  # odd, as in the reference, unless the image is smaller
        vh, vw = draws.integer(h - s), draws.integer(w - s)
        vh2, vw2 = draws.integer(h - s), draws.integer(w - s)
        win1 = (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s))
        win2 = (slice(None), slice(None), slice(vh2, vh2 + s), slice(vw2, vw2 + s))
        mask = torch.zeros_like(x)
        mask[win1], mask[win2] = 1.0, 1.0
        norm_image = _per_sample_l2(delta)
        norm_windows = _per_sample_l2(delta * mask)
        old = delta[win1]
        new = draws.blob(s) * draws.signs(n, c, 1, 1) + old / (old.norm(p=2, dim=(-2, -1), keepdim=True) + 1e-12)
        budget = ((eps**2 - norm_image**2).clamp_min(0.0) / c + norm_windows**2).sqrt()
        new = new / (new.norm(p=2, dim=(-2, -1), keepdim=True) + 1e-12) * budget
        delta[win2] = 0.0
        delta[win1] = new
        return (x + _normalize(delta) * eps).clamp(0.0, 1.0)
