"""``Ensemble``: K classifiers whose output is the log of their average softmax (thesis ch.4, f^en = 1/K sum_n f^n).

The output is ``log((1/K) sum_k softmax(f_k(x)))`` computed as ``logsumexp_k(log_softmax(f_k(x))) - log K``: it is a
valid logit vector (softmax of it is the average probability), so every attack and loss in the library treats the
ensemble as one model with a proper cross-entropy. Registered as ``ensemble`` with either
``members: [{name, kwargs}, ...]`` or ``member: name, k: K (, member_kwargs: {...})``, so the trainer, checkpoints
and evaluation serve ensembles unchanged. Helpers reach the members through the ``Normalized`` wrapper:
:func:`as_ensemble`, :func:`member_models` (each member as a model on [0, 1] input) and :func:`member_logits`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.core.errors import ConfigError, InputError
from robustlab.core.registry import normalize_name
from robustlab.models.base import EncoderClassifier
from robustlab.models.registry import check_builder_kwargs, get_builder, register_model


class Ensemble(nn.Module):
    """K member classifiers; ``forward`` = log of the average member softmax, ``member_logits`` = (K, N, C)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ConfigError(f"an ensemble needs at least 2 members, got {len(members)}; "
                              "train a single model instead of an ensemble of one")
        if not all(isinstance(m, nn.Module) for m in members):
            raise InputError("ensemble members must be torch.nn.Module instances")
        classes = [getattr(m, "num_classes", None) for m in members]
        known = {c for c in classes if c is not None}
        if len(known) > 1:
            raise ConfigError(f"ensemble members disagree on the number of classes: {classes}; "
                              "all members must classify the same label set")
        self._num_classes = known.pop() if known else None
        self.members = nn.ModuleList(members)

    @property
    def num_classes(self) -> int:
        """Number of classes shared by the members."""
        if self._num_classes is None:
            raise AttributeError("the ensemble members do not declare num_classes")
        return self._num_classes

    def __len__(self) -> int:
        return len(self.members)

    def member_logits(self, x: Tensor) -> Tensor:
        """Logits of every member, stacked to (K, N, C)."""
        outs = [m(x) for m in self.members]
        shapes = {tuple(o.shape) for o in outs}
        if len(shapes) > 1:
            raise InputError(f"ensemble members returned logits of different shapes {[tuple(o.shape) for o in outs]}; "
                             "all members must take the same input and predict the same number of classes")
        return torch.stack(outs)

    def forward(self, x: Tensor) -> Tensor:
        """log of the mean member softmax, computed stably (logsumexp of log-softmax minus log K)."""
        return log_mean_softmax(self.member_logits(x))


def log_mean_softmax(member_logits: Tensor) -> Tensor:
    """``log(1/K sum_k softmax(z_k))`` for stacked logits (K, N, C), in float32 for stability."""
    log_p = F.log_softmax(member_logits.float(), dim=-1)
    return torch.logsumexp(log_p, dim=0) - math.log(member_logits.shape[0])


# ---------------------------------------------------------------------------------------------------- access
class MemberView(nn.Module):
    """One member as a model on raw [0, 1] input: the ensemble wrapper's normalisation, then the member net.

    Shares the member's parameters (no copy), so attacks on it are white-box attacks on that member alone.
    """

    def __init__(self, net: nn.Module, normalize: Callable[[Tensor], Tensor] | None = None) -> None:
        super().__init__()
        self.net = net
        self._normalize = normalize

    @property
    def num_classes(self) -> int:
        """Number of classes of the member."""
        return cast(EncoderClassifier, self.net).num_classes

    def forward(self, x: Tensor) -> Tensor:
        """Member logits for raw input."""
        return self.net(self._normalize(x) if self._normalize is not None else x)


def _strip(model: nn.Module) -> tuple[nn.Module, Callable[[Tensor], Tensor] | None]:
    """Remove data-parallel / compile wrappers and a ``Normalized`` wrapper; return (inner, normalize or None)."""
    from robustlab.io.fingerprint import unwrap_model
    from robustlab.models.normalized import Normalized

    model = unwrap_model(getattr(model, "module", model))
    if isinstance(model, Normalized):
        return model.net, model.normalize
    return model, None


def is_ensemble(model: nn.Module) -> bool:
    """Whether ``model`` is an :class:`Ensemble`, possibly inside ``Normalized`` / data-parallel wrappers."""
    return isinstance(_strip(model)[0], Ensemble)


def as_ensemble(model: nn.Module, *, who: str = "this method") -> Ensemble:
    """The :class:`Ensemble` inside ``model``; a ConfigError saying how to configure one otherwise."""
    inner, _ = _strip(model)
    if not isinstance(inner, Ensemble):
        raise ConfigError(f"{who} needs an ensemble model (model: {{name: ensemble, kwargs: {{member: mlp, k: 2}}}}), "
                          f"got {type(inner).__name__}")
    return inner


def member_models(model: nn.Module, *, who: str = "this method") -> list[nn.Module]:
    """Each member of the ensemble ``model`` as its own model on [0, 1] input (parameters shared, not copied)."""
    inner, normalize = _strip(model)
    ens = as_ensemble(inner, who=who)
    return [MemberView(m, normalize) for m in ens.members]


def member_logits(model: nn.Module, x: Tensor) -> Tensor:
    """Member logits (K, N, C) of the ensemble ``model`` for raw [0, 1] input ``x``."""
    inner, normalize = _strip(model)
    ens = as_ensemble(inner)
    return ens.member_logits(normalize(x) if normalize is not None else x)


# ---------------------------------------------------------------------------------------------------- registry
def _member_specs(members: Any, member: str | None, k: int | None, member_kwargs: dict | None) -> list[dict]:
    if members is not None and (member is not None or k is not None or member_kwargs):
        raise ConfigError("ensemble: give either 'members: [{name, kwargs}, ...]' or 'member: NAME, k: K', not both")
    if members is None:
        if member is None or k is None:
            raise ConfigError("ensemble: give 'members: [{name, kwargs}, ...]' or 'member: NAME' with 'k: K' (K >= 2)")
        if int(k) != k:
            raise ConfigError(f"ensemble: k must be an integer, got {k!r}")
        members = [{"name": member, "kwargs": dict(member_kwargs or {})} for _ in range(int(k))]
    if not isinstance(members, (list, tuple)):
        raise ConfigError(f"ensemble: members must be a list of {{name, kwargs}}, got {type(members).__name__}")
    specs = []
    for i, spec in enumerate(members):
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or "name" not in spec or set(spec) - {"name", "kwargs"}:
            raise ConfigError(f"ensemble: member {i} must be {{name: MODEL, kwargs: {{...}}}}, got {spec!r}")
        if normalize_name(str(spec["name"])) == "ensemble":
            raise ConfigError(f"ensemble: member {i} is itself an ensemble; nest the members in one flat list instead")
        specs.append({"name": str(spec["name"]), "kwargs": dict(spec.get("kwargs") or {})})
    return specs


@register_model("ensemble")
def ensemble(
    in_channels: int,
    num_classes: int,
    image_size: int | tuple[int, int],
    *,
    members: list[dict[str, Any]] | None = None,
    member: str | None = None,
    k: int | None = None,
    member_kwargs: dict[str, Any] | None = None,
) -> Ensemble:
    """Registry nets built for one dataset: ``members: [{name, kwargs}, ...]`` or ``member`` x ``k``.

    Members are initialised one after another from the global RNG, so identical architectures start different.
    """
    specs = _member_specs(members, member, k, member_kwargs)
    nets = []
    for spec in specs:
        builder = get_builder(spec["name"])
        check_builder_kwargs(spec["name"], builder, spec["kwargs"])
        nets.append(builder(in_channels, num_classes, image_size, **spec["kwargs"]))
    return Ensemble(nets)
