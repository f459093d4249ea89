"""Several processes under ``torchrun`` (gloo on CPU, nccl on GPU): data-parallel training and sharded evaluation.

Training: gradients are averaged with one coalesced all-reduce after ``backward`` instead of wrapping the model in
DistributedDataParallel: objectives run several forward passes per step (attacks, clean + adversarial terms,
AWP's perturbed weights), which DDP's reducer hooks do not allow. With equal local batches the averaged
gradient equals the single-process gradient of the global mean loss.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """World size and rank of this process (1 and 0 outside torchrun)."""

    world: int = 1
    rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and shows progress."""
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group when launched by torchrun; a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(world=dist.get_world_size(), rank=dist.get_rank())


def average_gradients(model: nn.Module, info: DistInfo) -> None:
    """All-reduce and average parameter gradients across ranks in one flat buffer."""
    if info.world <= 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def broadcast_buffers(model: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, as DDP does."""
    if info.world <= 1:
        return
    for buf in model.buffers():
        dist.broadcast(buf, src=0)


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a few floats across ranks."""
    if info.world <= 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_tensor(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor across ranks (in place; returned for convenience). Sums on the CPU for gloo."""
    if info.world > 1:
        dist.all_reduce(t)
    return t


def current() -> DistInfo:
    """This process's place in an already joined process group (world 1 outside torchrun)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(world=dist.get_world_size(), rank=dist.get_rank())


def shutdown(info: DistInfo) -> None:
    """Leave the process group once every rank got here (a rank exiting with the group alive can abort the others)."""
    if info.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
