"""TA-MOO's three applications as attacks (Bui et al., TMLR 2023, Sec. 4), each with its success metric:

* ``tamoo-ens``: fool every member of an ensemble at once (task i = member i; success = all members fooled);
* ``tamoo-uni``: one universal perturbation per group of images (task i = image i of the group);
* ``tamoo-eot``: robust to a set of transformations (task i = transformation family i, Table 9).

``method`` selects TA-MOO or a baseline (``uniform``, ``minmax``, ``moo``); the other solver options are those of
:class:`MOOSettings`. Outputs always lie in the threat model's ball and in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.attacks.base import Attack
from robustlab.attacks.losses import cw_margin
from robustlab.attacks.moo.solver import MOOResult, MOOSettings, run_moo
from robustlab.attacks.moo.transforms import TABLE9, TransformSet
from robustlab.attacks.registry import ATTACKS
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel
from robustlab.core.validation import check_logits

TASK_LOSSES: tuple[str, ...] = ("ce", "cw", "kl")
EOT_ENTROPY_COEF = 20.0  # App. E.1's entropy regulariser in EoT; the released code's coefficient
SUCCESS_REFS: tuple[str, ...] = ("prediction", "label")
TaskLoss = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def task_loss(name: str, kappa: float = 50.0) -> TaskLoss:
    """Per-sample task loss ``f(logits, y, clean_logits)``: CE; CW = relu(max_{k!=y} z_k - z_y + kappa) (released
    code, kappa = 50); KL(softmax(clean) || softmax(logits)) summed over classes (TRADES-style)."""
    if name == "ce":
        return lambda z, y, _: F.cross_entropy(z.float(), y, reduction="none")
    if name == "cw":
        return lambda z, y, _: F.relu(cw_margin(z, y) + kappa)
    if name == "kl":
        def kl(z: Tensor, y: Tensor, clean: Tensor | None) -> Tensor:
            assert clean is not None
            p = F.softmax(clean.float(), dim=1)
            return (p * (F.log_softmax(clean.float(), dim=1) - F.log_softmax(z.float(), dim=1))).sum(dim=1)
        return kl
    raise InputError(f"unknown task loss {name!r}; valid: {', '.join(TASK_LOSSES)}")


@dataclass
class SuccessRates:
    """Attack success per task (N, m) summarised as A-All (every task succeeded), A-Avg and per-task ASR, in %."""

    a_all: float
    a_avg: float
    per_task: list[float]

    @classmethod
    def of(cls, achieved: Tensor) -> SuccessRates:
        a = achieved.float()
        return cls(100 * float(a.all(dim=1).float().mean()), 100 * float(a.mean()),
                   [100 * float(v) for v in a.mean(dim=0)])

    def to_dict(self) -> dict[str, object]:
        return {"a_all": self.a_all, "a_avg": self.a_avg, "per_task": self.per_task}


def member_logits(model: nn.Module, x: Tensor) -> Tensor:
    """(K, N, C) member logits of an ensemble model (an ``Ensemble``, possibly inside ``Normalized``, or any model
    with ``member_logits``); needs K >= 2."""
    from robustlab.models.ensemble import is_ensemble
    from robustlab.models.ensemble import member_logits as ensemble_member_logits

    if is_ensemble(model):
        out = ensemble_member_logits(model, x)
    elif callable(own := getattr(model, "member_logits", None)):
        out = own(x)
    else:
        raise InputError(f"an ensemble attack needs an ensemble model (robustlab.models.ensemble.Ensemble, "
                         f"registry name 'ensemble'), got {type(model).__name__}")
    if not isinstance(out, Tensor) or out.dim() != 3 or out.shape[1] != x.shape[0]:
        raise InputError(f"member_logits must return a (K, N, C) tensor, got {getattr(out, 'shape', type(out))}")
    if out.shape[0] < 2:
        raise InputError("an ensemble of one member has nothing to balance; use a single-model attack (e.g. pgd)")
    return out


class MOOAttack(Attack):
    """Base of the multi-objective attacks: holds the solver settings and keeps the last run's result."""

    supports_targeted = False
    extra_settings = frozenset(f.name for f in fields(MOOSettings)) - {"step_size", "steps"}

    def __init__(self, model: nn.Module, threat: ThreatModel, *, method: str = "tamoo", steps: int = 100,
                 step_size: float | None = None, random_start: bool = True, **options: Any) -> None:
        super().__init__(model, threat, loss="ce")
        if step_size is None:
            step_size = threat.eps / 4  # the paper's 2/255 at eps 8/255
        init = options.pop("init", "symmetric" if random_start else "zero")
        if "init_weights" in options and options["init_weights"] is not None:
            options["init_weights"] = tuple(float(v) for v in options["init_weights"])
        self.settings = MOOSettings(method=method, steps=steps, step_size=step_size, init=init, **options)
        self.last: MOOResult | None = None

    def _run(self, task_fn: Callable[[Tensor], tuple[Tensor, Tensor]], shape: torch.Size,
             project: Callable[[Tensor], Tensor], x: Tensor) -> MOOResult:
        self.last = run_moo(task_fn, shape, project, self.threat, self.settings, dtype=x.dtype, device=x.device)
        return self.last


@ATTACKS.register("tamoo-ens")
class EnsembleMOO(MOOAttack):
    """Attack K ensemble members at once: f_i = loss(h_i(x + delta), y); task i succeeds when h_i misclassifies."""

    def __init__(self, model: nn.Module, threat: ThreatModel, *, loss: str = "ce", kappa: float = 50.0,
                 **kwargs: Any) -> None:
        super().__init__(model, threat, **kwargs)
        self.task_loss_name = loss
        self.task_loss = task_loss(loss, kappa)

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        with torch.no_grad():
            clean = member_logits(self.model, x) if self.task_loss_name == "kl" else None

        def tasks(delta: Tensor) -> tuple[Tensor, Tensor]:
            z = member_logits(self.model, x + delta)
            losses = torch.stack([self.task_loss(z[k], y, None if clean is None else clean[k])
                                  for k in range(z.shape[0])], dim=1)
            return losses, (z.argmax(dim=2) != y).T

        result = self._run(tasks, x.shape, lambda d: self.threat.project(x + d, x) - x, x)
        return self.threat.project(x + result.delta, x)

    @torch.no_grad()
    def success(self, x_adv: Tensor, y: Tensor) -> SuccessRates:
        """A-All / A-Avg / per-member ASR of ``x_adv`` (all members fooled = success)."""
        return SuccessRates.of((member_logits(self.model, x_adv).argmax(dim=2) != y.to(x_adv.device)).T)


def _reference(model: nn.Module, x: Tensor, y: Tensor, success_ref: str) -> Tensor:
    """What a success must differ from: the clean prediction (paper text) or the label (released code)."""
    if success_ref not in SUCCESS_REFS:
        raise InputError(f"unknown success_ref {success_ref!r}; valid: {', '.join(SUCCESS_REFS)}")
    if success_ref == "label":
        return y
    with torch.no_grad():
        return check_logits(model(x), x.shape[0]).argmax(dim=1)


@ATTACKS.register("tamoo-uni")
class UniversalMOO(MOOAttack):
    """One perturbation shared by each group of ``group_size`` consecutive images; task i = image i of the group,
    CW loss; an image succeeds when its prediction differs from ``success_ref`` (clean prediction by default)."""

    def __init__(self, model: nn.Module, threat: ThreatModel, *, group_size: int = 4, loss: str = "cw",
                 kappa: float = 50.0, success_ref: str = "prediction", **kwargs: Any) -> None:
        super().__init__(model, threat, **kwargs)
        if isinstance(group_size, bool) or int(group_size) != group_size or group_size < 1:
            raise InputError(f"group_size must be an integer >= 1, got {group_size!r}")
        if success_ref not in SUCCESS_REFS:
            raise InputError(f"unknown success_ref {success_ref!r}; valid: {', '.join(SUCCESS_REFS)}")
        self.group_size = int(group_size)
        self.task_loss = task_loss(loss, kappa)
        self.success_ref = success_ref

    def _groups(self, x: Tensor) -> Tensor:
        n, k = x.shape[0], self.group_size
        if k > n:
            raise InputError(f"universal-perturbation group of {k} images is larger than the batch of {n}; "
                             f"use group_size <= {n}")
        if n % k:
            raise InputError(f"a batch of {n} images cannot be split into groups of {k}; pass a multiple of {k}")
        return x.reshape(n // k, k, *x.shape[1:])

    def project_group(self, delta: Tensor, xg: Tensor) -> Tensor:
        """Ball, then the box for every image of the group: delta in [-min_i x_i, 1 - max_i x_i] per pixel."""
        delta = self.threat.project_delta(delta)
        return torch.maximum(torch.minimum(delta, 1 - xg.amax(dim=1)), -xg.amin(dim=1))

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        xg = self._groups(x)
        ref = _reference(self.model, x, y, self.success_ref).reshape(xg.shape[:2])
        yg = y.reshape(xg.shape[:2])

        def tasks(delta: Tensor) -> tuple[Tensor, Tensor]:
            xa = (xg + delta[:, None]).reshape(x.shape)
            z = check_logits(self.model(xa), x.shape[0])
            losses = self.task_loss(z, yg.reshape(-1), None).reshape(xg.shape[:2])
            return losses, (z.argmax(dim=1).reshape(xg.shape[:2]) != ref)

        shape = torch.Size((xg.shape[0], *x.shape[1:]))
        result = self._run(tasks, shape, lambda d: self.project_group(d, xg), x)
        return (xg + result.delta[:, None]).reshape(x.shape).clamp(0.0, 1.0)

    @torch.no_grad()
    def success(self, x_adv: Tensor, x: Tensor, y: Tensor) -> SuccessRates:
        """Per-image success within groups: A-Avg = ASR over images (the paper's metric), A-All = groups fully
        fooled, per_task = ASR of each position in the group."""
        ref = _reference(self.model, x, y.to(x.device), self.success_ref)
        fooled = check_logits(self.model(x_adv), x.shape[0]).argmax(dim=1) != ref
        return SuccessRates.of(fooled.reshape(-1, self.group_size))


@ATTACKS.register("tamoo-eot")
class TransformMOO(MOOAttack):
    """Perturbation that survives a set of transformations: task i = family i of ``transforms`` (Table 9 by
    default), CW loss on h(t_i(x + delta)); success when the prediction differs from ``success_ref`` computed on the
    untransformed clean x. ``stochastic`` draws each family's parameter anew every step. ``entropy_coef`` (None:
    20 for TA-MOO, 0 for the baselines): App. E.1 says TA-MOO's EoT runs balanced the unachieved tasks with the
    entropy regulariser (about +2%); the paper gives no coefficient, 20 is the released code's."""

    def __init__(self, model: nn.Module, threat: ThreatModel, *, transforms: Sequence[str] = TABLE9,
                 stochastic: bool = False, loss: str = "cw", kappa: float = 50.0, success_ref: str = "prediction",
                 generator: torch.Generator | None = None, entropy_coef: float | None = None,
                 **kwargs: Any) -> None:
        if entropy_coef is None:
            entropy_coef = EOT_ENTROPY_COEF if kwargs.get("method", "tamoo") == "tamoo" else 0.0
        super().__init__(model, threat, entropy_coef=entropy_coef, **kwargs)
        if success_ref not in SUCCESS_REFS:
            raise InputError(f"unknown success_ref {success_ref!r}; valid: {', '.join(SUCCESS_REFS)}")
        self.transforms = TransformSet(transforms, stochastic, generator)
        self.task_loss = task_loss(loss, kappa)
        self.success_ref = success_ref

    def _logits(self, xa: Tensor) -> Tensor:
        """(m, N, C) logits of the m transformed batches in one forward pass."""
        views = self.transforms(xa)
        z = check_logits(self.model(torch.cat(views)), len(views) * xa.shape[0])
        return z.reshape(len(views), xa.shape[0], -1)

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        ref = _reference(self.model, x, y, self.success_ref)

        def tasks(delta: Tensor) -> tuple[Tensor, Tensor]:
            z = self._logits(x + delta)
            losses = torch.stack([self.task_loss(z[i], y, None) for i in range(z.shape[0])], dim=1)
            return losses, (z.argmax(dim=2) != ref).T

        result = self._run(tasks, x.shape, lambda d: self.threat.project(x + d, x) - x, x)
        return self.threat.project(x + result.delta, x)

    @torch.no_grad()
    def success(self, x_adv: Tensor, x: Tensor, y: Tensor) -> SuccessRates:
        """A-All / A-Avg / per-transformation ASR of ``x_adv`` (one parameter draw in the stochastic setting)."""
        ref = _reference(self.model, x, y.to(x.device), self.success_ref)
        return SuccessRates.of((self._logits(x_adv).argmax(dim=2) != ref).T)
