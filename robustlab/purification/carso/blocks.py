"""CARSO's building blocks (spec §1.5): conv/FC/deconv blocks, per-layer compressors, the input pre-encoder,
the joint encoder with its mu/log-variance neck, the reparameterised sampler and decoders per image size; and the
fully connected pre-encoder and decoder that take their place for table rows (N x d) or any flattened input."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustlab.core.errors import InputError


def conv_block(cin: int, cout: int, k: int = 3, s: int = 1, p: int = 0) -> nn.Sequential:
    """Conv2d (no bias) -> BatchNorm2d -> LeakyReLU(0.2)."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, p, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


def fc_block(fin: int, fout: int) -> nn.Sequential:
    """Linear (no bias) -> BatchNorm1d -> LeakyReLU(0.2)."""
    return nn.Sequential(nn.Linear(fin, fout, bias=False), nn.BatchNorm1d(fout), nn.LeakyReLU(0.2))


def deconv_block(cin: int, cout: int, k: int, s: int, p: int, op: int = 0) -> nn.Sequential:
    """ConvTranspose2d (no bias) -> BatchNorm2d -> LeakyReLU(0.2)."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, k, s, p, output_padding=op, bias=False),
                         nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


class LayerCompressor(nn.Module):
    """Compressor of one tapped activation, flattened.

    Feature maps (C, H, W): ``depth`` ConvBlocks C -> ceil(C/2) -> ceil(C/4) -> ..., kernel 3, stride 1, no padding
    (H - 2 per block, as in the released code) while the map stays at least 2 pixels, else padding 1 (small maps of
    MNIST-sized nets would otherwise vanish). Vectors (F,) pass through unchanged (the FC compressor takes them).
    """

    def __init__(self, shape: tuple[int, ...], depth: int = 3) -> None:
        super().__init__()
        self.in_shape = tuple(int(s) for s in shape)
        if len(self.in_shape) == 3:
            c, h, w = self.in_shape
            blocks = []
            for i in range(1, depth + 1):
                cout = math.ceil(self.in_shape[0] / 2**i)
                pad = 0 if min(h, w) - 2 >= 2 else 1
                blocks.append(conv_block(c, cout, 3, 1, pad))
                c, h, w = cout, h - 2 + 2 * pad, w - 2 + 2 * pad
            self.body: nn.Module = nn.Sequential(*blocks)
            self.out_features = c * h * w
        else:
            self.body = nn.Identity()
            self.out_features = math.prod(self.in_shape)

    def forward(self, a: Tensor) -> Tensor:
        """Compressed, flattened activation (N, out_features)."""
        return self.body(a).flatten(1)


class InputPreEncoder(nn.Module):
    """The input compressor: ConvBlock(C -> 6, 3, 2, 1) -> ConvBlock(6 -> 12, 3, 2, 1), flattened (12 x H/4 x W/4)."""

    def __init__(self, channels: int, hw: tuple[int, int]) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_block(channels, 6, 3, 2, 1), conv_block(6, 12, 3, 2, 1))
        h, w = hw
        for _ in range(2):
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        self.out_features = 12 * h * w

    def forward(self, x: Tensor) -> Tensor:
        """Flattened code of the (normalised) input."""
        return self.body(x).flatten(1)


class MLPPreEncoder(nn.Module):
    """The input compressor for rows (or flattened images): FCBlock(F -> width) -> FCBlock(width -> width)."""

    def __init__(self, in_features: int, width: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), fc_block(in_features, width), fc_block(width, width))
        self.out_features = int(width)

    def forward(self, x: Tensor) -> Tensor:
        """Code (N, width) of the (normalised) input."""
        return self.body(x)


class GaussianNeck(nn.Module):
    """Two linear heads, joint -> latent: mu and log sigma^2."""

    def __init__(self, joint_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.mu = nn.Linear(joint_dim, latent_dim)
        self.logvar = nn.Linear(joint_dim, latent_dim)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, log sigma^2)."""
        return self.mu(h), self.logvar(h)


def reparameterise(mu: Tensor, logvar: Tensor) -> Tensor:
    """z = mu + eps * exp(logvar / 2), eps ~ N(0, I): a sample differentiable in mu and logvar."""
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


DECODER_SIZES = ((28, 28), (32, 32), (64, 64))


class Decoder(nn.Module):
    """[z ; c] -> image in [0, 1] (sigmoid), for 28x28 (own design), 32x32 and 64x64 (the released code's)."""

    def __init__(self, in_features: int, channels: int, hw: tuple[int, int]) -> None:
        super().__init__()
        hw = (int(hw[0]), int(hw[1]))
        if hw not in DECODER_SIZES:
            raise InputError(f"CARSO's decoder is built for {', '.join(f'{h}x{w}' for h, w in DECODER_SIZES)} "
                             f"images; got {hw[0]}x{hw[1]}")
        self.out_shape = (channels, *hw)
        if hw == (32, 32):  # 3 -> 5 -> 9 -> 17 -> 33 -> 32
            start, widths = (256, 3), [256, 256, 128, 64, 32]
            ups = [deconv_block(widths[i], widths[i + 1], 3, 2, 1, 0) for i in range(4)]
            head = nn.ConvTranspose2d(32, channels, 2, 1, 1)
        elif hw == (64, 64):  # 4 -> 8 -> 16 -> 32 -> 64
            start, widths = (256, 4), [256, 256, 128, 64, 32]
            ups = [deconv_block(widths[i], widths[i + 1], 3, 2, 1, 1) for i in range(4)]
            head = nn.ConvTranspose2d(32, channels, 3, 1, 1)
        else:  # 7 -> 14 -> 28
            start = (128, 7)
            ups = [deconv_block(128, 64, 4, 2, 1), deconv_block(64, 32, 4, 2, 1)]
            head = nn.ConvTranspose2d(32, channels, 3, 1, 1)
        c0, s0 = start
        self.stem = nn.Sequential(nn.Linear(in_features, c0 * s0 * s0), nn.LeakyReLU(0.2),
                                  nn.Unflatten(1, (c0, s0, s0)))
        self.body = nn.Sequential(*ups, head)

    def logits(self, zc: Tensor) -> Tensor:
        """Pre-sigmoid reconstructions (N, C, H, W): training takes its BCE from these, which never saturates."""
        return self.body(self.stem(zc))

    def forward(self, zc: Tensor) -> Tensor:
        """Reconstructions (N, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.logits(zc))


class MLPDecoder(nn.Module):
    """[z ; c] -> Linear + LeakyReLU -> FCBlock -> Linear -> sigmoid: ``out_shape`` values in [0, 1] (rows: (d,))."""

    def __init__(self, in_features: int, out_shape: tuple[int, ...], width: int = 128) -> None:
        super().__init__()
        self.out_shape = tuple(int(s) for s in out_shape)
        self.body = nn.Sequential(nn.Linear(in_features, width), nn.LeakyReLU(0.2), fc_block(width, width),
                                  nn.Linear(width, math.prod(self.out_shape)), nn.Unflatten(1, self.out_shape))

    def logits(self, zc: Tensor) -> Tensor:
        """Pre-sigmoid reconstructions (N, *out_shape): training takes its BCE from these."""
        return self.body(zc)

    def forward(self, zc: Tensor) -> Tensor:
        """Reconstructions (N, *out_shape) in [0, 1]."""
        return torch.sigmoid(self.logits(zc))
