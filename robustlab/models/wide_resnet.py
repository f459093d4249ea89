"""WideResNet (Zagoruyko & Komodakis 2016) as used by Madry/TRADES/MART: "wide-resnet", "wrn-34-10", "wrn-28-10".

conv3x3(16), three groups of n = (depth-4)/6 pre-activation blocks (16k, 32k, 64k channels; stride 2 at groups 2
and 3), final BN + ReLU, global average pooling, FC. Layer and parameter names follow the widely used xternalz /
TRADES / RobustBench code (without TRADES's unused ``sub_block1``): ``conv1``, ``block1.layer.0.bn1`` ..
``block3.layer.{n-1}.conv2``, ``block{g}.layer.0.convShortcut``, ``bn1``, ``relu``, ``pool``, ``flatten``
(latent and penultimate, 64k-d), ``fc``.
Init (as in that code): convs N(0, sqrt(2 / (k*k*out_channels))), BN weight 1 / bias 0, FC bias 0.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from robustlab.core.errors import InputError
from robustlab.models.base import ClassifierNet, check_dropout
from robustlab.models.registry import register_model


class WideBasic(nn.Module):
    """Pre-activation wide block; when the shape changes, the shortcut is a 1x1 conv of the activated input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equalInOut = in_planes == out_planes and stride == 1
        self.convShortcut = (
            None if self.equalInOut else nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Residual wide block (no in-place ops)."""
        act = self.relu1(self.bn1(x))
        out = self.conv1(act)
        out = self.conv2(self.dropout(self.relu2(self.bn2(out))))
        return out + (x if self.convShortcut is None else self.convShortcut(act))


class NetworkBlock(nn.Module):
    """A group of ``n`` wide blocks (attribute ``layer`` keeps the reference parameter names)."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        blocks = [
            WideBasic(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, dropout)
            for i in range(n)
        ]
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the group."""
        return self.layer(x)


class WideResNet(ClassifierNet):
    """WRN-depth-widen_factor with adaptive global pooling (any input size)."""

    latent_layer = "flatten"
    penultimate_layer = "flatten"

    def __init__(
        self, in_channels: int, num_classes: int, depth: int = 34, widen_factor: int = 10, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise InputError(f"wide-resnet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, 40), got {depth}")
        if int(widen_factor) != widen_factor or widen_factor < 1:
            raise InputError(f"widen_factor must be a positive integer, got {widen_factor}")
        dropout = check_dropout(dropout)
        n, k = (depth - 4) // 6, int(widen_factor)
        widths = [16, 16 * k, 32 * k, 64 * k]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, dropout)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, dropout)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[3], num_classes)
        self.latent_dim, self.num_classes = widths[3], num_classes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def encode(self, x: Tensor) -> Tensor:
        """Globally pooled 64k-d features."""
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.flatten(self.pool(self.relu(self.bn1(out))))

    def classify(self, z: Tensor) -> Tensor:
        """Linear logits layer."""
        return self.fc(z)


@register_model("wide-resnet")
def wide_resnet(
    in_channels: int,
    num_classes: int,
    image_size: int | tuple[int, int],
    *,
    depth: int = 34,
    widen_factor: int = 10,
    dropout: float = 0.0,
) -> WideResNet:
    """WideResNet-depth-widen_factor (default WRN-34-10, 46M parameters)."""
    return WideResNet(in_channels, num_classes, depth=depth, widen_factor=widen_factor, dropout=dropout)


@register_model("wrn-34-10")
def wrn_34_10(
    in_channels: int, num_classes: int, image_size: int | tuple[int, int], *, dropout: float = 0.0
) -> WideResNet:
    """WRN-34-10, the usual CIFAR-10 robustness benchmark net (TRADES, MART, AWP)."""
    return WideResNet(in_channels, num_classes, depth=34, widen_factor=10, dropout=dropout)


@register_model("wrn-28-10")
def wrn_28_10(
    in_channels: int, num_classes: int, image_size: int | tuple[int, int], *, dropout: float = 0.0
) -> WideResNet:
    """WRN-28-10 (36M parameters), used by e.g. Carmon et al. and Gowal et al."""
    return WideResNet(in_channels, num_classes, depth=28, widen_factor=10, dropout=dropout)
