"""PreAct-ResNet-18 ("preact-resnet18") as used by Wong et al. 2020 (fast AT) and Rice et al. 2020 (robust overfitting).

conv3x3(64), four stages of two pre-activation blocks (64, 128, 256, 512; stride 2 from stage 2), final BN + ReLU,
global average pooling, FC. Layer names: ``conv1``, ``layer1.0.bn1`` .. ``layer4.1.conv2``, ``bn``, ``relu``,
``pool``, ``flatten`` (latent and penultimate, 512-d), ``linear``. Parameter names match those reference repositories.
Init: PyTorch defaults (as in both references).
"""

from __future__ import annotations

from torch import Tensor, nn

from robustlab.models.base import ClassifierNet
from robustlab.models.registry import register_model


class PreActBlock(nn.Module):
    """Pre-activation basic block; a 1x1 conv shortcut (no BN) when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        """out = conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut."""
        out = self.relu1(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.relu2(self.bn2(out)))
        return out + shortcut


class PreActResNet18(ClassifierNet):
    """PreAct-ResNet-18 with adaptive global pooling (any input size)."""

    latent_layer = "flatten"
    penultimate_layer = "flatten"

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        planes, stages = 64, []
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(PreActBlock(planes, width, stride), PreActBlock(width, width, 1)))
            planes = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(512)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(512, num_classes)
        self.latent_dim, self.num_classes = 512, num_classes

    def encode(self, x: Tensor) -> Tensor:
        """Globally pooled 512-d features."""
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.flatten(self.pool(self.relu(self.bn(out))))

    def classify(self, z: Tensor) -> Tensor:
        """Linear logits layer."""
        return self.linear(z)


@register_model("preact-resnet18")
def preact_resnet18(in_channels: int, num_classes: int, image_size: int | tuple[int, int]) -> PreActResNet18:
    """PreAct-ResNet-18 (11.17M parameters for CIFAR-10)."""
    return PreActResNet18(in_channels, num_classes)
