"""A small fully connected classifier ("mlp"): flatten -> (Linear + ReLU) per hidden size -> Linear.

Layer names: ``flatten``, ``hidden.fc1``, ``hidden.relu1``, ..., ``hidden`` (latent and penultimate: the last hidden
activation), ``fc`` (logits). Init: PyTorch defaults.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from robustlab.core.errors import InputError
from robustlab.models.base import ClassifierNet, image_hw
from robustlab.models.registry import register_model


class MLP(ClassifierNet):
    """Flatten + ReLU MLP; with no hidden sizes it is a linear classifier on pixels."""

    latent_layer = "hidden"
    penultimate_layer = "hidden"

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        hidden = tuple(hidden)
        if any(int(h) != h or h < 1 for h in hidden):
            raise InputError(f"hidden sizes must be positive integers, got {hidden}")
        self.flatten = nn.Flatten()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        d = in_features
        for i, width in enumerate(hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(d, int(width))
            layers[f"relu{i}"] = nn.ReLU()
            d = int(width)
        self.hidden = nn.Sequential(layers)
        self.fc = nn.Linear(d, num_classes)
        self.latent_dim, self.num_classes = d, num_classes

    def encode(self, x: Tensor) -> Tensor:
        """Last hidden activation."""
        return self.hidden(self.flatten(x))

    def classify(self, z: Tensor) -> Tensor:
        """Linear logits layer."""
        return self.fc(z)


@register_model("mlp")
def mlp(
    in_channels: int, num_classes: int, image_size: int | tuple[int, int], *, hidden: Sequence[int] = (256, 256)
) -> MLP:
    """MLP over C*H*W pixels with the given hidden sizes."""
    return MLP(in_channels * math.prod(image_hw(image_size)), num_classes, hidden)
