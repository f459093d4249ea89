"""Per-sample attack losses on logits. Each returns shape (N,); attacks ascend them (descend when targeted)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from robustlab.core.errors import UnknownNameError

LossFn = Callable[[Tensor, Tensor], Tensor]


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy per sample."""
    return F.cross_entropy(logits.float(), y, reduction="none")


def cw_margin(logits: Tensor, y: Tensor) -> Tensor:
    """Carlini-Wagner margin: best other logit minus the logit of class y (positive once misclassified)."""
    logits = logits.float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return other - true


def dlr(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of logits ratio (Croce & Hein 2020), shift- and scale-invariant; needs >= 3 classes.

    As in the reference, "is y on top" is read from the sort's own order, so when z_y ties the best other logit
    the other one is still a different class (argmax and sort can disagree on ties, and then z_y - z_y has no
    gradient)."""
    logits = logits.float()
    sorted_logits, order = logits.sort(dim=1)
    true = logits.gather(1, y[:, None]).squeeze(1)
    top_is_true = order[:, -1] == y
    other = torch.where(top_is_true, sorted_logits[:, -2], sorted_logits[:, -1])
    denom = sorted_logits[:, -1] - sorted_logits[:, -3] + 1e-12
    return -(true - other) / denom


LOSSES: dict[str, LossFn] = {"ce": cross_entropy, "cw": cw_margin, "dlr": dlr}


def get_loss(name_or_fn: str | LossFn) -> LossFn:
    """Look up a loss by name, or pass a callable through."""
    if callable(name_or_fn):
        return name_or_fn
    try:
        return LOSSES[name_or_fn]
    except KeyError:
        raise UnknownNameError(f"unknown attack loss {name_or_fn!r}; valid: {', '.join(LOSSES)}") from None
