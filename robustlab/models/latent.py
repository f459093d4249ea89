"""Latent representations: one forward giving (latent, logits) at any split point of a model.

Used by the representation objectives (ADR, ASCL) for their losses and by the latent-space plots. The split point is
the model's ``encode``/``classify`` by default, or any named layer read with ``LayerTaps``.
"""

from __future__ import annotations

from typing import cast

from torch import Tensor, nn

from robustlab.core.errors import ConfigError
from robustlab.core.registry import unknown_name_message
from robustlab.models.base import EncoderClassifier
from robustlab.models.normalized import Normalized
from robustlab.models.taps import LayerTaps, named_layers


def check_latent_layer(model: nn.Module, latent_layer: str | None) -> None:
    """Raise ``ConfigError`` unless ``model`` can give a latent at ``latent_layer`` (None = its encode/classify split).

    The message lists the valid layer names, so a typo in a config is fixed in one go.
    """
    if latent_layer is None:
        inner = model.net if isinstance(model, Normalized) else model
        if not (callable(getattr(inner, "encode", None)) and callable(getattr(inner, "classify", None))):
            raise ConfigError(
                f"{type(inner).__name__} has no encode/classify split; set latent_layer to one of its layers: "
                + ", ".join(repr(n) for n in named_layers(model)[:40])
            )
        return
    valid = named_layers(model)
    if latent_layer not in valid:
        raise ConfigError("latent_layer: " + unknown_name_message("layer", [latent_layer], valid))


def latent_and_logits(model: nn.Module, x: Tensor, latent_layer: str | None = None) -> tuple[Tensor, Tensor]:
    """``(z, logits)`` for ``x`` from ONE forward pass: z = ``encode(x)`` (default) or the flattened output of
    ``latent_layer`` (tapped during the forward that also gives the logits). Gradients flow through both."""
    check_latent_layer(model, latent_layer)
    if latent_layer is None:
        split = cast(EncoderClassifier, model)  # checked above: it has encode and classify
        z = split.encode(x)
        return z, split.classify(z)
    with LayerTaps(model, [latent_layer]) as taps:
        logits = model(x)
    z = taps[latent_layer]
    if not isinstance(z, Tensor) or z.dim() < 1 or z.shape[0] != x.shape[0]:
        raise ConfigError(f"layer {latent_layer!r} does not output one tensor per example; pick another latent_layer")
    return z.flatten(1), logits
