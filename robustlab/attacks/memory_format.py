"""A model's 4-D weights in channels-last layout for the duration of an attack run.

On these CPUs oneDNN's channels-last convolutions make the forward pass of the small MNIST CNN about 0.8x as long
as in the default layout, while a forward + backward pass is not faster (about 1.05x): so AutoAttack uses the
layout for its forward-only attacks (Square). The logits agree to rounding (about 1e-7). Values are never changed,
only their layout, and the original layout is restored on exit; the same tensor objects are kept, so an optimizer
holding them is unaffected.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain

import torch
from torch import Tensor, nn

from robustlab.attacks.base import attack_mode, predict

logger = logging.getLogger(__name__)

_PROBE_RTOL, _PROBE_ATOL = 1e-4, 1e-4  # logits of the two layouts must agree this closely on the probe batch


def _four_d(model: nn.Module) -> list[Tensor]:
    """The model's 4-D parameters and buffers: the ones a memory format applies to."""
    return [t for t in chain(model.parameters(), model.buffers()) if t.dim() == 4]


def _convertible(weights: list[Tensor]) -> bool:
    """Some 4-D weights, all in the default layout (a model the user put in another layout is left as it is)."""
    return bool(weights) and all(t.is_contiguous() for t in weights)


def channels_last_helps(model: nn.Module, x: Tensor) -> bool:
    """The default for ``channels_last=None``: CPU image batches through a model whose 4-D weights can be converted."""
    return x.dim() == 4 and x.device.type == "cpu" and _convertible(_four_d(model))


def _set_layout(weights: list[Tensor], layout: torch.memory_format) -> None:
    """Re-lay each tensor's data out in ``layout``, in place (the same tensor objects, the same values)."""
    for t in weights:
        t.data = t.data.contiguous(memory_format=layout)


@contextmanager
def channels_last(model: nn.Module, probe: Tensor, enabled: bool = True) -> Iterator[bool]:
    """Inside, the model's 4-D weights are channels-last (yields True) when ``enabled`` and the model gives the same
    logits on ``probe`` in both layouts; otherwise nothing changes (yields False, with the reason logged)."""
    weights = _four_d(model)
    if not enabled or not _convertible(weights):
        yield False  # nothing to convert, or a layout the user chose: left as it is
        return
    devices = [probe.device] if probe.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), attack_mode(model):  # a random model's draws are left untouched
        before = predict(model, probe)
    _set_layout(weights, torch.channels_last)
    try:
        try:
            with torch.random.fork_rng(devices=devices), attack_mode(model):
                after = predict(model, probe)
            same = after.shape == before.shape and torch.allclose(after, before, rtol=_PROBE_RTOL, atol=_PROBE_ATOL)
            reason = "its logits differ between the layouts"
        except RuntimeError as exc:  # e.g. a .view() that needs the default layout
            same, reason = False, f"its forward failed in that layout ({exc})"
        if not same:
            logger.info("channels-last weights not used: %s", reason)
            _set_layout(weights, torch.contiguous_format)
        yield same
    finally:
        _set_layout(weights, torch.contiguous_format)
