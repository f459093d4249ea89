"""Plain conv stacks with an FC head: the Carlini & Wagner CNN ("cw-cnn") and the ADR paper's CNN-4C3F ("adr-cnn").

Both are 3x3 stride-1 convs + ReLU in two stages, each stage closed by 2x2 max-pooling, then flatten and an MLP head
``FC+ReLU, Dropout, FC+ReLU, ..., FC(classes)``. Layer names (relative to the net):

* ``features.conv1`` .. ``features.convK``, ``features.relu1`` .. ``features.reluK``, ``features.pool1``,
  ``features.pool2``
* ``flatten`` (the encoder output: ``latent_layer``)
* ``classifier.fc1``, ``classifier.relu1``, ``classifier.dropout``, ``classifier.fc2``, ``classifier.relu2``, ...,
  the last hidden ReLU is ``penultimate_layer`` and the last ``classifier.fcM`` gives the logits.

Init: PyTorch defaults (Kaiming-uniform, a=sqrt(5)) for every layer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from robustlab.core.errors import InputError
from robustlab.models.base import ClassifierNet, check_dropout, image_hw
from robustlab.models.registry import register_model

# (conv widths per stage, hidden FC widths) per dataset family.
CW_VARIANTS: dict[str, tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]] = {
    "mnist": (((32, 32), (64, 64)), (200, 200)),
    "cifar": (((64, 64), (128, 128)), (256, 256)),
    "cifar100": (((64, 64, 64), (128, 128, 128)), (256, 256, 256)),
}
ADR_VARIANTS: dict[str, tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]] = {
    "mnist": (((32, 32), (32, 32)), (200, 200)),
    "cifar": (((64, 64), (64, 64)), (256, 256)),
}


class ConvStackNet(ClassifierNet):
    """Conv stages (3x3 convs + ReLU, 2x2 max-pool) -> flatten -> FC head with dropout after the first hidden FC."""

    latent_layer = "flatten"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        stages: Sequence[Sequence[int]],
        hidden: Sequence[int],
        *,
        dropout: float = 0.5,
        padding: str = "valid",
    ) -> None:
        super().__init__()
        if padding not in ("valid", "same"):
            raise InputError(f"padding must be 'valid' or 'same', got {padding!r}")
        dropout = check_dropout(dropout)
        pad = 0 if padding == "valid" else 1
        h, w = image_hw(image_size)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c, i = in_channels, 0
        for s, widths in enumerate(stages, start=1):
            for width in widths:
                i += 1
                layers[f"conv{i}"] = nn.Conv2d(c, width, kernel_size=3, padding=pad)
                layers[f"relu{i}"] = nn.ReLU()
                c = width
                h, w = h - 2 + 2 * pad, w - 2 + 2 * pad
            layers[f"pool{s}"] = nn.MaxPool2d(2)
            h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise InputError(
                    f"input {image_hw(image_size)} is too small for {len(stages)} conv stages with "
                    f"{padding!r} padding; use padding='same' or a larger image"
                )
        self.features = nn.Sequential(layers)
        self.flatten = nn.Flatten()
        self.latent_dim = c * h * w
        self.num_classes = num_classes
        head: OrderedDict[str, nn.Module] = OrderedDict()
        d = self.latent_dim
        for j, width in enumerate(hidden, start=1):
            head[f"fc{j}"] = nn.Linear(d, width)
            head[f"relu{j}"] = nn.ReLU()
            if j == 1:
                head["dropout"] = nn.Dropout(dropout)
            d = width
        head[f"fc{len(hidden) + 1}"] = nn.Linear(d, num_classes)
        self.classifier = nn.Sequential(head)
        self.penultimate_layer = f"classifier.relu{len(hidden)}" if hidden else "flatten"

    def encode(self, x: Tensor) -> Tensor:
        """Flattened conv features."""
        return self.flatten(self.features(x))

    def classify(self, z: Tensor) -> Tensor:
        """FC head to logits."""
        return self.classifier(z)


def _pick_variant(table: dict, variant: str | None, in_channels: int, num_classes: int, model: str) -> tuple:
    if variant is None:
        many = num_classes >= 100 and "cifar100" in table
        variant = "mnist" if in_channels == 1 else ("cifar100" if many else "cifar")
    if variant not in table:
        raise InputError(f"{model}: unknown variant {variant!r}; choose one of {sorted(table)}")
    return table[variant]


@register_model("cw-cnn")
def cw_cnn(
    in_channels: int,
    num_classes: int,
    image_size: int | tuple[int, int],
    *,
    variant: str | None = None,
    padding: str = "valid",
    dropout: float = 0.5,
) -> ConvStackNet:
    """Carlini & Wagner (2017) CNN, as in thesis ch.4 Table 8.

    variant ``"mnist"``: 2xConv(32), pool, 2xConv(64), pool, FC(200), Dropout, FC(200), FC(classes);
    ``"cifar"``: 2xConv(64), pool, 2xConv(128), pool, FC(256), Dropout, FC(256), FC(classes);
    ``"cifar100"``: 3xConv(64), pool, 3xConv(128), pool, FC(256), Dropout, 2xFC(256), FC(classes).
    Default: mnist for 1-channel input, cifar100 for >= 100 classes, otherwise cifar. (The thesis's released code
    uses 'same' padding and no dropout: pass ``padding="same", dropout=0.0`` to match it.)
    """
    stages, hidden = _pick_variant(CW_VARIANTS, variant, in_channels, num_classes, "cw-cnn")
    return ConvStackNet(in_channels, num_classes, image_size, stages, hidden, dropout=dropout, padding=padding)


@register_model("adr-cnn")
def adr_cnn(
    in_channels: int,
    num_classes: int,
    image_size: int | tuple[int, int],
    *,
    variant: str | None = None,
    padding: str = "valid",
    dropout: float = 0.5,
) -> ConvStackNet:
    """ADR paper's CNN-4C3F (thesis ch.2-3 §4.4): generator = the conv stack + flatten, classifier = the FC head.

    variant ``"mnist"`` (CNN-4C3F(32)): convs 32,32 | 32,32, FC(200), Dropout, FC(200), FC(classes);
    ``"cifar"`` (CNN-4C3F(64)): convs 64,64 | 64,64, FC(256), Dropout, FC(256), FC(classes).
    Unlike C&W (32,32,64,64 / 64,64,128,128) the second stage does not double the width: this follows the thesis text.
    Default: mnist for 1-channel input, else cifar. Kernel/padding are unstated in the thesis: 3x3 valid by default.
    """
    stages, hidden = _pick_variant(ADR_VARIANTS, variant, in_channels, num_classes, "adr-cnn")
    return ConvStackNet(in_channels, num_classes, image_size, stages, hidden, dropout=dropout, padding=padding)
