"""An evaluation protocol as configuration: which split, how many points, which attacks (or AutoAttack), which
sanity checks and radii."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from robustlab.attacks.config import AttackConfig
from robustlab.attacks.registry import get_attack_class, list_attacks
from robustlab.core.config import Strict


class AutoAttackConfig(Strict):
    """AutoAttack (Croce & Hein 2020) run exactly as the reference does, on the first ``n`` evaluation points."""

    version: Literal["standard", "plus", "rand", "custom"] = "standard"
    norm: Literal["linf", "l2", "l1"] = "linf"
    eps: float = Field(gt=0)
    n: int | None = Field(default=None, ge=1)
    attacks: list[str] | None = None
    attack_kwargs: dict[str, dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _attacks_implement_the_norm(self) -> AutoAttackConfig:
        """A custom attack list naming a registered attack that lacks this norm fails here, not mid-evaluation."""
        registered = set(list_attacks())
        for raw in self.attacks or []:
            name = str(raw).strip().lower().replace("_", "-")
            norms = get_attack_class(name).norms if name in registered else None
            if norms is not None and self.norm not in norms:
                raise ValueError(f"autoattack attack {name!r} supports the {', '.join(norms)} norm(s), "
                                 f"not {self.norm!r}")
        return self

    def state_file(self, state_dir: str | Path, points: int, seed: int, prefix: str = "autoattack") -> Path:
        """Where a run of this AutoAttack on ``points`` points under ``seed`` keeps its state inside ``state_dir``."""
        key = f"{self.version}-{self.norm}-{self.eps:.6g}-n{points}-seed{seed}"
        return Path(state_dir) / f"{prefix}-{key}.state.safetensors"


class EvalConfig(Strict):
    """Evaluation protocol: attacks run in order, each on the points all earlier ones failed on; optionally
    AutoAttack on the first ``autoattack.n`` of the same points, and an eps sweep: the first attack re-run
    alone at each ``eps_sweep`` radius on the first ``eps_sweep_n`` points (all points when None).

    ``classifier_only`` (CARSO models only) adds the CARSO paper's MNIST/Fashion-MNIST protocol: AutoAttack on the
    wrapped classifier alone, its points judged on CARSO with fresh randomness. That measures how well CARSO undoes
    attacks on its classifier, not CARSO's robustness, so it is reported apart and never enters the worst case; it
    cannot be the whole protocol (``attacks`` or ``autoattack`` must attack the model end to end)."""

    split: Literal["test", "val"] = "test"
    n: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=500, ge=1)
    seed: int = 0
    attacks: list[AttackConfig] = Field(default_factory=list)
    autoattack: AutoAttackConfig | None = None
    large_eps: float | None = Field(default=None, gt=0)
    grad_check_n: int = Field(default=200, ge=0)
    eps_sweep: list[float] = Field(default_factory=list)
    eps_sweep_n: int | None = Field(default=None, ge=1)
    classifier_only: AutoAttackConfig | None = None

    @field_validator("eps_sweep")
    @classmethod
    def _positive_distinct(cls, values: list[float]) -> list[float]:
        bad = [v for v in values if not (math.isfinite(v) and v > 0)]
        if bad:
            raise ValueError(f"every eps_sweep radius must be a finite number > 0, got {bad}")
        if len(set(values)) != len(values):
            raise ValueError(f"eps_sweep radii must be distinct, got {values}")
        return values

    @model_validator(mode="after")
    def _something_to_run(self) -> EvalConfig:
        if not self.attacks and self.autoattack is None:
            raise ValueError("an evaluation needs 'attacks' or 'autoattack'")
        return self
