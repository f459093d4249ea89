"""Where tensors live: one resolver for the ``device`` settings of training and evaluation."""

from __future__ import annotations

import torch
from torch import nn

from robustlab.errors import ConfigError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) is CUDA when available, else the CPU; an explicit CUDA device that is missing is an error."""
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but this PyTorch build sees no CUDA device; use cpu or auto")
    return device


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer; the CPU for a model with neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def autocast_context(device: torch.device, enabled: bool) -> torch.autocast:
    """bf16 autocast on the device's type (a disabled context when ``enabled`` is False)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
