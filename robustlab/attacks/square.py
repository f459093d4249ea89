"""Square Attack (Andriushchenko et al. 2020): a score-based random search that needs forward passes only.

Each iteration proposes a change on one random square window and keeps it when the loss goes down or the sample
becomes fooled; only samples not yet fooled keep querying. The loss is the margin ``z_y - max_{k != y} z_k``
untargeted and the cross-entropy to the target class when targeted (as in AutoAttack's port, pyautoattack 0.2.0,
whose steps this module reproduces): L-inf starts from vertical stripes of +-eps and sets a window to a vertex
+-eps per channel; L2 and L1 start from a grid of blobs and move the perturbation's mass between two windows, per
channel, keeping the norm at eps (L1 then projects onto the L1 ball and the [0, 1] box with :mod:`.l1_box`).

The window area is ``p * H * W`` with ``p`` halved after iterations {10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000}
(:func:`p_schedule`); with ``resc_schedule=True`` the iteration is first rescaled to a 10000-query budget, with
``False`` (as AutoAttack runs it) the schedule is the same for any budget. Random draws come from a CPU generator
seeded with ``seed`` and are drawn exactly as the reference draws them from its seeded global generator (uniform
floats turned into signs and window corners, windows and signs shared by the batch), so on the same batch a run
follows the reference's search step for step. Failed samples return the point with the lowest margin found.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.attacks.base import Attack, predict
from robustlab.attacks.l1_box import l1_box_projection
from robustlab.attacks.losses import cw_margin
from robustlab.attacks.registry import register_attack
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel

_P_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # iterations after which p halves
_REFERENCE_BUDGET = 10000  # the budget the schedule was designed for; rescale_schedule maps the query budget onto it
_L1_SHRINK = 1.0 - 1e-6  # L1 projects onto a slightly smaller ball, as the reference does


def p_schedule(it: int, n_queries: int, p_init: float = 0.8, resc_schedule: bool = True) -> float:
    """Fraction of pixels in the window at iteration ``it`` (the reference's ``p_selection``)."""
    if resc_schedule:
        it = int(it / n_queries * _REFERENCE_BUDGET)
    return p_init / 2 ** sum(it > t for t in _P_SCHEDULE)


def _check_count(value: int, name: str) -> int:
    """Require an integer >= 1."""
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _sample_view(t: Tensor) -> Tensor:
    """Reshape (N,) to (N, 1, 1, 1)."""
    return t.view(-1, 1, 1, 1)


def _l2_of(t: Tensor) -> Tensor:
    """Per-sample L2 norm, shaped (N, 1, 1, 1) (summed as the reference sums, for identical floats)."""
    return _sample_view((t**2).view(t.shape[0], -1).sum(-1).sqrt())


def _l1_of(t: Tensor) -> Tensor:
    """Per-sample L1 norm, shaped (N, 1, 1, 1)."""
    return _sample_view(t.abs().view(t.shape[0], -1).sum(dim=-1))


def _rectangles(rows: int, cols: int, power: int) -> Tensor:
    """Nested rectangles weighted 1/(k+1)^power around the centre; unit L2 norm (power 2) or unit L1 norm (4)."""
    delta = torch.zeros(rows, cols)
    r0, c0 = rows // 2, cols // 2
    for k in range(max(r0 + 1, c0 + 1)):
        weight = 1.0 / torch.tensor([[k + 1.0]]) ** power
        delta[max(r0 - k, 0) : min(r0 + k + 1, rows), max(c0 - k, 0) : min(c0 + k + 1, cols)] += weight
    return delta / _unit(delta, power)


@functools.lru_cache(maxsize=256)
def _blob_pattern(s: int, power: int) -> Tensor:
    """The s x s window pattern before its random orientation, computed once per size: an L2 or L1 query would
    otherwise rebuild it, a loop over nested rectangles, at every query. Callers must not write into it."""
    delta = torch.cat((_rectangles(s // 2, s, power), -_rectangles(s - s // 2, s, power)))
    return delta / _unit(delta, power)


def _unit(delta: Tensor, power: int) -> Tensor:
    """The pattern's L2 norm (power 2) or L1 norm (power 4), never exactly zero."""
    total = (delta**2).sum().sqrt() if power == 2 else delta.abs().sum()
    return total.clamp_min(1e-30)


class _Draws:
    """The attack's random numbers, drawn from one CPU generator the way the reference draws them."""

    def __init__(self, seed: int, device: torch.device, dtype: torch.dtype) -> None:
        self.gen = torch.Generator().manual_seed(int(seed))
        self.device, self.dtype = device, dtype

    def signs(self, *shape: int) -> Tensor:
        """Random +-1 of the given shape: ``sign(2u - 1)`` of uniform ``u`` (the reference's ``random_choice``)."""
        t = torch.sign(2 * torch.rand(shape, generator=self.gen) - 1)
        return t.to(device=self.device, dtype=self.dtype)

    def corners(self, *highs: int) -> list[int]:
        """``floor(high * u)`` for each high: uniform in [0, high - 1], 0 when high is 0 (the reference's
        ``random_int(0, high)`` called once per high; one draw of len(highs) uniforms gives the same numbers)."""
        u = torch.rand(len(highs), generator=self.gen)
        return (torch.tensor(highs, dtype=u.dtype) * u).long().tolist()

    def blob(self, s: int, power: int) -> Tensor:
        """The reference's window pattern: +rectangles on one half, -rectangles on the other, random orientation."""
        delta = _blob_pattern(s, power)
        if bool(torch.rand(1, generator=self.gen) > 0.5):
            delta = delta.T
        return delta.to(device=self.device, dtype=self.dtype)


@register_attack("square")
class Square(Attack):
    """``Square(model, threat, queries=5000)``: score-based random search on square windows (L-inf, L2 or L1).

    Uses only forward passes under ``torch.no_grad``; ``restarts`` reruns it on samples still not fooled;
    ``resc_schedule`` rescales the window-size schedule to ``queries`` (AutoAttack passes False).
    """

    forward_only = True

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        seed: int = 0,
        resc_schedule: bool = True,
    ) -> None:
        super().__init__(model, threat)
        if threat.norm not in ("linf", "l2", "l1"):
            raise InputError(f"Square supports the linf, l2 and l1 norms, got {threat.norm!r}")
        self.queries = _check_count(queries, "queries")
        if not 0.0 < float(p_init) <= 1.0:
            raise InputError(f"p_init must lie in (0, 1], got {p_init}")
        self.p_init = float(p_init)
        self.restarts = _check_count(restarts, "restarts")
        self.seed = int(seed)
        if not isinstance(resc_schedule, bool):
            raise InputError(f"resc_schedule must be True or False, got {resc_schedule!r}")
        self.resc_schedule = resc_schedule

    def __repr__(self) -> str:
        return (
            f"Square({self.threat}, queries={self.queries}, p_init={self.p_init}, "
            f"restarts={self.restarts}, seed={self.seed}, resc_schedule={self.resc_schedule})"
        )

    @torch.no_grad()
    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Run ``restarts`` searches on the samples not yet fooled; keep each sample's lowest-margin point."""
        if x.dim() != 4:
            raise InputError(f"Square searches square windows of N x C x H x W images, got shape {tuple(x.shape)}; "
                             "for table rows use APGD or FAB (a 1 x 1 x d view would search one feature per query)")
        targeted = target is not None
        label = target if target is not None else y
        draws = _Draws(self.seed, x.device, x.dtype)
        best = x.clone()
        best_margin, _ = self._margin_and_loss(x, label, targeted)
        for _ in range(self.restarts):
            idx = (best_margin > 0).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x_r, margin_r = self._run(x[idx], label[idx], targeted, draws)
            better = margin_r < best_margin[idx]
            best[idx[better]] = x_r[better]
            best_margin[idx[better]] = margin_r[better]
        return self._within_threat(best, x)

    def _within_threat(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Remove rounding errors: L1's ``x + delta + r`` can leave the box and the ball by ~1e-7 of the summed
        |delta| (float32 cumulative sums, as in the reference). The search keeps the reference's points; the
        returned ones are clipped and, where still over eps, shrunk towards x (both only move them towards x)."""
        x_adv = x_adv.clamp(0.0, 1.0)
        if self.threat.norm != "l1":
            return x_adv
        delta = x_adv - x
        norm = _l1_of(delta)
        shrunk = (x + delta * (self.threat.eps / norm.clamp_min(1e-30))).clamp(0.0, 1.0)
        return torch.where(norm > self.threat.eps, shrunk, x_adv)

    def _margin_and_loss(self, x: Tensor, label: Tensor, targeted: bool) -> tuple[Tensor, Tensor]:
        """The margin (<= 0 once fooled) and the loss the search lowers (the margin; targeted: CE to the target)."""
        logits = predict(self.model, x)
        m = cw_margin(logits, label)  # max_{k != label} z_k - z_label
        if targeted:
            return m, F.cross_entropy(logits.float(), label, reduction="none")
        return -m, -m

    def _p(self, it: int) -> float:
        """Fraction of pixels in the window at iteration ``it``."""
        return p_schedule(it, self.queries, self.p_init, self.resc_schedule)

    def _run(self, x: Tensor, label: Tensor, targeted: bool, draws: _Draws) -> tuple[Tensor, Tensor]:
        """One random search; returns the best points and their margins."""
        init, step = {
            "linf": (self._init_linf, self._step_linf),
            "l2": (self._init_l2, self._step_l2),
            "l1": (self._init_l1, self._step_l1),
        }[self.threat.norm]
        x_best = init(x, draws)
        margin, loss = self._margin_and_loss(x_best, label, targeted)
        # the points still searched, kept compact: they change only when one falls, not at every query
        idx = (margin > 0).nonzero().squeeze(1)
        x_c, xb_c, label_c, margin_c, loss_c = x[idx], x_best[idx], label[idx], margin[idx], loss[idx]
        for it in range(self.queries):
            if idx.numel() == 0:
                break
            x_new = step(x_c, xb_c, self._p(it), draws)
            margin_new, loss_new = self._margin_and_loss(x_new, label_c, targeted)
            lower = loss_new < loss_c
            improved = lower | (margin_new <= 0)
            loss_c = torch.where(lower, loss_new, loss_c)
            margin_c = torch.where(improved, margin_new, margin_c)
            xb_c = torch.where(_sample_view(improved), x_new, xb_c)
            fell = ~(margin_c > 0)
            if bool(fell.any()):  # write the fallen points back and search on without them
                x_best[idx[fell]], margin[idx[fell]] = xb_c[fell], margin_c[fell]
                keep = ~fell
                idx, x_c, xb_c, label_c, margin_c, loss_c = (
                    idx[keep], x_c[keep], xb_c[keep], label_c[keep], margin_c[keep], loss_c[keep])
        x_best[idx], margin[idx] = xb_c, margin_c
        return x_best, margin

    # ----------------------------------------------------------------------------------------- L-inf

    def _init_linf(self, x: Tensor, draws: _Draws) -> Tensor:
        """Vertical stripes: one random sign per sample, channel and column."""
        n, c, _, w = x.shape
        return torch.clamp(x + self.threat.eps * draws.signs(n, c, 1, w), 0.0, 1.0)

    def _step_linf(self, x: Tensor, x_best: Tensor, p: float, draws: _Draws) -> Tensor:
        """Set one square window (position and per-channel sign shared by the batch) to a vertex of the ball.

        Only the window is moved and projected: elsewhere ``x_best`` already lies in the ball and the box (it never
        holds -0.0), where the reference's whole-image projection is the identity, so the floats are its floats."""
        _, c, h, w = x.shape
        eps = self.threat.eps
        s = min(max(int(round(math.sqrt(p * (h * w)))), 1), h, w)
        vh, vw = draws.corners(h - s, w - s)
        win = (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s))
        x_win = x[win]
        moved = x_best[win] + 2.0 * eps * draws.signs(c, 1, 1)
        x_new = x_best.clone()
        x_new[win] = torch.clamp(torch.min(torch.max(moved, x_win - eps), x_win + eps), 0.0, 1.0)
        return x_new

    # ----------------------------------------------------------------------------------------- L2 and L1

    def _blob_grid(self, x: Tensor, power: int, draws: _Draws) -> Tensor:
        """The starting perturbation: a grid of blobs with random signs per sample and channel (unnormalised).

        Sized from the height as in the reference (5 x 5 blobs of side H // 5, centred); blobs that would stick out
        of the image are cut at its edge (where the reference fails)."""
        n, c, h, w = x.shape
        s = max(h // 5, 1)
        start = max((h - 5 * s) // 2, 0)
        delta = torch.zeros_like(x)
        for i in range(h // s):
            for j in range(w // s):
                vh, vw = start + i * s, start + j * s
                blob = draws.blob(s, power).view(1, 1, s, s) * draws.signs(n, c, 1, 1)
                rows, cols = max(min(s, h - vh), 0), max(min(s, w - vw), 0)
                delta[:, :, vh : vh + rows, vw : vw + cols] += blob[:, :, :rows, :cols]
        return delta

    def _init_l2(self, x: Tensor, draws: _Draws) -> Tensor:
        """The blob grid scaled to the eps sphere, clipped to the box."""
        delta = self._blob_grid(x, 2, draws)
        return torch.clamp(x + delta / (_l2_of(delta) + 1e-12) * self.threat.eps, 0.0, 1.0)

    def _init_l1(self, x: Tensor, draws: _Draws) -> Tensor:
        """The L1 blob grid projected onto the L1 ball and the box."""
        delta = self._blob_grid(x, 4, draws)
        return self._onto_l1_box(x, delta)

    def _onto_l1_box(self, x: Tensor, delta: Tensor) -> Tensor:
        """``x + delta`` moved into the (slightly shrunk) L1 ball and the box (up to rounding: see ``perturb``)."""
        r = l1_box_projection(x, delta, self.threat.eps * _L1_SHRINK)
        return (x + delta + r).to(x.dtype)

    def _windows(self, x: Tensor, p: float, draws: _Draws) -> tuple[int, tuple[tuple[slice, ...], ...], Tensor]:
        """Window side, the first window (to refill) and the mask of both windows (the second is emptied)."""
        _, _, h, w = x.shape
        s = max(int(round(math.sqrt(p * (h * w)))), 3)
        s = min(s + 1 - s % 2, h, w)  # odd, as in the reference, unless the image is smaller
        vh, vw, vh2, vw2 = draws.corners(h - s, w - s, h - s, w - s)
        win1 = (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s))
        win2 = (slice(None), slice(None), slice(vh2, vh2 + s), slice(vw2, vw2 + s))
        mask = torch.zeros_like(x)
        mask[win1] = 1.0
        mask[win2] = 1.0
        return s, (win1, win2), mask

    def _step_l2(self, x: Tensor, x_best: Tensor, p: float, draws: _Draws) -> Tensor:
        """Move mass per channel: empty a second window, refill the first with a new blob, keep ||delta|| = eps."""
        n, c = x.shape[:2]
        eps = self.threat.eps
        delta = x_best - x
        s, (win1, win2), mask = self._windows(x, p, draws)
        norm_win1 = (delta[win1] ** 2).sum(dim=(-2, -1), keepdim=True).sqrt()  # per channel
        norm_image = _l2_of(delta)
        norm_windows = ((delta * mask) ** 2).sum(dim=(-2, -1), keepdim=True).sqrt()  # per channel
        # contiguous (the blob may be a transposed view) so sums run in the reference's order: identical floats
        new = (draws.blob(s, 2).view(1, 1, s, s) * draws.signs(n, c, 1, 1)).contiguous()
        new = new + delta[win1] / (1e-12 + norm_win1)
        room = torch.clamp_min(torch.full_like(new, eps) ** 2 - norm_image**2, 0.0) / c + norm_windows**2
        new = new / (1e-12 + (new**2).sum(dim=(-2, -1), keepdim=True).sqrt()) * room.sqrt()
        delta[win2] = 0.0
        delta[win1] = new
        return torch.clamp(x + delta / (_l2_of(delta) + 1e-12) * eps, 0.0, 1.0)

    def _step_l1(self, x: Tensor, x_best: Tensor, p: float, draws: _Draws) -> Tensor:
        """The L1 version of the move (mass per channel, as the reference scales it), then the L1-box projection."""
        n, c = x.shape[:2]
        eps = self.threat.eps
        delta = x_best - x
        s, (win1, win2), mask = self._windows(x, p, draws)
        norm_win1 = delta[win1].abs().sum(dim=(-2, -1), keepdim=True)
        norm_image = _l1_of(delta)
        norm_windows = (delta * mask).abs().sum(dim=(-2, -1), keepdim=True)
        # contiguous (the blob may be a transposed view) so sums run in the reference's order: identical floats
        new = (draws.blob(s, 4).view(1, 1, s, s) * draws.signs(n, c, 1, 1)).contiguous()
        new = new + delta[win1] / (1e-12 + norm_win1)
        room = torch.clamp_min(torch.full_like(norm_image, eps) - norm_image, 0.0) / c + norm_windows
        new = new / (1e-12 + new.abs().sum(dim=(-2, -1), keepdim=True)) * room * c
        delta[win2] = 0.0
        delta[win1] = new
        return self._onto_l1_box(x, delta)
