"""Purifiers sized for 28x28 and 32x32 images: a two-stage gated-convolution inpainting generator with an
SN-PatchGAN discriminator (a small DeepFillv2, the GAN purifier AToP fine-tunes) and a masked autoencoder.

Every purifier takes the masked image and its mask and returns its stage outputs in [0, 1] via
``forward_stages(x_masked, mask)`` (the last stage is the purified image). Outputs are sigmoid images in [0, 1], the
classifier's input range, which avoids the released notebooks' [-1, 1] range mix-up (spec §4.17). No BatchNorm, so
train and eval mode compute the same function and attacks see the trained purifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from robustlab.core.errors import InputError, UnknownNameError

PURIFIERS = ("gan", "ae")


def _shape(image_shape: Sequence[int], multiple: int) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"image_shape must be (C, H, W), got {image_shape!r}")
    if shape[1] % multiple or shape[2] % multiple:
        raise InputError(f"this purifier needs H and W divisible by {multiple}, got {shape[1]}x{shape[2]}")
    return shape


class Purifier(nn.Module):
    """Base of the AToP networks: remembers the image shape it was built for and refuses others clearly."""

    kind = ""
    image_shape: tuple[int, int, int]

    def check(self, x_masked: Tensor, mask: Tensor) -> None:
        """Raise ``InputError`` unless ``x_masked`` is N x C x H x W of the built shape and ``mask`` N x 1 x H x W."""
        c, h, w = self.image_shape
        if x_masked.dim() != 4 or tuple(x_masked.shape[1:]) != self.image_shape:
            raise InputError(f"this {self.kind} purifier was built for {c}x{h}x{w} images, got "
                             f"{'x'.join(map(str, x_masked.shape[1:]))}; build (or load) one for this dataset")
        if tuple(mask.shape) != (x_masked.shape[0], 1, h, w):
            raise InputError(f"mask must have shape ({x_masked.shape[0]}, 1, {h}, {w}), got {tuple(mask.shape)}")

    def output_convs(self) -> list[nn.Conv2d]:
        """The convolutions whose outputs go through the final sigmoid (one per stage)."""
        raise NotImplementedError

    @torch.no_grad()
    def start_at_mean(self, channel_mean: Tensor) -> None:
        """Set each output convolution's bias to logit(per-channel pixel mean), so the untrained purifier starts at
        the data's mean image. From the default start (sigmoid(0) = 0.5) the first Adam steps push every pixel of
        mostly-black MNIST the same way into sigmoid saturation, where the gradient vanishes for good: an MNIST
        purifier then output black images (MSE stuck at 0.11, classifier accuracy 14%); started at the mean it
        trains (accuracy 91% after 150 steps, measured)."""
        logit = torch.logit(channel_mean.float().clamp(0.02, 0.98))
        for conv in self.output_convs():
            assert conv.bias is not None  # every output convolution is built with a bias
            conv.bias.copy_(logit.to(conv.bias))

    def forward_stages(self, x_masked: Tensor, mask: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def forward(self, x_masked: Tensor, mask: Tensor) -> Tensor:
        """The purified image (the last stage)."""
        return self.forward_stages(x_masked, mask)[-1]


class GatedConv(nn.Module):
    """Gated convolution (Yu et al. 2019, DeepFillv2): ``ELU(conv_f(x)) * sigmoid(conv_g(x))``."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, 2 * cout, k, stride, padding=dilation * (k - 1) // 2, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:
        feat, gate = self.conv(x).chunk(2, dim=1)
        return nn.functional.elu(feat) * torch.sigmoid(gate)


def _last_conv(stage: nn.Sequential) -> nn.Conv2d:
    """The output convolution that ends ``stage``."""
    conv = stage[-1]
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"a purifier stage must end in a Conv2d, this one ends in {type(conv).__name__}")
    return conv


def _stage(cin: int, width: int, cout: int) -> nn.Sequential:
    """One coarse or refinement stage: down once, dilated context, up once (H and W must be even)."""
    w2 = 2 * width
    return nn.Sequential(
        GatedConv(cin, width, 5), GatedConv(width, w2, 3, stride=2), GatedConv(w2, w2, 3, dilation=2),
        GatedConv(w2, w2, 3, dilation=4), GatedConv(w2, w2, 3), nn.Upsample(scale_factor=2, mode="nearest"),
        GatedConv(w2, width, 3), nn.Conv2d(width, cout, 3, padding=1),
    )


class InpaintGenerator(Purifier):
    """Two-stage inpainter: input ``[x_masked, ones, mask]`` as DeepFillv2; stage 2 refines stage 1 pasted into
    the holes. No contextual attention (the images are 28-32 px; the released 256-px model has it)."""

    kind = "gan"

    def __init__(self, image_shape: Sequence[int], width: int = 32) -> None:
        super().__init__()
        self.image_shape = _shape(image_shape, 2)
        c = self.image_shape[0]
        self.width = int(width)
        self.coarse = _stage(c + 2, self.width, c)
        self.refine = _stage(c + 2, self.width, c)

    def output_convs(self) -> list[nn.Conv2d]:
        return [_last_conv(self.coarse), _last_conv(self.refine)]

    def forward_stages(self, x_masked: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(stage1, stage2)``, both in [0, 1]; the L1 loss applies to both (as in the released code)."""
        self.check(x_masked, mask)
        ones = torch.ones_like(mask)
        s1 = torch.sigmoid(self.coarse(torch.cat([x_masked, ones, mask], dim=1)))
        pasted = s1 * mask + x_masked * (1 - mask)
        s2 = torch.sigmoid(self.refine(torch.cat([pasted, ones, mask], dim=1)))
        return s1, s2


class PatchDiscriminator(Purifier):
    """SN-PatchGAN: spectrally normalised stride-2 convolutions on ``[image, mask]``; one score per patch."""

    kind = "discriminator"

    def __init__(self, image_shape: Sequence[int], width: int = 32) -> None:
        super().__init__()
        self.image_shape = _shape(image_shape, 1)
        c = self.image_shape[0]
        sn = nn.utils.parametrizations.spectral_norm
        w = int(width)
        self.net = nn.Sequential(
            sn(nn.Conv2d(c + 1, w, 5, 2, 2)), nn.LeakyReLU(0.2), sn(nn.Conv2d(w, 2 * w, 5, 2, 2)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(2 * w, 2 * w, 5, 2, 2)), nn.LeakyReLU(0.2), sn(nn.Conv2d(2 * w, 1, 3, 1, 1)),
        )

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        """Patch scores, flattened to N x P."""
        self.check(image, mask)
        return self.net(torch.cat([image, mask], dim=1)).flatten(1)


class AEPurifier(Purifier):
    """Convolutional masked autoencoder: input ``[x_masked, mask]``, two stride-2 downsamplings (H, W divisible
    by 4), output the whole image. Stands in for the AE purifier of the paper (Wu et al. 2023), whose code is not
    released (spec §4.19)."""

    kind = "ae"

    def __init__(self, image_shape: Sequence[int], width: int = 32) -> None:
        super().__init__()
        self.image_shape = _shape(image_shape, 4)
        c, w = self.image_shape[0], int(width)
        self.width = w
        self.encoder = nn.Sequential(
            nn.Conv2d(c + 1, w, 3, 1, 1), nn.ReLU(), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(w, c, 3, 1, 1),
        )

    def output_convs(self) -> list[nn.Conv2d]:
        return [_last_conv(self.decoder)]

    def forward_stages(self, x_masked: Tensor, mask: Tensor) -> tuple[Tensor]:
        """``(reconstruction,)`` in [0, 1]."""
        self.check(x_masked, mask)
        return (torch.sigmoid(self.decoder(self.encoder(torch.cat([x_masked, mask], dim=1)))),)


def build_purifier(kind: str, image_shape: Sequence[int], *, width: int = 32) -> Purifier:
    """``"gan"`` (InpaintGenerator) or ``"ae"`` (AEPurifier) for images of ``image_shape`` (C, H, W)."""
    key = str(kind).strip().lower()
    if key == "gan":
        return InpaintGenerator(image_shape, width)
    if key == "ae":
        return AEPurifier(image_shape, width)
    raise UnknownNameError(f"unknown purifier {kind!r}; valid: {', '.join(PURIFIERS)}")


__all__ = ["PURIFIERS", "AEPurifier", "GatedConv", "InpaintGenerator", "PatchDiscriminator", "build_purifier"]
