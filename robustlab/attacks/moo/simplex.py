"""Simplex helpers for multi-objective attacks: Euclidean projection, user weight checks and the MGDA min-norm
solver (closed form for 2 tasks, Frank-Wolfe or projected gradient for K tasks).

All functions are batched: weights are (B, m) and Gram matrices (B, m, m), one problem per sample or group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from robustlab.core.errors import InputError

MinNormMethod = Literal["exact", "frank-wolfe", "projected"]
MIN_NORM_METHODS: tuple[str, ...] = ("exact", "frank-wolfe", "projected")


def project_simplex(v: Tensor, mask: Tensor | None = None) -> Tensor:
    """Euclidean projection of each row of ``v`` (B, m) onto the simplex over the coordinates where ``mask``
    is True (all when None); the other coordinates become 0. Sort-based (Duchi et al. 2008; TA-MOO Lemma 1)."""
    if mask is None:
        mask = torch.ones_like(v, dtype=torch.bool)
    if bool((mask.sum(dim=1) == 0).any()):
        raise InputError("project_simplex: a row has no free coordinate (the simplex over no tasks is empty)")
    n_free = mask.sum(dim=1, keepdim=True)
    u, _ = torch.where(mask, v, torch.full_like(v, float("-inf"))).sort(dim=1, descending=True)
    ar = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype).expand_as(v)
    valid = ar <= n_free
    css = torch.where(valid, u, torch.zeros_like(u)).cumsum(dim=1)
    cond = valid & (u + (1.0 - css) / ar > 0)
    rho = (cond.to(v.dtype) * ar).amax(dim=1, keepdim=True)  # last index (1-based) where cond holds
    gamma = (1.0 - css.gather(1, rho.long() - 1)) / rho
    return torch.where(mask, (v + gamma).clamp_min(0.0), torch.zeros_like(v))


def check_task_weights(weights: Sequence[float] | Tensor, m: int, name: str = "task weights", atol: float = 1e-6
                       ) -> Tensor:
    """Validate user-given task weights: length ``m``, non-negative, summing to 1 (within ``atol``)."""
    w = torch.as_tensor(weights, dtype=torch.float64).flatten()
    if w.numel() != m:
        raise InputError(f"{name}: expected {m} weights (one per task), got {w.numel()}")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise InputError(f"{name} must be finite and >= 0, got {w.tolist()}")
    if abs(float(w.sum()) - 1.0) > atol:
        raise InputError(f"{name} must sum to 1 (a point of the simplex), got sum {float(w.sum()):.6g} for "
                         f"{w.tolist()}; divide by the sum if you meant relative weights")
    return w.float()


def min_norm_2(q: Tensor) -> Tensor:
    """Closed-form MGDA weights for 2 tasks from Gram matrices (B, 2, 2): argmin_{w in simplex} w^T Q w.

    w_1 = clip((Q22 - Q12) / (Q11 + Q22 - 2 Q12), 0, 1); when both gradients coincide any w is optimal (0.5)."""
    if q.shape[-2:] != (2, 2):
        raise InputError(f"min_norm_2 needs 2x2 Gram matrices, got shape {tuple(q.shape)}")
    q11, q22, q12 = q[:, 0, 0], q[:, 1, 1], q[:, 0, 1]
    denom = q11 + q22 - 2 * q12
    w1 = torch.where(denom > 1e-12 * (q11 + q22).clamp_min(1e-30), (q22 - q12) / denom.clamp_min(1e-30),
                     torch.full_like(q11, 0.5)).clamp(0.0, 1.0)
    return torch.stack([w1, 1 - w1], dim=1)


def _frank_wolfe(q: Tensor, max_iter: int, tol: float) -> Tensor:
    """Frank-Wolfe as Sener & Koltun (2018) use it for MGDA, in its pairwise form (mass moves from the worst active
    vertex to the best one, exact line search), which converges linearly on the simplex where plain FW zigzags."""
    b, m = q.shape[:2]
    w = torch.full((b, m), 1.0 / m, dtype=q.dtype, device=q.device)
    idx = torch.arange(b, device=q.device)
    for _ in range(max_iter):
        qw = torch.einsum("bij,bj->bi", q, w)
        t = qw.argmin(dim=1)
        a = torch.where(w > 0, qw, torch.full_like(qw, float("-inf"))).argmax(dim=1)
        slope = qw[idx, t] - qw[idx, a]  # d^T Q w for d = e_t - e_a (<= 0)
        curv = q[idx, t, t] + q[idx, a, a] - 2 * q[idx, t, a]
        step = torch.where(curv > 1e-30, -slope / curv.clamp_min(1e-30), w[idx, a])
        step = torch.minimum(step.clamp_min(0.0), w[idx, a])
        new = w.clone()
        new[idx, t] += step
        new[idx, a] -= step
        done = (new - w).abs().amax() < tol
        w = new
        if bool(done):
            break
    return w


def _projected(q: Tensor, max_iter: int, tol: float) -> Tensor:
    """Projected gradient descent on w^T Q w with step 1 / (2 lambda_max(Q)) (monotone, linear rate)."""
    b, m = q.shape[:2]
    w = torch.full((b, m), 1.0 / m, dtype=q.dtype, device=q.device)
    lip = 2 * torch.linalg.eigvalsh(0.5 * (q + q.transpose(1, 2)))[:, -1].clamp_min(1e-30)
    for _ in range(max_iter):
        grad = 2 * torch.einsum("bij,bj->bi", q, w)
        new = project_simplex(w - grad / lip[:, None])
        done = (new - w).abs().amax() < tol
        w = new
        if bool(done):
            break
    return w


def min_norm_weights(q: Tensor, method: MinNormMethod = "exact", max_iter: int = 1000, tol: float = 1e-10) -> Tensor:
    """MGDA min-norm weights argmin_{w in simplex} w^T Q w for Gram matrices ``q`` (B, m, m).

    ``exact``: the closed form for m = 2, projected gradient otherwise; ``frank-wolfe`` (pairwise Frank-Wolfe, as
    Sener & Koltun 2018 solve MGDA) and ``projected`` force that solver. Computed in float64, returned in q's dtype."""
    if method not in MIN_NORM_METHODS:
        raise InputError(f"unknown min-norm method {method!r}; valid: {', '.join(MIN_NORM_METHODS)}")
    if q.dim() != 3 or q.shape[1] != q.shape[2]:
        raise InputError(f"Gram matrices must have shape (B, m, m), got {tuple(q.shape)}")
    q64 = q.double()
    m = q.shape[1]
    if m == 1:
        return torch.ones(q.shape[0], 1, dtype=q.dtype, device=q.device)
    if method == "exact" and m == 2:
        w = min_norm_2(q64)
    elif method == "frank-wolfe":
        w = _frank_wolfe(q64, max_iter, tol)
    else:
        w = _projected(q64, max_iter, tol)
    return w.to(q.dtype)
