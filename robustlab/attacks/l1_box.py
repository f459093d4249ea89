"""Projection onto the intersection of an L1 ball and the [0, 1] box, as in AutoAttack's ``L1_projection``.

For a centre ``x`` in [0, 1] and a perturbation ``delta`` it returns the correction ``r`` such that
``||delta + r||_1 <= eps`` and ``0 <= x + delta + r <= 1``: every coordinate first moves towards ``x`` until it
is inside the box, then (where the L1 budget is still exceeded) a common threshold, found by a binary search over the
sorted breakpoints, shrinks every coordinate towards ``x`` without leaving the box. Computed in at least float32,
like the reference, so that Square-L1 reproduces it bit for bit on float32 inputs.

Why a second L1-box projection beside the exact one in :func:`robustlab.core.threat.project_l1_box` (which every
gradient attack uses): Square's random search accepts or rejects each candidate on tiny margin differences, so a
projection that differs from the reference's in the last float32 bit changes the search path; with this one
robustlab's Square returns the reference's points exactly (tests/test_square_reference.py). Only Square uses it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def l1_box_projection(x: Tensor, delta: Tensor, eps: float) -> Tensor:
    """The correction ``r`` with ``||delta + r||_1 <= eps`` and ``x + delta + r`` in [0, 1] (per sample)."""
    n = x.shape[0]
    dtype = torch.promote_types(x.dtype, torch.float32)
    xf = x.reshape(n, -1).to(dtype)
    yf = delta.reshape(n, -1).to(dtype)
    d = yf.shape[1]
    sigma = yf.sign()
    upper = torch.minimum(1 - xf - yf, xf + yf).clamp(max=0.0)  # <= 0: the move that brings x + delta into the box
    s1 = -upper.sum(dim=1)
    magnitude = yf.abs()
    slack = eps - magnitude.sum(dim=1)  # the reference's eps + sum(-|y|): the same float (negation is exact)
    rows = (s1 + slack < 0).nonzero().squeeze(1)  # still outside the ball after the box step
    out = upper
    if rows.numel() > 0:  # the breakpoints are sorted for these rows only (Square's are mostly inside already)
        out = upper.clone()
        upper, lower, s1, slack = upper[rows], -magnitude[rows], s1[rows], slack[rows]  # lower: back to x
        bs, order = torch.sort(-torch.cat((upper, lower), 1), dim=1)
        bs2 = torch.cat((bs[:, 1:], bs.new_zeros(rows.numel(), 1)), 1)
        slope = (2 * (order < d).to(dtype) - 1).cumsum(dim=1)
        cum = s1[:, None] + torch.cumsum((bs2 - bs) * slope, dim=1)
        lb = torch.zeros(rows.numel(), dtype=dtype, device=x.device)
        ub = torch.full_like(lb, 2 * d - 1)
        for _ in range(math.ceil(math.log2(2 * d))):
            mid = torch.floor((lb + ub) / 2)
            below = cum.gather(1, mid.long()[:, None]).squeeze(1) + slack < 0
            lb = torch.where(below, mid, lb)
            ub = torch.where(below, ub, mid)
        k = lb.long()[:, None]
        alpha = (-cum.gather(1, k).squeeze(1) - slack) / slope.gather(1, k + 1).squeeze(1) + bs2.gather(1, k).squeeze(1)
        out[rows] = -torch.minimum(torch.maximum(-upper, alpha[:, None]), -lower)
    return (sigma * out).view(x.shape)
