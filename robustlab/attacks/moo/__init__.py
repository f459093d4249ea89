"""Multi-objective attacks: TA-MOO (Bui et al., TMLR 2023) and its baselines (Uniform, MinMax, MOO/MGDA) on the
ensemble (ENS), universal-perturbation (UNI) and transformation (EoT) applications."""

from robustlab.attacks.moo.applications import (
    TASK_LOSSES,
    EnsembleMOO,
    MOOAttack,
    SuccessRates,
    TransformMOO,
    UniversalMOO,
    member_logits,
    task_loss,
)
from robustlab.attacks.moo.regularizer import geometry_regularizer, project_to_unachieved, unachieved_entropy
from robustlab.attacks.moo.simplex import check_task_weights, min_norm_2, min_norm_weights, project_simplex
from robustlab.attacks.moo.solver import METHODS, MOOResult, MOOSettings, regularised_gram, run_moo
from robustlab.attacks.moo.transforms import FAMILIES, TABLE9, TransformSet, get_family

__all__ = [
    "FAMILIES",
    "METHODS",
    "TABLE9",
    "TASK_LOSSES",
    "EnsembleMOO",
    "MOOAttack",
    "MOOResult",
    "MOOSettings",
    "SuccessRates",
    "TransformMOO",
    "TransformSet",
    "UniversalMOO",
    "check_task_weights",
    "geometry_regularizer",
    "get_family",
    "member_logits",
    "min_norm_2",
    "min_norm_weights",
    "project_simplex",
    "project_to_unachieved",
    "regularised_gram",
    "run_moo",
    "task_loss",
    "unachieved_entropy",
]
