"""Training objectives; importing this package registers them all."""

# imported for their registration side effects
from robustlab.purification import carso as _carso  # noqa: F401  (registers the carso model and objective)
from robustlab.training.objectives import (  # noqa: F401
    adp,
    adr,
    ascl,
    cce,
    ensemble_at,
    mart,
    pgd_at,
    standard,
    tamoo_at,
    trades,
    udr_methods,
    wrm,
)
from robustlab.training.objectives.base import (
    Objective,
    create_objective,
    list_objectives,
    register_objective,
    unwrap,
)

__all__ = ["Objective", "create_objective", "list_objectives", "register_objective", "unwrap"]
