"""Internal representation of any classifier at named layers, read with forward hooks (``LayerTaps``).

``keep_graph=True`` keeps the activations attached to the input (end-to-end attacks differentiate through them);
``keep_graph=False`` runs the classifier under ``no_grad`` (CARSO training: the classifier is frozen).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
from torch import Tensor, nn

from robustlab.core.errors import InputError
from robustlab.models.taps import LayerTaps


class RepresentationExtractor:
    """``extract(x) -> (activations in layer order, classifier output)`` for ``layers`` of ``model``.

    Unknown layer names raise ``UnknownNameError`` listing the valid ones (at construction, not at first use).
    ``forward`` replaces ``model(x)`` for the pass (CARSO calls the classifier's bare net on already-normalised
    input); the hooks sit on ``model``'s submodules either way.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | str) -> None:
        layers = [layers] if isinstance(layers, str) else list(layers)
        if not layers:
            raise InputError("a representation needs at least one layer name")
        LayerTaps(model, layers)  # validates the names
        self.model = model
        self.layers = list(dict.fromkeys(layers))

    def extract(
        self, x: Tensor, *, keep_graph: bool = True, forward: Callable[[Tensor], Tensor] | None = None
    ) -> tuple[list[Tensor], Tensor]:
        """Run one forward pass and return the tapped activations (in ``layers`` order) and the output."""
        run = forward if forward is not None else self.model
        with torch.no_grad() if not keep_graph else nullcontext(), LayerTaps(
            self.model, self.layers, detach=not keep_graph
        ) as taps:
            out = run(x)
        acts = [taps[name] for name in self.layers]
        bad = [name for name, a in zip(self.layers, acts) if not isinstance(a, Tensor)]
        if bad:
            raise InputError(f"layers {bad} return non-tensor outputs; tap a module whose output is one tensor")
        return acts, out
