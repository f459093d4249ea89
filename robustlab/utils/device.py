"""Where tensors live: one resolver for the ``device`` settings of training and evaluation."""

from __future__ import annotations

import os
import warnings

import torch
from torch import nn

from robustlab.core.errors import ConfigError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) is CUDA when available, else the CPU; an explicit CUDA device that is missing is an error.
    Under torchrun each process takes the GPU of its ``LOCAL_RANK``."""
    local_rank = os.environ.get("LOCAL_RANK")  # torchrun: one GPU per process
    if name is None or str(name) in ("auto", "cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda", int(local_rank) if local_rank is not None else torch.cuda.current_device())
        if name is None or str(name) != "cuda":
            return torch.device("cpu")
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
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix kernels run natively on ``device`` (AVX-512-BF16/AMX on a CPU, Ampere+ on CUDA).

    Without them, CPU bf16 autocast is emulated and measured about 10x *slower* than fp32 (AMD EPYC, AVX2).
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def effective_bf16(device: torch.device, requested: bool) -> bool:
    """Whether to run bf16 autocast: as requested, unless the device lacks native bf16 kernels (then a warning).

    bf16 is a speed setting: emulated, it would slow training down about tenfold, so the run falls back to fp32
    (never less accurate) and says so; the trainer records the effective choice in ``metrics.jsonl``.
    """
    if requested and not native_bf16(device):
        warnings.warn(f"bf16 requested, but {device.type} has no native bf16 kernels here (emulated bf16 is ~10x "
                      "slower than fp32): training in fp32 instead", RuntimeWarning, stacklevel=2)
        return False
    return requested


def autocast_context(device: torch.device, enabled: bool) -> torch.autocast:
    """bf16 autocast on the device's type (a disabled context when ``enabled`` is False)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
