"""Seeding and rank-independent randomness.

Training reseeds torch's global generator at every step from (seed, epoch, step), so resuming from any
checkpoint replays the exact same random numbers. Under data parallelism each rank holds a contiguous
slice of the global batch; ``sharded_rand`` draws noise for the whole global batch and returns the rank's
slice, so a 2-process run sees the same random starts as a 1-process run.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch

_SHARD = {"world": 1, "rank": 0}


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed derived from its parts by hashing, so nearby inputs give unrelated streams."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def data_shard(world: int, rank: int) -> Iterator[None]:
    """Declare that the current batch is slice ``rank`` of ``world`` equal contiguous slices of a global batch."""
    old = dict(_SHARD)
    _SHARD.update(world=world, rank=rank)
    try:
        yield
    finally:
        _SHARD.update(old)


def sharded_rand(
    shape: Sequence[int], *, dtype: torch.dtype, device: torch.device | str, normal: bool = False
) -> torch.Tensor:
    """``torch.rand`` (or ``randn``) over the local batch that matches the single-process draw for these rows."""
    world, rank = _SHARD["world"], _SHARD["rank"]
    shape = tuple(shape)
    full = (shape[0] * world, *shape[1:])
    draw = torch.randn if normal else torch.rand
    noise = draw(full, dtype=torch.float32).to(device=device, dtype=dtype)
    return noise[rank * shape[0] : (rank + 1) * shape[0]]
