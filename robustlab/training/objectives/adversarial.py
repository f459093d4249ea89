"""The shape every adversarial-training method here shares: an inner maximisation, then an outer loss.

A method is (which loss its attack ascends, ``attack_loss``) + (its training loss on the clean and adversarial
batch, ``outer_loss``). Two options compose with every such method without changing it:

* ``udr``: replace the hard-ball PGD inner maximisation with UDR's soft-ball attack and learned dual variable
  (Bui 2023, Ch. 5; :mod:`robustlab.training.objectives.udr`), so each X gets its UDR-X twin;
* ``awp``: adversarial weight perturbation (Wu et al. 2020; :mod:`robustlab.training.objectives.awp`): the
  weights are perturbed to maximise the outer loss before it is computed and restored after the optimizer step.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from robustlab.attacks.base import attack_mode
from robustlab.attacks.losses import LossFn
from robustlab.training.objectives.awp import AWPParams, WeightPerturbation
from robustlab.training.objectives.base import Metrics, Objective, ObjectiveConfig, unwrap
from robustlab.training.objectives.losses import kl_attack_loss
from robustlab.training.objectives.udr import SoftBallAttack, UDRParams


class AdversarialParams(BaseModel):
    """Options every adversarial objective takes: ``udr`` (soft-ball inner maximisation) and ``awp``."""

    model_config = ConfigDict(extra="forbid")
    udr: UDRParams | None = None
    awp: AWPParams | None = None


class AdversarialObjective(Objective):
    """Base class: subclasses set ``attack_loss`` ("ce" or "kl") and implement :meth:`outer_loss`."""

    Params: ClassVar[type[BaseModel]] = AdversarialParams
    params: AdversarialParams
    attack_loss: ClassVar[Literal["ce", "kl"]] = "ce"

    def __init__(self, cfg: ObjectiveConfig) -> None:
        super().__init__(cfg)
        self.softball = SoftBallAttack(self.params.udr, cfg.attack) if self.params.udr is not None else None
        self.awp = WeightPerturbation(self.params.awp) if self.params.awp is not None else None

    # ------------------------------------------------------------------------------------------ inner max
    def attack_loss_fn(self, model: nn.Module, x: Tensor) -> str | LossFn:
        """The loss the inner attack ascends: cross-entropy, or TRADES' KL to the (fixed) clean prediction."""
        if self.attack_loss == "ce":
            return "ce"
        bare = unwrap(model)
        with torch.no_grad(), attack_mode(bare):
            clean = bare(x)
        return kl_attack_loss(clean)

    def craft(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial examples of this method (hard-ball attack, or UDR's soft ball when ``udr`` is set)."""
        loss = self.attack_loss_fn(model, x)
        if self.softball is not None:
            return self.softball(unwrap(model), x, y, loss=loss, eps=self.current_eps)
        return self.attack(model, loss=loss)(x, y)

    # ------------------------------------------------------------------------------------------ outer loss
    def outer_loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Metrics]:
        """The training loss on the clean and adversarial batch (with graph) and its metrics."""
        raise NotImplementedError

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Metrics]:
        x_adv = self.craft(model, x, y)
        metrics: Metrics = {}
        if self.softball is not None:
            metrics.update(self.softball.update_dual(x_adv, x))
        if self.awp is not None:
            metrics.update(self.awp.perturb(model, lambda m: self.outer_loss(m, x, x_adv, y)[0], self._epochs_done))
        loss, outer = self.outer_loss(model, x, x_adv, y)
        metrics.update(outer)
        metrics["loss"] = float(loss.detach())
        return loss, metrics

    # ------------------------------------------------------------------------------------------ hooks
    def set_progress(self, epochs_done: float) -> None:
        super().set_progress(epochs_done)
        self._epochs_done = epochs_done

    _epochs_done: float = 0.0

    def after_step(self, model: nn.Module) -> None:
        if self.awp is not None:
            self.awp.restore(model)

    def state_dict(self) -> dict[str, float]:
        return self.softball.state_dict() if self.softball is not None else {}

    def load_state_dict(self, state: dict[str, float]) -> None:
        if self.softball is not None:
            self.softball.load_state_dict(state)
        else:
            super().load_state_dict(state)
