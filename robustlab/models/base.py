"""Shared pieces of the registry nets: the encoder/head contract and helpers for names and sizes."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor, nn

from robustlab.core.errors import InputError


class ClassifierNet(nn.Module):
    """Base of every registry net: ``forward(x) = classify(encode(x))`` on already-normalised input.

    ``latent_layer`` names the module whose output equals ``encode(x)`` (the encoder output that representation
    methods such as ADR, ASCL and CARSO regularise); ``penultimate_layer`` names the last hidden activation before
    the logits layer. Both are relative to the net; on a ``Normalized`` wrapper they carry a ``"net."`` prefix.
    """

    latent_layer: str = "flatten"
    penultimate_layer: str = "flatten"
    latent_dim: int
    num_classes: int

    def encode(self, x: Tensor) -> Tensor:
        """Map a normalised batch to the latent vector ``z`` (N, latent_dim)."""
        raise NotImplementedError

    def classify(self, z: Tensor) -> Tensor:
        """Map latent vectors to logits (N, num_classes)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a normalised batch."""
        return self.classify(self.encode(x))


class EncoderClassifier(Protocol):
    """The ``ClassifierNet`` contract as a type, met by registry nets and by ``Normalized`` around one.

    Models are checked for it at run time (``hasattr``/``callable``), since any module may implement it; code that
    has checked (or forwards, and lets a missing attribute raise) applies this type with ``typing.cast``.
    """

    @property
    def latent_layer(self) -> str: ...

    @property
    def penultimate_layer(self) -> str: ...

    @property
    def latent_dim(self) -> int: ...

    @property
    def num_classes(self) -> int: ...

    def encode(self, x: Tensor) -> Tensor: ...

    def classify(self, z: Tensor) -> Tensor: ...


def image_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """Return (H, W) from a square side length or an (H, W) pair."""
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def check_dropout(p: float) -> float:
    """Require a dropout probability in [0, 1)."""
    if not (0.0 <= float(p) < 1.0):
        raise InputError(f"dropout must lie in [0, 1), got {p}")
    return float(p)
