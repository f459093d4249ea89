"""Batch augmentations (random crop with zero padding, horizontal flip), vectorised over the batch.

Written here because torchvision cannot be used. Every function takes an optional ``torch.Generator`` so a
trainer can make augmentation reproducible; without one, torch's global generator is used (which the trainer
reseeds per step). Random draws happen on the generator's device and are then moved to the batch's device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from robustlab.core.errors import InputError, UnknownNameError


def _check_batch(x: Tensor) -> None:
    """Require a 4-D NCHW tensor (any dtype: uint8 and float images both work)."""
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"augmentations take a 4-D NCHW batch, got {shape}")


def _draw_device(generator: torch.Generator | None) -> torch.device:
    """Device the random numbers are drawn on: the generator's, else the CPU (global generator)."""
    return generator.device if generator is not None else torch.device("cpu")


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero-pad each side by ``padding`` and crop back to H x W at a random offset drawn per sample."""
    _check_batch(x)
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise InputError(f"padding must be a non-negative int, got {padding!r}")
    if padding == 0:
        return x.clone()
    n, c, h, w = x.shape
    p = padding
    offsets = torch.randint(0, 2 * p + 1, (n, 2), generator=generator, device=_draw_device(generator)).to(x.device)
    padded = x.new_zeros((n, c, h + 2 * p, w + 2 * p))
    padded[:, :, p : p + h, p : p + w] = x
    rows = offsets[:, 0:1] + torch.arange(h, device=x.device)  # (n, h): padded row read by each output row
    cols = offsets[:, 1:2] + torch.arange(w, device=x.device)  # (n, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


def random_hflip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each sample left-right with probability 1/2, independently per sample."""
    _check_batch(x)
    flip = torch.rand(x.shape[0], generator=generator, device=_draw_device(generator)).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


AUGMENTATIONS: dict[str, Callable[[Tensor, torch.Generator | None], Tensor]] = {
    "crop4": lambda x, g: random_crop(x, 4, g),
    "crop2": lambda x, g: random_crop(x, 2, g),
    "flip": random_hflip,
}


def check_augment_names(names: Sequence[str] | str) -> list[str]:
    """Normalise augmentation names (a list, or one comma-separated string) and refuse unknown ones."""
    if isinstance(names, str):
        names = [part for part in (s.strip() for s in names.split(",")) if part]
    names = list(names)
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise UnknownNameError(
            f"unknown augmentation {', '.join(map(repr, unknown))}; valid names: {', '.join(sorted(AUGMENTATIONS))}"
        )
    return names


def augment(x: Tensor, names: Sequence[str], generator: torch.Generator | None) -> Tensor:
    """Apply the named augmentations in order (names from crop4, crop2, flip; empty: unchanged)."""
    for name in check_augment_names(names):
        x = AUGMENTATIONS[name](x, generator)
    return x
