"""Checks on tensors crossing the public API, so bad input fails early with a clear message."""

from __future__ import annotations

import torch
from torch import Tensor

from robustlab.core.errors import InputError


def check_images(x: Tensor, name: str = "x") -> None:
    """Require a float batch with finite values in [0, 1]: images N x C x H x W, or table rows N x d."""
    if not isinstance(x, Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputError(
            f"{name} must be a float tensor in [0, 1], got dtype {x.dtype}; "
            "convert uint8 images with x.float() / 255"
        )
    if x.dim() not in (2, 4):
        raise InputError(f"{name} must be a batch of NCHW images (4-D) or of table rows N x d (2-D), got shape "
                         f"{tuple(x.shape)}")
    if x.shape[0] == 0:
        raise InputError(f"{name} is an empty batch (shape {tuple(x.shape)})")
    if not torch.isfinite(x).all():
        raise InputError(f"{name} contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(
            f"{name} must lie in [0, 1] (normalisation belongs inside the model), got range [{lo:.4g}, {hi:.4g}]"
        )


def check_labels(y: Tensor, batch_size: int, num_classes: int | None = None, name: str = "y") -> None:
    """Require integer class labels of shape (N,) and, when known, inside [0, num_classes)."""
    if not isinstance(y, Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise InputError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if y.dim() != 1 or y.shape[0] != batch_size:
        raise InputError(f"{name} must have shape ({batch_size},), got {tuple(y.shape)}")
    if y.numel() and int(y.min()) < 0:
        raise InputError(f"{name} contains negative class indices (min {int(y.min())})")
    if num_classes is not None and y.numel() and int(y.max()) >= num_classes:
        raise InputError(f"{name} contains class {int(y.max())} but the model has only {num_classes} classes")


def check_logits(out: object, batch_size: int) -> Tensor:
    """Require a model output of shape (N, C); tuples and dicts are refused with advice."""
    if isinstance(out, (tuple, list, dict)):
        raise InputError(
            f"the model returned a {type(out).__name__}; attacks need a module returning one logits tensor (N, C). "
            "Wrap it in a module that selects the logits: robustlab.models.SelectOutput(model, 0) returns "
            "model(x)[0] (use the key of the logits for a dict)"
        )
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != batch_size:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise InputError(f"the model must return logits of shape ({batch_size}, num_classes), got {shape}")
    return out


def check_module(model: object) -> None:
    """Require a ``torch.nn.Module``: attacks switch it (and every submodule) to eval mode and its parameters'
    gradients off, which a plain function cannot offer."""
    from torch import nn

    if not isinstance(model, nn.Module):
        raise InputError(
            f"the model must be a torch.nn.Module, got {type(model).__name__}; wrap a model whose output needs "
            "selecting with robustlab.models.SelectOutput(model, 0), or write a small nn.Module around a function"
        )


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> None:
    """Require a finite positive (or non-negative) hyper-parameter."""
    ok = value >= 0 if allow_zero else value > 0
    if not (ok and value == value and value != float("inf")):
        bound = ">= 0" if allow_zero else "> 0"
        raise InputError(f"{name} must be finite and {bound}, got {value}")
