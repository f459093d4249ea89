"""Adapters that make a user's model fit the contract every attack relies on: one module, one logits tensor."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from robustlab.core.errors import InputError


class SelectOutput(nn.Module):
    """``SelectOutput(model, 0)(x) == model(x)[0]``: for models that return a tuple, list or dict (logits plus
    features, say). It stays an ``nn.Module``, so attacks can still switch the wrapped model to eval mode."""

    def __init__(self, model: nn.Module, key: int | str = 0) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise InputError(f"SelectOutput wraps a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.key = key

    def forward(self, x: Tensor) -> Any:
        """The selected entry of the wrapped model's output."""
        return self.model(x)[self.key]

    def extra_repr(self) -> str:
        """Show which entry is selected in ``print(model)``."""
        return f"key={self.key!r}"
