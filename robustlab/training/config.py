"""Typed training configuration. Every section forbids unknown keys, so a typo fails loudly, not silently."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from robustlab.attacks.config import AttackConfig
from robustlab.core.config import Strict, plain_run_name
from robustlab.training.objectives.base import ObjectiveConfig


class DataConfig(Strict):
    """Which data, how much of it, and the training augmentations: a registry ``dataset``, or a user's ``path``
    (``.npz``, ``.csv`` table with ``label_column``, image folder; ``test_path`` is what ``robustlab evaluate``
    tests the run on)."""

    dataset: str | None = None
    path: str | None = None
    test_path: str | None = None
    label_column: str | None = None  # a table's label column; None = "label"
    val_size: int = Field(default=5000, ge=0)
    train_subset: int | None = Field(default=None, ge=1)
    augment: list[str] = Field(default_factory=list)
    root: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.dataset is None) == (self.path is None):
            raise ValueError("set exactly one of 'dataset' (a registered dataset) and 'path' (your data file)")
        if self.path is None and (self.test_path or self.label_column):
            raise ValueError("'test_path' and 'label_column' go with 'path' (your data), not a registered dataset")
        return self


class ModelConfig(Strict):
    """A registry model ``name`` and its ``kwargs``, or a user's ``factory`` (``path/file.py:NAME`` or
    ``package.module:NAME``, a class or a function returning an nn.Module) and its ``args``."""

    name: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    factory: str | None = None
    args: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_model(self) -> ModelConfig:
        if (self.name is None) == (self.factory is None):
            raise ValueError("set exactly one of 'name' (a registered model) and 'factory' (your file.py:NAME)")
        if self.factory is not None and self.kwargs:
            raise ValueError("a 'factory' takes 'args', not 'kwargs'")
        return self


class LookaheadConfig(Strict):
    """Lookahead: every ``k`` inner steps the slow weights move ``alpha`` of the way to the fast ones, which reset."""

    k: int = Field(default=6, ge=1)
    alpha: float = Field(default=0.8, gt=0, le=1)


class OptimizerConfig(Strict):
    """SGD, Adam or RAdam; ``lookahead`` wraps any of them in Lookahead (Zhang et al. 2019; CARSO: RAdam, k=6, 0.8)."""

    name: Literal["sgd", "adam", "radam"] = "sgd"
    lr: float = Field(default=0.1, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    lookahead: LookaheadConfig | None = None


class ScheduleConfig(Strict):
    """Learning-rate schedule as a function of fractional epoch; stateless, so resume is exact."""

    name: Literal["constant", "multistep", "cosine", "onecycle", "warmup-flat-anneal"] = "constant"
    milestones: list[float] = Field(default_factory=list)
    gamma: float = Field(default=0.1, gt=0)
    warmup_epochs: float = Field(default=0.0, ge=0)
    peak_fraction: float = Field(default=0.4, gt=0, lt=1)
    final_lr_fraction: float = Field(default=0.0, ge=0)
    # warmup-flat-anneal (CARSO): linear warm-up over warmup_epochs, flat for flat_epochs, linear to final_lr_fraction
    flat_epochs: float = Field(default=0.0, ge=0)


class ValidationConfig(Strict):
    """Per-epoch validation on the held-out split: clean and robust accuracy, used to pick the best checkpoint."""

    every: int = Field(default=1, ge=1)
    n: int = Field(default=1000, ge=1)
    attack: AttackConfig | None = None
    batch_size: int = Field(default=500, ge=1)


class TrainConfig(Strict):
    """Everything a training run needs; saved as config.yaml in the run folder."""

    name: str = "run"
    seed: int = 0
    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=128, ge=1)
    data: DataConfig
    model: ModelConfig
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    bf16: bool = False
    grad_clip: float | None = Field(default=None, gt=0)
    checkpoint_every_steps: int | None = Field(default=None, ge=1)
    max_steps_per_epoch: int | None = Field(default=None, ge=1)
    threads: int | None = Field(default=None, ge=1)
    device: str = "auto"
    # Also log per-epoch scalars and an example grid to RUN/tensorboard/ (needs the optional tensorboard package).
    tensorboard: bool = False

    _safe_name = field_validator("name")(plain_run_name)

    @model_validator(mode="after")
    def _needs_attack(self) -> TrainConfig:
        from robustlab.training.objectives import get_objective_class

        if get_objective_class(self.objective.name).needs_attack and self.objective.attack is None:
            raise ValueError(f"objective {self.objective.name!r} needs an 'attack' section")
        return self
