"""Intrinsic dimension by TwoNN (Facco, d'Errico, Rodriguez, Laio 2017, Sci. Rep. 7:12140), per point cloud and per
layer of a network (as Ansuini et al. 2019 measure representations).

For each point, mu = r2 / r1 (distances to its second and first nearest neighbours) follows a Pareto law
P(mu) = d mu^-(d+1) on a locally uniform d-dimensional manifold, so -log(1 - F(mu)) = d log mu. TwoNN sorts mu,
takes the empirical F(mu_i) = i / N, drops the largest ``discard_fraction`` (the paper's 10%: the tail is noisy and
the last point has log 0) and fits the line through the origin by least squares. Points with a duplicate
(r1 = 0) are removed first, as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from robustlab.core.errors import InputError
from robustlab.purification.carso.representation import RepresentationExtractor


def twonn_ratios(points: Tensor) -> Tensor:
    """mu = r2 / r1 for every point of ``points`` (N, ...) flattened to vectors, in float64; duplicates dropped."""
    if points.dim() < 2 or points.shape[0] < 3:
        raise InputError(f"TwoNN needs at least 3 points as an (N, ...) tensor, got shape {tuple(points.shape)}")
    flat = points.detach().reshape(points.shape[0], -1).double()
    dist = torch.cdist(flat, flat)
    dist.fill_diagonal_(float("inf"))
    r = dist.topk(2, dim=1, largest=False).values
    keep = r[:, 0] > 0
    return r[keep, 1] / r[keep, 0]


def twonn(points: Tensor, discard_fraction: float = 0.1) -> float:
    """TwoNN intrinsic dimension of the point cloud ``points`` (N, ...): the slope of -log(1 - F(mu)) on log mu."""
    if not 0 <= discard_fraction < 1:
        raise InputError(f"discard_fraction must be in [0, 1), got {discard_fraction!r}")
    mu = twonn_ratios(points).sort().values
    n = len(mu)
    keep = int(n * (1 - discard_fraction))
    keep = min(keep, n - 1)  # the last point has F = 1: log(0)
    if keep < 2:
        raise InputError(f"TwoNN needs at least 3 distinct points, got {n} usable ones")
    f = torch.arange(1, keep + 1, dtype=torch.float64) / n
    x, y = torch.log(mu[:keep]), -torch.log1p(-f)
    denom = float((x * x).sum())
    if denom <= 0:
        raise InputError("TwoNN is undefined here: every point's two nearest neighbours are equally far")
    return float((x * y).sum()) / denom


def layer_intrinsic_dims(
    model: nn.Module, x: Tensor, layers: Sequence[str], *, forward: Callable[[Tensor], Tensor] | None = None,
    discard_fraction: float = 0.1,
) -> dict[str, float]:
    """TwoNN intrinsic dimension of the activations of each of ``layers`` of ``model`` on the batch ``x``."""
    acts, _ = RepresentationExtractor(model, list(layers)).extract(x, keep_graph=False, forward=forward)
    return {name: twonn(a, discard_fraction) for name, a in zip(dict.fromkeys(layers), acts)}
