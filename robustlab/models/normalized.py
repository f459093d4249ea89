"""``Normalized``: the one place where dataset normalisation happens, so every model takes inputs in [0, 1]."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from robustlab.core.errors import InputError
from robustlab.models.base import EncoderClassifier


class Normalized(nn.Module):
    """Wrap ``net`` so that ``forward(x) = net((x - mean) / std)`` for x in [0, 1].

    ``mean`` and ``std`` are float buffers of shape (1, C, 1, 1) (saved in checkpoints); ``net`` is the wrapped
    module, so its layers are named ``net.<layer>`` on the wrapper. When ``net`` is a registry net, ``encode``,
    ``classify``, ``latent_layer`` and ``penultimate_layer`` are forwarded (layer names with the ``net.`` prefix).
    ``model_spec`` records how ``create_model`` built it ({"model", "dataset", "kwargs"}; empty otherwise).
    """

    net: nn.Module
    mean: Tensor
    std: Tensor

    def __init__(self, net: nn.Module, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor, *,
                 in_channels: int | None = None) -> None:
        """``in_channels``: the channel count the net expects (checked on every input; by default the length of a
        per-channel ``mean``, unchecked for a single shared mean)."""
        super().__init__()
        m, s = _floats(mean), _floats(std)
        if not m or len(m) != len(s):
            raise InputError(f"mean and std need the same non-zero length, got {len(m)} and {len(s)}")
        if not all(math.isfinite(v) for v in m) or not all(math.isfinite(v) and v > 0 for v in s):
            raise InputError(f"mean must be finite and std finite and > 0, got mean={m} std={s}")
        if in_channels is not None and len(m) not in (1, in_channels):
            raise InputError(f"mean/std have {len(m)} entries but the model takes {in_channels} channels")
        self.net = net
        self.in_channels = in_channels if in_channels is not None else (len(m) if len(m) > 1 else None)
        self.register_buffer("mean", torch.tensor(m, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(s, dtype=torch.float32).view(1, -1, 1, 1))
        self.model_spec: dict[str, Any] = {}

    def normalize(self, x: Tensor) -> Tensor:
        """(x - mean) / std with per-channel broadcasting."""
        c = self.in_channels
        if x.dim() == 2:  # table rows: one mean/std per feature (or one for all)
            if self.mean.numel() not in (1, x.shape[1]):
                raise InputError(f"model normalises {self.mean.numel()} features, got rows of {x.shape[1]}")
            return (x - self.mean.view(1, -1)) / self.std.view(1, -1)
        if c is not None and (x.dim() != 4 or x.shape[1] != c):
            hint = ("; it looks like NHWC: use x.permute(0, 3, 1, 2)"
                    if x.dim() == 4 and x.shape[-1] == c and x.shape[1] != c else "")
            raise InputError(f"model expects {c}-channel NCHW input, got shape {tuple(x.shape)}{hint}")
        return (x - self.mean) / self.std

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the wrapped net for raw [0, 1] input."""
        return self.net(self.normalize(x))

    @property
    def _split(self) -> EncoderClassifier:
        """The wrapped net as a registry net; a net without the attribute asked for raises AttributeError."""
        return cast(EncoderClassifier, self.net)

    def encode(self, x: Tensor) -> Tensor:
        """Latent vector of the wrapped registry net for raw [0, 1] input."""
        return self._split.encode(self.normalize(x))

    def classify(self, z: Tensor) -> Tensor:
        """Logits from latent vectors (the wrapped net's head)."""
        return self._split.classify(z)

    @property
    def latent_layer(self) -> str:
        """Tap name of the encoder output on this wrapper, e.g. ``"net.flatten"``."""
        return "net." + self._split.latent_layer

    @property
    def penultimate_layer(self) -> str:
        """Tap name of the last hidden activation on this wrapper, e.g. ``"net.classifier.relu2"``."""
        return "net." + self._split.penultimate_layer

    @property
    def num_classes(self) -> int:
        """Number of logits of the wrapped net."""
        return self._split.num_classes

    @property
    def latent_dim(self) -> int:
        """Size of the latent vector of the wrapped net."""
        return self._split.latent_dim

    def extra_repr(self) -> str:
        """Show the normalisation constants in ``print(model)``."""
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _floats(values: Sequence[float] | Tensor) -> list[float]:
    if isinstance(values, Tensor):
        values = values.detach().cpu().flatten().tolist()
    return [float(v) for v in values]
