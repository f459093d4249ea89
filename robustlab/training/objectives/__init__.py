"""Training objectives; importing this package registers them all."""

from robustlab.training.objectives import adr, ascl, mart, pgd_at, standard, trades, udr_methods, wrm  # noqa: F401  (registration side effects)
from robustlab.training.objectives.base import (
    Objective,
    create_objective,
    list_objectives,
    register_objective,
    unwrap,
)

__all__ = ["Objective", "create_objective", "list_objectives", "register_objective", "unwrap"]
