"""The objective interface: ``loss, metrics = objective(model, x, y)``.

An objective owns how it crafts adversarial examples; the trainer knows nothing about any method.
Adversarial examples are crafted on the bare module (``unwrap``) in eval mode by the attack's own
context; the training loss is computed with the model as the trainer gives it, in train mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor, nn

from robustlab.attacks.base import Attack
from robustlab.attacks.config import AttackConfig, build_attack
from robustlab.core.config import Strict
from robustlab.core.errors import ConfigError
from robustlab.core.registry import Registry

Metrics = dict[str, float]


class ObjectiveConfig(Strict):
    """The training method: a registered objective name, its attack, and method-specific parameters."""

    name: str = "standard"
    attack: AttackConfig | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    eps_warmup_epochs: float = Field(default=0.0, ge=0)


class NoParams(BaseModel):
    """Parameters of an objective that takes none."""

    model_config = ConfigDict(extra="forbid")


class Objective:
    """Base class. Subclasses set ``Params`` (a pydantic model of their options) and implement ``loss``."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    #: The validated ``Params``; subclasses re-declare it with their own ``Params`` type for the type checker.
    params: BaseModel
    needs_attack: ClassVar[bool] = True
    #: Whether reproduce plots this method's latent space (representation objectives: ADR, ASCL).
    latent_plot: ClassVar[bool] = False
    #: The kind of model the method trains: "classifier" (any), "ensemble" (a registry ensemble) or "carso".
    model_kind: ClassVar[str] = "classifier"

    def __init__(self, cfg: ObjectiveConfig) -> None:
        try:
            self.params = self.Params.model_validate(cfg.params)
        except ValidationError as exc:
            raise ConfigError(f"objective {self.name!r} parameters: {exc}") from None
        if self.needs_attack and cfg.attack is None:
            raise ConfigError(f"objective {self.name!r} needs an 'attack' section")
        self.cfg = cfg
        self._eps_scale = 1.0

    def set_progress(self, epochs_done: float) -> None:
        """Called by the trainer before each step; implements the linear eps warm-up."""
        warm = self.cfg.eps_warmup_epochs
        self._eps_scale = 1.0 if warm <= 0 else min(1.0, max(1e-3, epochs_done / warm))

    @property
    def current_eps(self) -> float | None:
        """The training eps after warm-up (None for objectives without an attack)."""
        return None if self.cfg.attack is None else self.cfg.attack.eps * self._eps_scale

    def attack(self, model: nn.Module, **extra: object) -> Attack:
        """This objective's training attack on ``model`` at the current (warmed-up) eps."""
        assert self.cfg.attack is not None
        return build_attack(self.cfg.attack, unwrap(model), eps=self.current_eps, **extra)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Metrics]:
        return self.loss(model, x, y)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Metrics]:
        """Return the scalar training loss (with graph) and float metrics for logging."""
        raise NotImplementedError

    def prepare_model_kwargs(self, name: str, kwargs: dict[str, Any], data: Any, *, seed: int,
                             device: torch.device) -> dict[str, Any]:
        """Registry model ``name``'s kwargs with what this objective settles from the training ``data`` before the
        model is built (CARSO's ``layers: auto``); the trainer writes the result into the run's config. Default:
        unchanged."""
        return kwargs

    def modules(self, model: nn.Module, example: Tensor) -> nn.Module | None:
        """Trainable modules this objective owns (ASCL's projection head), built once for ``model``; None if none.

        ``example`` is a small input batch for sizing layers. The trainer calls this once before it builds the
        optimizer, trains the module's parameters with the model's and saves them with the optimizer state.
        """
        return None

    def after_step(self, model: nn.Module) -> None:
        """Called by the trainer right after the optimizer step (AWP restores the perturbed weights here)."""

    def state_dict(self) -> dict[str, float]:
        """Learned state outside the model (UDR's dual variable); saved in every checkpoint for exact resume."""
        return {}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore :meth:`state_dict`; an objective without state refuses a non-empty one (foreign checkpoint)."""
        if state:
            raise ConfigError(f"objective {self.name!r} keeps no state, but the checkpoint holds {sorted(state)}")


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under a data-parallel wrapper, if any."""
    return getattr(model, "module", model)


OBJECTIVES: Registry[type[Objective]] = Registry(
    "objective", check=lambda c: isinstance(c, type) and issubclass(c, Objective), expects="an Objective subclass")


def register_objective(name: str) -> Callable[[type[Objective]], type[Objective]]:
    """Class decorator adding an objective to the registry under ``name``."""

    def deco(cls: type[Objective]) -> type[Objective]:
        cls.name = name
        return OBJECTIVES.register(name, cls)

    return deco


def list_objectives() -> list[str]:
    """Names of the registered objectives."""
    return OBJECTIVES.names()


def get_objective_class(name: str) -> type[Objective]:
    """The objective class registered under ``name``; unknown names list the valid ones."""
    return OBJECTIVES.get(name)


def create_objective(cfg: ObjectiveConfig) -> Objective:
    """Instantiate the objective named in ``cfg``."""
    return get_objective_class(cfg.name)(cfg)


def accuracy(logits: Tensor, y: Tensor) -> float:
    """Fraction of correct predictions, as a float for logging."""
    return float((logits.argmax(dim=1) == y).float().mean())
