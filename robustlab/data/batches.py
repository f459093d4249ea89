"""Minibatches out of an in-memory ``ImageData``: index plans and an iterator yielding float images and labels.

No DataLoader workers: the datasets are small tensors already in memory, so slicing is the fastest loader.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from robustlab.core.errors import InputError
from robustlab.data.registry import ImageData
from robustlab.data.transforms import augment as apply_augment
from robustlab.data.transforms import check_augment_names


def batch_indices(
    n: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> list[Tensor]:
    """Split range(n) (shuffled with ``generator`` when asked) into consecutive index batches."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    if shuffle:
        device = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(n, generator=generator, device=device).cpu()
    else:
        order = torch.arange(n)
    batches = list(order.split(batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def iterate_batches(
    data: ImageData,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    augment: Sequence[str] = (),
    device: torch.device | str | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (float32 images in [0, 1], int64 labels) batches on ``device``, augmented with the named transforms."""
    names = check_augment_names(augment)
    for idx in batch_indices(len(data), batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last):
        x = data.images[idx].to(device) if device is not None else data.images[idx]
        y = data.labels[idx].to(device) if device is not None else data.labels[idx]
        x = x.to(torch.float32).div_(255.0)
        yield (apply_augment(x, names, generator) if names else x), y
