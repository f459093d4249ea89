"""TA-MOO's geometry regulariser (Bui et al., TMLR 2023, Sec. 3): the squared distance from the task weights to
the face of the simplex spanned by the goal-unachieved tasks, which pushes weight towards unsuccessful tasks.

``achieved`` is a (B, m) bool mask (True = task's goal already reached at the current perturbation).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from robustlab.attacks.moo.simplex import project_simplex
from robustlab.core.errors import InputError

AllAchieved = Literal["sum-squares", "zero"]


def project_to_unachieved(w: Tensor, achieved: Tensor) -> Tensor:
    """Lemma 1: the projection of w (B, m) onto S = {0 on achieved tasks} x simplex(unachieved tasks), with the
    proof's gamma = (1 - sum of the rho largest unachieved w) / (rho - s). Needs at least one unachieved task."""
    if bool(achieved.all(dim=1).any()):
        raise InputError("project_to_unachieved: every task is achieved for some row, so S is empty")
    return project_simplex(w, ~achieved.bool())


def geometry_regularizer(w: Tensor, achieved: Tensor, all_achieved: AllAchieved = "sum-squares") -> Tensor:
    """Theorem 1's closed form Omega(w) = sum_achieved w_i^2 + (1 - sum_unachieved w_i)^2 / (m - s), per row.

    Valid for w on the simplex (the softmax parameterisation guarantees it). When every task is achieved
    (s = m) the paper leaves Omega undefined: ``sum-squares`` (default; the released code's behaviour) gives
    sum_i w_i^2, ``zero`` gives 0 (plain MOO for that sample)."""
    if all_achieved not in ("sum-squares", "zero"):
        raise InputError(f"unknown all_achieved rule {all_achieved!r}; valid: sum-squares, zero")
    a = achieved.to(w.dtype)
    n_un = (1 - a).sum(dim=1)
    first = (a * w**2).sum(dim=1)
    second = (1 - ((1 - a) * w).sum(dim=1)) ** 2 / n_un.clamp_min(1)
    omega = first + torch.where(n_un > 0, second, torch.zeros_like(second))
    if all_achieved == "zero":
        omega = torch.where(n_un > 0, omega, torch.zeros_like(omega))
    return omega


def unachieved_entropy(w: Tensor, achieved: Tensor) -> Tensor:
    """App. E.1's entropy of the unachieved tasks' weights, -sum_unachieved w_i log w_i (0 when all achieved)."""
    un = (~achieved.bool()).to(w.dtype)
    return -(un * w * w.clamp_min(1e-30).log()).sum(dim=1)
