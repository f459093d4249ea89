"""Reading intermediate activations: ``named_layers`` lists tap names, ``LayerTaps`` records them with forward hooks."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from robustlab.core.errors import RobustlabError, UnknownNameError
from robustlab.core.registry import unknown_name_message
from robustlab.models.normalized import Normalized


def named_layers(model: nn.Module) -> list[str]:
    """Names of all submodules usable as taps, in definition order (``model.named_modules()`` minus the root).

    On a ``Normalized`` model they look like ``"net.features.conv4"``, ``"net.layer2.0.relu2"``, ``"net.flatten"``;
    the bare ``"net"`` entry (whose output is just the logits) is left out. On a bare net they have no prefix.
    """
    names = [n for n, _ in model.named_modules() if n]
    if isinstance(model, Normalized):
        names = [n for n in names if n != "net"]
    return names


def _detach(out: Any) -> Any:
    if isinstance(out, Tensor):
        return out.detach()
    if isinstance(out, (tuple, list)):
        return type(out)(_detach(o) for o in out)
    if isinstance(out, dict):
        return {k: _detach(v) for k, v in out.items()}
    return out


class LayerTaps:
    """Context manager recording the outputs of named layers during forward passes.

    ``with LayerTaps(model, ["net.features.conv4"]) as taps: logits = model(x); f = taps["net.features.conv4"]``.
    Each tap keeps the output of the layer's latest call (the tensor itself, not a copy: our nets do no in-place
    ops; ``detach=True`` stores detached tensors and so drops the graph). Hooks are removed on exit, also when the
    block raises; recorded activations stay readable after the block.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | str, *, detach: bool = False) -> None:
        layers = [layers] if isinstance(layers, str) else list(layers)
        valid = named_layers(model)
        valid_set = set(valid)
        unknown = [name for name in layers if name not in valid_set]
        if unknown:
            raise UnknownNameError(unknown_name_message("layer", unknown, valid))
        modules = dict(model.named_modules())
        self._modules = {name: modules[name] for name in dict.fromkeys(layers)}
        self._detach = detach
        self._handles: list[RemovableHandle] = []
        self._acts: dict[str, Any] = {}

    def _hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self._acts[name] = _detach(output) if self._detach else output

        return hook

    def __enter__(self) -> LayerTaps:
        if self._handles:
            raise RobustlabError("this LayerTaps is already active; create a new one for a nested block")
        self._acts.clear()
        try:
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove all hooks (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def layers(self) -> list[str]:
        """The tapped layer names."""
        return list(self._modules)

    def __getitem__(self, name: str) -> Any:
        if name not in self._modules:
            raise UnknownNameError(unknown_name_message("tapped layer", [name], list(self._modules)))
        if name not in self._acts:
            raise RobustlabError(
                f"layer {name!r} has not run yet: call the model inside the `with LayerTaps(...)` block"
            )
        return self._acts[name]

    def __contains__(self, name: object) -> bool:
        return name in self._acts

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._acts))

    def __len__(self) -> int:
        return len(self._acts)

    def items(self) -> list[tuple[str, Any]]:
        """(name, activation) pairs recorded so far."""
        return list(self._acts.items())
