"""Lookahead (Zhang et al. 2019) over any torch optimizer: CARSO trains with RAdam wrapped in Lookahead(k=6, 0.8).

Every ``k`` steps of the inner optimizer the slow weights move ``alpha`` of the way towards the fast weights and
the fast weights are reset to them. The slow weights and the step count are part of ``state_dict`` (slow weights as
``lookahead_slow`` tensors in the per-parameter state, the count in each param group), so a resumed run is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from robustlab.core.errors import ConfigError

_SLOW = "lookahead_slow"


class Lookahead(torch.optim.Optimizer):
    """``Lookahead(torch.optim.RAdam(params, lr), k=6, alpha=0.8)``; shares the inner optimizer's param groups."""

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 6, alpha: float = 0.8) -> None:
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ConfigError(f"lookahead k must be an integer >= 1, got {k!r}")
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(f"lookahead alpha must lie in (0, 1], got {alpha!r}")
        # No super().__init__: the param groups (and so the learning rates the trainer sets) are the inner ones.
        self.optimizer = optimizer
        self.defaults = optimizer.defaults
        self.param_groups = optimizer.param_groups
        self.slow: dict[Tensor, Tensor] = {}
        for group in self.param_groups:
            group.setdefault("lookahead_k", int(k))
            group.setdefault("lookahead_alpha", float(alpha))
            group.setdefault("lookahead_step", 0)

    @property
    def state(self) -> Any:  # type: ignore[override]
        """The inner optimizer's per-parameter state."""
        return self.optimizer.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear gradients (inner optimizer)."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:
        """One inner step; every k-th, the slow/fast synchronisation."""
        for group in self.param_groups:
            for p in group["params"]:
                if p not in self.slow:
                    self.slow[p] = p.detach().clone()
        loss = self.optimizer.step(closure)
        for group in self.param_groups:
            group["lookahead_step"] += 1
            if group["lookahead_step"] % group["lookahead_k"] == 0:
                for p in group["params"]:
                    slow = self.slow[p]
                    slow.add_(p.detach() - slow, alpha=group["lookahead_alpha"])
                    p.copy_(slow)
        return loss

    def _indexed(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> dict[str, Any]:
        """The inner state dict plus ``lookahead_slow`` per parameter index."""
        sd = self.optimizer.state_dict()
        for idx, p in enumerate(self._indexed()):
            if p in self.slow:
                sd["state"].setdefault(idx, {})[_SLOW] = self.slow[p].clone()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        params = self._indexed()
        inner_state, slow = {}, {}
        for idx, values in state_dict["state"].items():
            values = dict(values)
            if _SLOW in values:
                slow[int(idx)] = values.pop(_SLOW)
            if values:
                inner_state[idx] = values
        self.optimizer.load_state_dict({"state": inner_state, "param_groups": state_dict["param_groups"]})
        self.param_groups = self.optimizer.param_groups
        self.slow = {params[i]: t.to(device=params[i].device, dtype=params[i].dtype).clone() for i, t in slow.items()}
