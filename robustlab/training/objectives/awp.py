"""Adversarial weight perturbation (Wu et al. 2020). INTERFACE STUB: to be implemented."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn


class AWPParams(BaseModel):
    """gamma: relative weight-perturbation size; proxy_lr: the proxy SGD step; warmup_epochs: no AWP before."""

    model_config = ConfigDict(extra="forbid")
    gamma: float = Field(default=0.01, ge=0)
    proxy_lr: float = Field(default=0.01, gt=0)
    warmup_epochs: float = Field(default=0.0, ge=0)


class WeightPerturbation:
    """perturb() before the loss is computed, restore() after the optimizer step."""

    def __init__(self, params: AWPParams) -> None:
        self.params = params

    def perturb(self, model: nn.Module, loss_fn: Callable[[nn.Module], Tensor], epochs_done: float) -> dict[str, float]:
        raise NotImplementedError

    def restore(self, model: nn.Module) -> None:
        raise NotImplementedError
