"""AToP random transforms (Lin et al. 2024, §3.1): block masks on a grid, optionally after Gaussian noise.

* ``rt1``: one random block mask m (1 = missing); the purifier sees ``(1 - m) * x`` and m.
* ``rt2``: Gaussian noise ``clip(x + sigma * n, 0, 1)``, then the same block mask.
* ``rt3``: the noise of RT2, then ``num_masks`` disjoint block masks that partition the whole grid; the purifier
  inpaints each and the inpainted pixels of every region are combined (one purifier pass per mask).

Defaults follow the released notebooks scaled to the datasets' native resolution: the notebooks use 32-px blocks on
256x256 images (an 8x8 grid), missing rate 0.25 and sigma 0.25; at 32x32 that grid is 4-px blocks, used here for
28x28 too (a 7x7 grid). RT1/RT2 mask ``round(missing_rate * blocks)`` blocks (16 of 64 on CIFAR-10, 12 of 49 on
MNIST). RT3 groups differ in size by at most one block (4 x 16 of 64 as in the notebook). The notebooks share one
mask across a batch; ``per_sample=True`` (the default: the paper does not say) draws one per image, which also keeps
an attack's result independent of how points are batched.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustlab.core.errors import InputError, UnknownNameError

TRANSFORMS = ("rt1", "rt2", "rt3")


class RandomTransform:
    """``RandomTransform("rt2", block_size=4, missing_rate=0.25, noise_std=0.25)``: draws masks and noise.

    Randomness comes from torch's global generator on the input's device, so a seeded step replays exactly.
    """

    def __init__(
        self,
        name: str,
        *,
        block_size: int = 4,
        missing_rate: float = 0.25,
        noise_std: float = 0.25,
        num_masks: int = 4,
        per_sample: bool = True,
    ) -> None:
        key = str(name).strip().lower()
        if key not in TRANSFORMS:
            raise UnknownNameError(f"unknown random transform {name!r}; valid: {', '.join(TRANSFORMS)}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise InputError(f"block_size must be an int >= 1 (pixels), got {block_size!r}")
        if not (isinstance(missing_rate, (int, float)) and 0.0 < float(missing_rate) < 1.0):
            raise InputError(f"missing_rate (the fraction of blocks masked) must lie in (0, 1), got {missing_rate!r}")
        if not (isinstance(noise_std, (int, float)) and float(noise_std) >= 0.0):
            raise InputError(f"noise_std must be a number >= 0, got {noise_std!r}")
        if key == "rt2" and float(noise_std) == 0.0:
            raise InputError("rt2 is noise then mask: noise_std must be > 0 (use rt1 for a mask alone)")
        if isinstance(num_masks, bool) or not isinstance(num_masks, int) or num_masks < 2:
            raise InputError(f"num_masks (rt3's disjoint masks) must be an int >= 2, got {num_masks!r}")
        self.name, self.block_size, self.missing_rate = key, block_size, float(missing_rate)
        self.noise_std = 0.0 if key == "rt1" else float(noise_std)
        self.num_masks, self.per_sample = num_masks, bool(per_sample)

    def __repr__(self) -> str:
        extra = f", num_masks={self.num_masks}" if self.name == "rt3" else f", missing_rate={self.missing_rate}"
        return (f"RandomTransform({self.name!r}, block_size={self.block_size}{extra}, noise_std={self.noise_std}, "
                f"per_sample={self.per_sample})")

    def describe(self) -> dict[str, object]:
        """Plain data written into results and checkpoints."""
        return {"name": self.name, "block_size": self.block_size, "missing_rate": self.missing_rate,
                "noise_std": self.noise_std, "num_masks": self.num_masks, "per_sample": self.per_sample}

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Blocks per column and row; the image must tile exactly."""
        b = self.block_size
        if height % b or width % b:
            raise InputError(f"block_size {b} does not tile {height}x{width} images; choose a divisor of both")
        gh, gw = height // b, width // b
        if gh * gw < 2:
            raise InputError(f"block_size {b} leaves fewer than 2 blocks on {height}x{width} images")
        if self.name == "rt3" and self.num_masks > gh * gw:
            raise InputError(f"rt3 needs num_masks <= the {gh * gw} blocks of the grid, got {self.num_masks}")
        return gh, gw

    def blocks_missing(self, n_blocks: int) -> int:
        """How many blocks RT1/RT2 mask: the nearest count to ``missing_rate * n_blocks``, at least 1, not all."""
        return min(max(round(self.missing_rate * n_blocks), 1), n_blocks - 1)

    def sample_masks(self, x: Tensor) -> Tensor:
        """Masks ``(K, B, 1, H, W)`` in {0, 1} (1 = missing): K = 1 for rt1/rt2, ``num_masks`` disjoint for rt3."""
        if x.dim() != 4:
            raise InputError(f"expected an N x C x H x W batch, got shape {tuple(x.shape)}")
        batch, _, height, width = x.shape
        gh, gw = self.grid(height, width)
        n = gh * gw
        draws = batch if self.per_sample else 1
        order = torch.rand(draws, n, device=x.device).argsort(dim=1)  # a uniform random permutation per draw
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=x.device).expand(draws, n))
        if self.name == "rt3":  # position p in the permutation -> group floor(p K / n): a partition, sizes +-1
            group = rank * self.num_masks // n
            blocks = torch.stack([(group == k) for k in range(self.num_masks)])
        else:
            blocks = (rank < self.blocks_missing(n)).unsqueeze(0)
        masks = blocks.to(x.dtype).view(blocks.shape[0], draws, 1, gh, gw)
        masks = masks.repeat_interleave(self.block_size, dim=3).repeat_interleave(self.block_size, dim=4)
        return masks.expand(-1, batch, -1, -1, -1) if draws == 1 and batch > 1 else masks

    def add_noise(self, x: Tensor) -> Tensor:
        """``clip(x + noise_std * N(0, 1), 0, 1)`` for rt2/rt3; ``x`` unchanged for rt1."""
        if self.noise_std == 0.0:
            return x
        return (x + self.noise_std * torch.randn_like(x)).clamp(0.0, 1.0)


__all__ = ["TRANSFORMS", "RandomTransform"]
