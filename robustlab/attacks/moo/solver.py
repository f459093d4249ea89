"""The batched multi-objective perturbation loop shared by every TA-MOO application (Algorithm 1 of Bui et al.,
TMLR 2023) and its baselines: Uniform (fixed weights), MinMax (Wang et al. 2021, APGDA) and plain MOO (MGDA).

An application supplies ``task_fn(delta) -> (F, A)``: per-row task losses F (R, m) with graph to ``delta`` and the
achieved mask A (R, m); a row is one sample (ENS, EoT) or one group sharing a perturbation (UNI). Each row keeps its
own task weights, warm-started from one outer step to the next.

MinMax follows the authors' APGDA loop (Wang et al.'s ``minmax_ens`` and its port in the TA-MOO code): delta takes
its step with w_t, then ``w_{t+1} = proj_simplex(w_t - lr (f(delta_{t+1}) + gamma (w_t - 1/m)))`` with the losses
at the new delta (``f`` = the attack losses to maximise, so the weights descend: weight moves to the tasks with the
lowest loss, the worst case), gamma = 3 (the thesis) and lr = 1/beta = 0.025: beta = 40 is ``minmax_ens``'s default
and the TA-MOO evaluation's ``moo_lr``; Wang et al.'s own L-inf scripts use beta = 50 and the TA-MOO training
script 0.1 (both ``minmax_lr`` options). The delta step is the signed (normalised) one for every method, as in the
TA-MOO port (``normalize=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from robustlab.attacks.moo.regularizer import geometry_regularizer, unachieved_entropy
from robustlab.attacks.moo.simplex import check_task_weights, min_norm_weights, project_simplex
from robustlab.core.errors import InputError
from robustlab.core.rng import sharded_rand
from robustlab.core.threat import ThreatModel

Method = Literal["tamoo", "moo", "uniform", "minmax"]
METHODS: tuple[str, ...] = ("tamoo", "moo", "uniform", "minmax")
WeightSolver = Literal["softmax-gd", "exact", "frank-wolfe", "projected"]
WEIGHT_SOLVERS: tuple[str, ...] = ("softmax-gd", "exact", "frank-wolfe", "projected")
AllAchievedRule = Literal["sum-squares", "zero", "skip"]
TaskFn = Callable[[Tensor], tuple[Tensor, Tensor]]


def _choice(value: str, valid: tuple[str, ...], name: str) -> str:
    if value not in valid:
        raise InputError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    return value


@dataclass(frozen=True)
class MOOSettings:
    """Solver options; defaults are the paper's (Sec. 4 / App. D): L = 100 steps of 2/255, K = 10 inner steps of
    lr 0.005 on softmax-parameterised weights, lambda = 100, delta_0 ~ U(-eps, eps), w updated before delta.

    Options the released code uses instead (thesis spec Part C.13-14): ``order="code"`` (delta first),
    ``init="positive"`` (U(0, eps)), ``w_lr=0.025``, ``uniform_penalty=20`` with ``inner_steps=1`` (its plain MOO),
    ``mask_achieved_q`` (its EoT), ``grad_memory`` (App. D.4's MOO*/TA-MOO*: reuse a task's last finite gradient).
    ``entropy_coef`` (App. E.1): adds ``-entropy_coef * H(w over the unachieved tasks)`` to the weight objective, i.e.
    maximises that entropy to balance the unachieved tasks (the text says "minimizes", the stated purpose and the
    code's ``GNorm -= gamma * entropy`` maximise it); 0 here, 20 (the code's value; the paper gives none) for
    TA-MOO on EoT, where App. E.1 says it was used (the released code adds it to every TA-MOO run, ENS included).
    ``weight_solver`` other than ``softmax-gd`` solves the weight QP exactly each step (closed form for 2 tasks,
    else projected gradient or Frank-Wolfe) and so takes neither ``entropy_coef`` nor ``uniform_penalty``.
    ``all_achieved``: Omega when every task succeeded (paper: undefined) -- ``sum-squares`` (code), ``zero`` or
    ``skip`` (keep that row's weights). ``init_weights`` overrides the uniform initial (Uniform:
    fixed) weights and must lie on the simplex. ``gamma`` and ``minmax_lr``: MinMax's (module docstring).
    """

    method: str = "tamoo"
    steps: int = 100
    step_size: float = 2 / 255
    lam: float = 100.0
    inner_steps: int = 10
    w_lr: float = 0.005
    weight_solver: WeightSolver = "softmax-gd"
    gamma: float = 3.0
    minmax_lr: float = 0.025
    entropy_coef: float = 0.0
    uniform_penalty: float = 0.0
    order: str = "paper"
    init: str = "symmetric"
    init_weights: tuple[float, ...] | None = None
    grad_memory: bool = False
    mask_achieved_q: bool = False
    all_achieved: AllAchievedRule = "sum-squares"

    def __post_init__(self) -> None:
        _choice(self.method, METHODS, "MOO method")
        _choice(self.weight_solver, WEIGHT_SOLVERS, "weight solver")
        _choice(self.order, ("paper", "code"), "update order")
        _choice(self.init, ("symmetric", "positive", "zero"), "delta init")
        _choice(self.all_achieved, ("sum-squares", "zero", "skip"), "all_achieved rule")
        for name in ("steps", "inner_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < (1 if name == "steps" else 0):
                raise InputError(f"{name} must be an integer >= {1 if name == 'steps' else 0}, got {value!r}")
        for name in ("step_size", "w_lr", "minmax_lr"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("lam", "gamma", "entropy_coef", "uniform_penalty"):
            if not getattr(self, name) >= 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        extra = [n for n in ("entropy_coef", "uniform_penalty") if getattr(self, n) > 0]
        if extra and self.weight_solver != "softmax-gd" and self.method in ("tamoo", "moo"):
            raise InputError(f"weight_solver {self.weight_solver!r} solves the plain QP and ignores "
                             f"{', '.join(extra)}; use weight_solver 'softmax-gd' or set them to 0")

    @property
    def effective_lam(self) -> float:
        """lambda for the regulariser: the configured one for TA-MOO, 0 for plain MOO."""
        return self.lam if self.method == "tamoo" else 0.0


@dataclass
class MOOResult:
    """Final perturbation (R, ...), final weights (R, m) and the achieved mask (R, m) at the final perturbation."""

    delta: Tensor
    weights: Tensor
    achieved: Tensor
    history: list[dict[str, float]] = field(default_factory=list)


def initial_delta(shape: torch.Size, threat: ThreatModel, init: str, *, dtype: torch.dtype, device: torch.device
                  ) -> Tensor:
    """delta_0: U(-eps, eps) (paper), U(0, eps) (released code) or 0; L2/L1: uniform in the ball (``positive`` n/a)."""
    if init == "zero":
        return torch.zeros(shape, dtype=dtype, device=device)
    if threat.norm == "linf":
        u = sharded_rand(shape, dtype=dtype, device=device)
        return (u if init == "positive" else 2 * u - 1) * threat.eps
    half = torch.full(shape, 0.5, dtype=dtype, device=device)
    return threat.random_start(half) - half


def regularised_gram(q: Tensor, achieved: Tensor, lam: float, all_achieved: str) -> Tensor:
    """Q + lambda * H with w^T H w = Omega(w) on the simplex: H = diag(a) + a a^T / (m - s) (1 - sum_un w =
    sum_ach w there); all achieved: H = I (``sum-squares``) or 0."""
    if lam == 0:
        return q
    a = achieved.to(q.dtype)
    n_un = (1 - a).sum(dim=1)
    h = torch.diag_embed(a) + a[:, :, None] * a[:, None, :] / n_un.clamp_min(1)[:, None, None]
    all_done = (n_un == 0)[:, None, None]
    eye = torch.eye(q.shape[1], dtype=q.dtype, device=q.device).expand_as(q)
    h = torch.where(all_done, eye if all_achieved == "sum-squares" else torch.zeros_like(q), h)
    return q + lam * h


class _WeightState:
    """Per-row task weights: softmax logits alpha (MOO/TA-MOO by GD), or the weights themselves."""

    def __init__(self, rows: int, m: int, s: MOOSettings, device: torch.device) -> None:
        self.s = s
        w0 = (torch.full((m,), 1.0 / m) if s.init_weights is None
              else check_task_weights(s.init_weights, m, "init_weights"))
        self.w = w0.to(device).expand(rows, m).clone()
        # alpha_0 = 1/m (paper) gives uniform weights; an override w0 uses alpha_0 = log w0.
        self.alpha = (torch.full((rows, m), 1.0 / m, device=device) if s.init_weights is None
                      else self.w.clamp_min(1e-12).log())

    def update(self, q: Tensor, achieved: Tensor, losses: Tensor) -> None:
        s = self.s
        if s.method == "uniform":
            return
        if s.method == "minmax":  # projected descent on sum_i w_i f_i + gamma/2 ||w - 1/m||^2
            m = self.w.shape[1]
            grad = losses.detach().float() + s.gamma * (self.w - 1.0 / m)
            self.w = project_simplex(self.w - s.minmax_lr * grad)
            return
        lam = s.effective_lam
        keep = achieved.all(dim=1) if (s.all_achieved == "skip" and lam > 0) else None
        mode = "sum-squares" if s.all_achieved == "skip" else s.all_achieved
        if s.weight_solver != "softmax-gd":
            new = min_norm_weights(regularised_gram(q, achieved, lam, mode), s.weight_solver)
            self.w = new if keep is None else torch.where(keep[:, None], self.w, new)
            return
        alpha = self.alpha
        m = alpha.shape[1]
        for _ in range(s.inner_steps):
            a = alpha.detach().requires_grad_(True)
            with torch.enable_grad():
                w = torch.softmax(a, dim=1)
                obj = torch.einsum("bi,bij,bj->b", w, q, w)
                if lam > 0:
                    obj = obj + lam * geometry_regularizer(w, achieved, mode)
                if s.entropy_coef > 0:
                    obj = obj - s.entropy_coef * unachieved_entropy(w, achieved)
                if s.uniform_penalty > 0:
                    obj = obj + s.uniform_penalty * ((w - 1.0 / m) ** 2).sum(dim=1)
                (g,) = torch.autograd.grad(obj.sum(), a)
            alpha = alpha - s.w_lr * g
        self.alpha = alpha if keep is None else torch.where(keep[:, None], self.alpha, alpha)
        self.w = torch.softmax(self.alpha, dim=1)


def _task_gradients(losses: Tensor, delta: Tensor, cache: Tensor | None) -> Tensor:
    """G (R, m, d): one backward per task; non-finite rows replaced from ``cache`` (updated in place) if given."""
    m = losses.shape[1]
    grads = []
    for i in range(m):
        (g,) = torch.autograd.grad(losses[:, i].sum(), delta, retain_graph=i < m - 1)
        grads.append(g.reshape(g.shape[0], -1))
    out = torch.stack(grads, dim=1)
    if cache is not None:
        finite = torch.isfinite(out).all(dim=2, keepdim=True)
        out = torch.where(finite, out, cache)
        cache.copy_(out)
    return torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def run_moo(task_fn: TaskFn, delta_shape: torch.Size, project: Callable[[Tensor], Tensor], threat: ThreatModel,
            settings: MOOSettings, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
            record: bool = False) -> MOOResult:
    """Ascend all tasks at once from delta_0; ``project`` maps a perturbation into the feasible set (ball + box).

    Each outer step: gradients of every task at delta_t, Gram matrix Q, achieved mask, the weight update
    (method-specific; before the delta step for ``order="paper"``), then delta <- project(delta + eta *
    steepest_ascent(sum_i w_i grad f_i)). MinMax updates its weights after each delta step, from the losses at the
    new delta (the first update thus happens at outer step 1, the last one after the loop)."""
    s = settings
    device = torch.device(device)
    delta = project(initial_delta(delta_shape, threat, s.init, dtype=dtype, device=device))
    state: _WeightState | None = None
    cache: Tensor | None = None
    history: list[dict[str, float]] = []
    for t in range(s.steps):
        d = delta.detach().requires_grad_(True)
        with torch.enable_grad():
            losses, achieved = task_fn(d)
            if losses.dim() != 2 or losses.shape[0] != delta.shape[0]:
                raise InputError(f"task_fn must return losses of shape (rows, tasks), got {tuple(losses.shape)}")
            rows, m = losses.shape
            if state is None:
                state = _WeightState(rows, m, s, device)
            achieved = achieved.detach().bool()
            if s.method in ("uniform", "minmax"):
                if t > 0:  # MinMax: w_t from f(delta_t), i.e. after the previous delta step (Uniform: no-op)
                    state.update(torch.empty(0), achieved, losses)
                (g,) = torch.autograd.grad((losses * state.w.detach()).sum(), d)
            else:
                if s.grad_memory and cache is None:
                    cache = torch.zeros(rows, m, d[0].numel(), dtype=dtype, device=device)
                grads = _task_gradients(losses, d, cache if s.grad_memory else None)
                qg = grads * (~achieved)[:, :, None] if s.mask_achieved_q else grads
                q = (qg @ qg.transpose(1, 2)).float()
                if s.order == "paper":
                    state.update(q, achieved, losses)
                    step_weights = state.w
                else:
                    step_weights = state.w
                    state.update(q, achieved, losses)
                g = (step_weights[:, :, None].to(grads.dtype) * grads).sum(dim=1).view_as(delta)
        if record:
            history.append({"loss": float(losses.detach().mean()), "achieved": float(achieved.float().mean()),
                            "all_achieved": float(achieved.all(dim=1).float().mean())})
        delta = project(delta + s.step_size * threat.steepest_ascent(g.detach()))
    with torch.no_grad():
        losses, achieved = task_fn(delta)
    assert state is not None
    if s.method == "minmax":
        state.update(torch.empty(0), achieved.bool(), losses)
    return MOOResult(delta=delta.detach(), weights=state.w.detach(), achieved=achieved.detach().bool(),
                     history=history)
