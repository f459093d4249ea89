"""Helpers shared by purification defences: freezing the classifier they protect, and repeated evaluation of a
stochastic defence (mean and worst over several independent passes)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn

from robustlab.attacks.base import attack_mode, predict
from robustlab.core.errors import InputError

_M = TypeVar("_M", bound=nn.Module)


def freeze_classifier(classifier: _M, name: str = "classifier") -> _M:
    """Put ``classifier`` (every submodule) in eval mode with every parameter's gradient off, and warn, naming what
    was wrong, when it was not already so: a purification defence trains only its purifier."""
    training = any(m.training for m in classifier.modules())
    grads = any(p.requires_grad for p in classifier.parameters())
    if training or grads:
        why = " and ".join(w for w, bad in (("in train mode", training), ("with gradients enabled", grads)) if bad)
        warnings.warn(f"the {name} given to a purification defence arrived {why}; it is now frozen "
                      "(eval mode, requires_grad=False)", stacklevel=3)
    classifier.eval()
    classifier.requires_grad_(False)
    return classifier


@dataclass
class RepeatedAccuracy:
    """Accuracy of a stochastic model over ``passes`` independent forward passes on the same points."""

    per_pass: list[float]
    pointwise_worst: float  # a point counts only if it is classified correctly in every pass

    @property
    def mean(self) -> float:
        """Mean accuracy over passes."""
        return sum(self.per_pass) / len(self.per_pass)

    @property
    def worst(self) -> float:
        """Lowest accuracy of any one pass."""
        return min(self.per_pass)

    def to_dict(self) -> dict[str, float | list[float]]:
        """JSON-ready summary."""
        return {"mean": self.mean, "worst": self.worst, "pointwise_worst": self.pointwise_worst,
                "per_pass": self.per_pass}


def repeated_accuracy(
    model: nn.Module, x: Tensor, y: Tensor, *, passes: int = 5, seed: int = 0, batch_size: int = 256
) -> RepeatedAccuracy:
    """Classify ``x`` ``passes`` times with fresh randomness (seeded ``seed + pass``) in eval mode."""
    if isinstance(passes, bool) or int(passes) != passes or passes < 1:
        raise InputError(f"passes must be an integer >= 1, got {passes!r}")
    y = y.to(x.device)
    accs, all_ok = [], torch.ones(len(x), dtype=torch.bool, device=x.device)
    with attack_mode(model):
        for i in range(int(passes)):
            torch.manual_seed(seed + i)
            ok = predict(model, x, batch_size).argmax(1) == y
            accs.append(float(ok.float().mean()))
            all_ok &= ok
    return RepeatedAccuracy(accs, float(all_ok.float().mean()))
