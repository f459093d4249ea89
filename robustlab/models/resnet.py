"""ResNet v1 for CIFAR (He et al. 2016, §4.2): "resnet20" and general depth 6n+2.

conv3x3(16)+BN+ReLU, three stages of n basic blocks (16, 32, 64 channels; stride 2 at stages 2 and 3), global average
pooling, FC. Layer names: ``conv1``, ``bn1``, ``relu``, ``layer1.0.conv1`` .. ``layer3.{n-1}.relu2`` (block output),
``pool``, ``flatten`` (latent and penultimate, 64-d), ``fc``.
Shortcut when the shape changes: ``"conv"`` (option B, 1x1 conv + BN; default, as in the Keras example ADP uses,
which has no BN there) or ``"pad"`` (option A of the paper, parameter-free subsample + zero channel padding).
Init: PyTorch defaults.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.core.errors import InputError
from robustlab.models.base import ClassifierNet
from robustlab.models.registry import register_model


class PadShortcut(nn.Module):
    """Option-A shortcut: take every ``stride``-th pixel and zero-pad the extra channels."""

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = extra_channels, stride

    def forward(self, x: Tensor) -> Tensor:
        """Subsample and pad channels."""
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    """Post-activation basic block: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride == 1 and in_planes == planes:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "conv":
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        else:
            self.shortcut = PadShortcut(planes - in_planes, stride)
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """Residual block (no in-place ops, so tapped activations stay intact)."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(ClassifierNet):
    """He et al. CIFAR ResNet-(6n+2) with adaptive global pooling, so any input size works."""

    latent_layer = "flatten"
    penultimate_layer = "flatten"

    def __init__(self, in_channels: int, num_classes: int, depth: int = 20, shortcut: str = "conv") -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise InputError(f"resnet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110), got {depth}")
        if shortcut not in ("conv", "pad"):
            raise InputError(f"shortcut must be 'conv' (option B) or 'pad' (option A), got {shortcut!r}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        planes, stages = 16, []
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(planes, width, stride if b == 0 else 1, shortcut))
                planes = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)
        self.latent_dim, self.num_classes = 64, num_classes

    def encode(self, x: Tensor) -> Tensor:
        """Globally pooled 64-d features."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.flatten(self.pool(out))

    def classify(self, z: Tensor) -> Tensor:
        """Linear logits layer."""
        return self.fc(z)


@register_model("resnet20")
def resnet20(
    in_channels: int, num_classes: int, image_size: int | tuple[int, int], *, depth: int = 20, shortcut: str = "conv"
) -> CifarResNet:
    """ResNet-20 v1 (0.27M parameters); ``depth`` selects any 6n+2 member of the family."""
    return CifarResNet(in_channels, num_classes, depth=depth, shortcut=shortcut)
