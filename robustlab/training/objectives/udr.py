"""UDR soft-ball inner maximisation with a learned dual variable (Bui 2023, Ch. 5). INTERFACE STUB."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from robustlab.training.config import AttackConfig


class UDRParams(BaseModel):
    """Soft-ball settings (tau, lambda init / lr, pull cost, ...)."""

    model_config = ConfigDict(extra="forbid")


class SoftBallAttack:
    """Callable ``(model, x, y, loss=, eps=) -> x_adv``; owns the dual variable lambda."""

    def __init__(self, params: UDRParams, attack: AttackConfig | None) -> None:
        self.params = params

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *, loss: object, eps: float | None) -> Tensor:
        raise NotImplementedError

    def update_dual(self, x_adv: Tensor, x: Tensor) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, float]:
        return {}

    def load_state_dict(self, state: dict[str, float]) -> None:
        pass
