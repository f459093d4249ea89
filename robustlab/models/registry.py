"""Model registry: ``register_model`` / ``create_model`` / ``list_models``, and dataset facts for building models.

Every model is built for a dataset (channels, image size, classes) and wrapped in ``Normalized`` with the dataset's
mean/std, so callers always feed images in [0, 1]. Names are case-insensitive and ``_`` equals ``-``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import nn

from robustlab.core.errors import ConfigError, InputError, UnknownNameError
from robustlab.core.registry import Registry, normalize_name, unknown_name_message
from robustlab.models.normalized import Normalized

Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, Builder] = {}


@runtime_checkable
class DatasetLike(Protocol):
    """What models need to know about a dataset (``robustlab.data.DatasetInfo`` satisfies it); read-only, so frozen
    dataclasses qualify. ``shape`` is (C, H, W) for images or (d,) for table rows."""

    @property
    def num_classes(self) -> int: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def mean(self) -> tuple[float, ...]: ...

    @property
    def std(self) -> tuple[float, ...]: ...


@dataclass(frozen=True)
class _FallbackInfo:
    name: str
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()


# Used only when robustlab.data is unavailable; robustlab.data.dataset_info is the source of truth.
_FALLBACK: dict[str, _FallbackInfo] = {
    "mnist": _FallbackInfo("mnist", 10, (1, 28, 28), (0.0,), (1.0,)),
    "fashion-mnist": _FallbackInfo("fashion-mnist", 10, (1, 28, 28), (0.0,), (1.0,)),
    "cifar10": _FallbackInfo("cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
}


MODELS: Registry[Builder] = Registry("model", check=callable, expects="a builder function")


def register_model(name: str, *, overwrite: bool = False) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(in_channels, num_classes, image_size, **kwargs) -> nn.Module`` under ``name``.

    The builder returns the bare net (no normalisation); ``image_size`` is an int for square images, else (H, W).
    Keyword options must be explicit keyword parameters so that unknown options are reported clearly. Models defined
    above this layer (CARSO, in ``purification``) are declared in :data:`robustlab.core.registry.PLUGINS`.
    """
    return MODELS.register(name, overwrite=overwrite)


def list_models() -> list[str]:
    """Sorted names of all registered models (plugin models not yet imported included)."""
    return MODELS.names()


def get_builder(name: str) -> Builder:
    """The builder registered under ``name``; ``UnknownNameError`` lists the valid names."""
    return MODELS.get(name)


def resolve_dataset(dataset: str | DatasetLike) -> DatasetLike:
    """Dataset facts from a name (via ``robustlab.data.dataset_info``, else a small built-in table) or an object."""
    if isinstance(dataset, str):
        try:
            from robustlab.data import dataset_info  # optional dependency: models work without it
        except ImportError:
            key = normalize_name(dataset)
            if key not in _FALLBACK:
                raise UnknownNameError(unknown_name_message("dataset", [dataset], sorted(_FALLBACK))) from None
            return _FALLBACK[key]
        return dataset_info(dataset)
    missing = [a for a in ("num_classes", "shape", "mean", "std") if not hasattr(dataset, a)]
    if missing:
        raise InputError(
            f"dataset must be a name or an object with num_classes, shape (C,H,W), mean and std; "
            f"{type(dataset).__name__} lacks {', '.join(missing)}"
        )
    return dataset


def _dataset_name(info: Any) -> str:
    return str(getattr(info, "name", "custom"))


def create_model(name: str, dataset: str | DatasetLike, **kwargs: Any) -> Normalized:
    """Build registered model ``name`` for ``dataset`` and wrap it in ``Normalized`` with the dataset's mean/std."""
    builder = get_builder(name)
    info = resolve_dataset(dataset)
    shape = tuple(int(s) for s in info.shape)
    if len(shape) == 1 and shape[0] >= 1:  # table rows of d features: a 1 x d "image" for the builders
        shape = (1, 1, shape[0])
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"dataset shape must be (C, H, W) or (d,) with positive sizes, got {info.shape}")
    c, h, w = shape
    if len(info.mean) not in (1, c) or len(info.std) != len(info.mean):
        if len(info.shape) == 1:  # tables: the data layer scales every feature to [0, 1]
            raise InputError(f"a table's mean/std must be one shared value each (features are scaled to [0, 1] when "
                             f"read; per-feature normalisation is not supported), got {len(info.mean)} and "
                             f"{len(info.std)} entries")
        raise InputError(f"dataset mean/std must have 1 or {c} entries, got {len(info.mean)} and {len(info.std)}")
    num_classes = int(info.num_classes)
    if num_classes < 1:
        raise InputError(f"dataset num_classes must be >= 1, got {info.num_classes}")
    check_builder_kwargs(name, builder, kwargs)
    net = builder(c, num_classes, h if h == w else (h, w), **kwargs)
    model = Normalized(net, info.mean, info.std, in_channels=c)
    model.model_spec = {"model": MODELS.key(name), "dataset": _dataset_name(info), "kwargs": dict(kwargs)}
    return model


def check_builder_kwargs(name: str, builder: Builder, kwargs: dict[str, Any]) -> None:
    """Refuse options a builder does not take and name the required ones that are missing."""
    params = list(inspect.signature(builder).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    allowed = [p.name for p in params[3:] if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise InputError(
            f"model {MODELS.key(name)!r} does not take option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(allowed) if allowed else '(none)'}"
        )
    required = [p.name for p in params[3:] if p.kind is p.KEYWORD_ONLY and p.default is inspect.Parameter.empty]
    missing = [r for r in required if r not in kwargs]
    if missing:
        raise ConfigError(f"model {MODELS.key(name)!r} needs option(s) {', '.join(missing)} (set them in model.kwargs)")
