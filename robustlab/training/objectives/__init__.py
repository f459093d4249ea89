"""Training objectives, one module per method; importing this package registers them all."""

# imported for their registration side effects
from robustlab.training.objectives import (  # noqa: F401  (registration side effects)
    adp,
    adr,
    ascl,
    carso,
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
    OBJECTIVES,
    Objective,
    ObjectiveConfig,
    create_objective,
    get_objective_class,
    list_objectives,
    register_objective,
    unwrap,
)

__all__ = ["OBJECTIVES", "Objective", "ObjectiveConfig", "create_objective", "get_objective_class",
           "list_objectives", "register_objective", "unwrap"]
