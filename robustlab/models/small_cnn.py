"""The TRADES MNIST SmallCNN ("small-cnn"): conv 32,32 | 64,64 (3x3 valid), FC 200, dropout, FC 200, FC classes.

It is the C&W MNIST CNN, so it shares ``ConvStackNet`` and its layer names (``features.conv4``, ``flatten``,
``classifier.relu2``, ...). 312,202 parameters on 1x28x28 / 10 classes; on 3x32x32 the flatten size becomes 64*5*5.
Init: PyTorch defaults (TRADES zero-initialises fc3, which gives zero input gradients on an untrained net, so we don't).
"""

from __future__ import annotations

from robustlab.models.cw_cnn import ConvStackNet
from robustlab.models.registry import register_model


class SmallCNN(ConvStackNet):
    """TRADES SmallCNN for any input channels/size (flatten size inferred from the input size)."""

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, image_size: int | tuple[int, int] = 28, dropout: float = 0.5
    ) -> None:
        super().__init__(in_channels, num_classes, image_size, ((32, 32), (64, 64)), (200, 200), dropout=dropout)


@register_model("small-cnn")
def small_cnn(
    in_channels: int, num_classes: int, image_size: int | tuple[int, int], *, dropout: float = 0.5
) -> SmallCNN:
    """TRADES SmallCNN (Zhang et al. 2019, MNIST)."""
    return SmallCNN(in_channels, num_classes, image_size, dropout=dropout)
