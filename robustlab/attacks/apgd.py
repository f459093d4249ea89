"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation ... AutoAttack"): PGD with momentum and an automatic step size.

One run (L-inf or L2) starts at a random point of the ball's surface, takes steps ``z = P(x + eta * dir(g))`` and
``x' = P(x + a (z - x) + (1 - a)(x - x_prev))`` with ``a = 0.75`` (1 at the first step), ``dir`` the sign (L-inf) or
the normalised gradient (L2) and ``P`` the projection onto ball and box. ``eta`` starts at ``2 eps``. At checkpoints
``w_j = ceil(p_j * steps)`` with ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` the step
size of a sample is halved, and its iterate reset to its best point so far, when

1. at most a fraction ``rho = 0.75`` of the steps since the last checkpoint increased its loss, or
2. its step size was not halved at the last checkpoint and its best loss has not improved since then.

The checkpoint schedule, the random start and the "at most" in condition 1 follow the reference code
(fra31/auto-attack). Per sample the attack returns the first iterate that fools the model, otherwise the highest-loss
iterate. Restarts (and, for APGD-T, target classes) run only on samples not fooled yet.

L1 (Croce & Hein 2021, "Mind the box", the reference's APGD-L1) differs: the start is the projection of ``x + N(0, I)``
onto the L1 ball intersected with the box, there is no momentum, and each step moves along the sign of the gradient
restricted to its ``k`` largest-magnitude coordinates, ``x' = P(x + eta s / ||s||_1)``, with ``P`` the exact projection
onto ball and box. The sparsity adapts: ``k = 0.2 d`` at first; every ``max(0.04 steps, 1)`` steps ``k`` becomes
``||x_best - x||_0 / 1.5``, and a sample whose best point got sparser by more than 5% has its step reset to
``eta_0 = eps`` and its iterate and gradient reset to the best ones, while the others divide the step by 1.5 (never
below ``eps / 10``). ``use_largereps`` runs the reference's schedule ``3 eps -> 2 eps -> eps`` over ``30%, 30%,
40%`` of the steps, each stage starting at the previous stage's best point projected onto the smaller ball (the first
at a Gaussian point projected onto the ``3 eps`` ball) with ``k`` set from that point's sparsity; only the last
stage's (radius ``eps``) successes count.

APGD-T (the targeted variant inside AutoAttack) runs one APGD per target class ``t`` among the ``n_target_classes``
highest-scoring non-true classes of the clean input, maximising the targeted DLR loss
``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``; it succeeds as soon as the prediction is not ``y``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustlab.attacks.base import Attack, predict
from robustlab.attacks.pgd import _check_count
from robustlab.attacks.registry import register_attack
from robustlab.core.errors import InputError
from robustlab.core.rng import sharded_rand
from robustlab.core.threat import ThreatModel

MOMENTUM = 0.75  # weight of the new step; 1 - MOMENTUM goes to the previous displacement
INITIAL_STEP = 2.0  # eta_0 = 2 * eps
L1_INITIAL_STEP = 1.0  # eta_0 = eps in L1
L1_CHECK_EVERY = 0.04  # L1 checkpoints every max(0.04 * steps, 1) steps
L1_SPARSITY = 0.2  # fraction of coordinates of the first L1 steps
L1_STEP_DECAY = 1.5  # step divisor at an L1 checkpoint without a sparser best point (also k = ||delta||_0 / 1.5)
L1_MIN_STEP = 10.0  # the L1 step never drops below eta_0 / 10
LARGE_EPS = ((3.0, 0.3), (2.0, 0.3), (1.0, 0.4))  # use_largereps: (radius / eps, fraction of the steps)


def checkpoint_lengths(steps: int) -> list[int]:
    """Lengths of the intervals between step-size checkpoints, as in the reference code (sums to >= steps)."""
    first = max(int(0.22 * steps), 1)
    shrink = max(int(0.03 * steps), 1)
    minimum = max(int(0.06 * steps), 1)
    lengths, k, total = [], first, 0
    while total < steps:
        lengths.append(k)
        total += k
        k = max(k - shrink, minimum)
    return lengths


def large_eps_schedule(steps: int) -> list[tuple[float, int]]:
    """The reference's ``use_largereps`` stages ``(radius factor, steps)``: ceil(0.3 s), ceil(0.3 s), the rest."""
    iters = [math.ceil(frac * steps) for _, frac in LARGE_EPS[:-1]]
    iters.append(steps - sum(iters))
    return [(factor, n) for (factor, _), n in zip(LARGE_EPS, iters)]


def l0_norm(delta: Tensor) -> Tensor:
    """Number of nonzero coordinates per sample, as float (the L1 sparsity schedule divides it)."""
    return (delta.reshape(delta.shape[0], -1) != 0).sum(dim=1).to(delta.dtype)


def targeted_dlr(logits: Tensor, pair: Tensor) -> Tensor:
    """Targeted DLR loss ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``; ``pair`` is (N, 2) of (true, target)."""
    logits = logits.float()
    y, t = pair[:, 0], pair[:, 1]
    sorted_logits, _ = logits.sort(dim=1)
    true = logits.gather(1, y[:, None]).squeeze(1)
    tgt = logits.gather(1, t[:, None]).squeeze(1)
    denom = sorted_logits[:, -1] - 0.5 * (sorted_logits[:, -3] + sorted_logits[:, -4]) + 1e-12
    return -(true - tgt) / denom


def _per_sample(v: Tensor, like: Tensor) -> Tensor:
    """Reshape (N,) to broadcast over an (N, ...) batch."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Per-sample select: rows of ``a`` where ``mask`` else rows of ``b`` (no host synchronisation)."""
    return torch.where(_per_sample(mask, a), a, b)


class APGD(Attack):
    """``APGD(model, threat, steps=100, restarts=1, loss="ce")``: untargeted Auto-PGD, L-inf, L2 and L1.

    ``loss`` is ``"ce"`` (APGD-CE) or ``"dlr"`` (APGD-DLR); ``eot_samples`` averages gradients over that many passes
    of a stochastic model (AutoAttack's ``rand`` version uses 20). ``seed`` makes the random starts reproducible
    without touching the global generator; ``None`` draws from torch's global generator. ``max_loss=True`` returns
    each sample's highest-loss iterate over all restarts instead of the first fooling one (the reference's
    ``best_loss`` mode: loss maximisation rather than evaluation). ``use_largereps`` (L1 only, ``steps >= 3``) runs
    each restart as the ``3 eps -> 2 eps -> eps`` schedule, as AutoAttack's L1 ``standard`` version does.
    """

    supports_targeted = False
    norms = ("linf", "l2", "l1")

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        steps: int = 100,
        restarts: int = 1,
        loss: str = "ce",
        rho: float = 0.75,
        eot_samples: int = 1,
        seed: int | None = None,
        max_loss: bool = False,
        use_largereps: bool = False,
    ) -> None:
        if loss not in ("ce", "dlr"):
            raise InputError(f"APGD loss must be 'ce' or 'dlr', got {loss!r}")
        super().__init__(model, threat, loss=loss, eot_samples=eot_samples)
        self.steps = _check_count(steps, "steps")
        self.use_largereps = bool(use_largereps)
        if self.use_largereps and threat.norm != "l1":
            raise InputError(f"use_largereps is the L1 schedule (3 eps -> 2 eps -> eps); the threat is {threat.norm}")
        if self.use_largereps and self.steps < 3:
            raise InputError(f"use_largereps splits the steps over 3 radii and needs steps >= 3, got {steps}")
        self.restarts = _check_count(restarts, "restarts")
        if not 0.0 < float(rho) < 1.0:
            raise InputError(f"rho must lie in (0, 1), got {rho}")
        self.rho = float(rho)
        self.seed = seed
        self.max_loss = bool(max_loss)
        self.checkpoints = checkpoint_lengths(self.steps)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.threat}, steps={self.steps}, restarts={self.restarts}, "
            f"loss={self.loss_name!r}, rho={self.rho}, eot={self.eot_samples}, seed={self.seed}, "
            f"max_loss={self.max_loss}, use_largereps={self.use_largereps})"
        )

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Run the restarts (under ``seed`` when set) and return each sample's worst case."""
        self._check_classes(x)
        if self.seed is None:
            return self._attack(x, y)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return self._attack(x, y)

    def _check_classes(self, x: Tensor) -> None:
        """DLR needs at least 3 classes (the targeted one 4)."""
        need = 3 if self.loss_name == "dlr" else 2
        if need > 2:
            num_classes = predict(self.model, x[:1]).shape[1]
            if num_classes < need:
                raise InputError(f"{type(self).__name__} with the DLR loss needs >= {need} classes, got {num_classes}")

    def _attack(self, x: Tensor, y: Tensor) -> Tensor:
        """Restarts on the samples not fooled yet; keep the fooling point, else the highest-loss one."""
        return self._restarts(x, y, y, self.restarts)[0]

    def _restarts(self, x: Tensor, y: Tensor, label: Tensor, restarts: int) -> tuple[Tensor, Tensor, Tensor]:
        """``restarts`` runs with objective label ``label``; returns (x_adv, fooled, best loss)."""
        best, fooled, best_loss = self._run(x, y, label)
        for _ in range(1, restarts):
            idx = torch.arange(len(x), device=x.device) if self.max_loss else (~fooled).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            self._merge(best, fooled, best_loss, idx, *self._run(x[idx], y[idx], label[idx]))
        return best, fooled, best_loss

    def _merge(self, best: Tensor, fooled: Tensor, best_loss: Tensor, idx: Tensor, x_r: Tensor, f_r: Tensor,
               l_r: Tensor) -> None:
        """Fold a run on samples ``idx`` into the running results (a success wins unless ``max_loss``)."""
        better = l_r > best_loss[idx]
        if not self.max_loss:  # idx holds only unfooled samples here
            better |= f_r
        sel = idx[better]
        best[sel] = x_r[better]
        best_loss[sel] = l_r[better]
        fooled[idx] = fooled[idx] | f_r

    def _start(self, x: Tensor) -> Tensor:
        """Reference start: a random point on the ball's surface (L-inf: scaled by the max entry), in the box."""
        if self.threat.norm == "linf":
            t = sharded_rand(x.shape, dtype=x.dtype, device=x.device) * 2 - 1
            scale = t.reshape(t.shape[0], -1).abs().amax(dim=1)
        else:
            t = sharded_rand(x.shape, dtype=x.dtype, device=x.device, normal=True)
            scale = t.reshape(t.shape[0], -1).norm(dim=1)
        return (x + self.threat.eps * t / _per_sample(scale + 1e-12, t)).clamp(0.0, 1.0)

    def _direction(self, grad: Tensor) -> Tensor:
        """Steepest-ascent direction of unit norm (sign for L-inf, normalised gradient for L2)."""
        return self.threat.steepest_ascent(grad)

    def _run(self, x: Tensor, y: Tensor, label: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One APGD run; returns (first fooling iterate else best-loss iterate, fooled, best loss)."""
        if self.threat.norm == "l1":
            return self._run_l1_restart(x, y, label)
        x_adv = self._start(x)
        grad, loss, logits = self.gradient(x_adv, label)
        fooled = logits.argmax(dim=1) != y
        x_fool = x_adv.clone()
        x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), loss.clone()
        step = torch.full((x.shape[0],), INITIAL_STEP * self.threat.eps, dtype=x.dtype, device=x.device)
        x_prev = x_adv.clone()
        last_loss = loss
        increases = torch.zeros_like(loss)
        best_at_check = loss_best.clone()
        reduced_at_check = torch.ones_like(fooled)
        schedule = iter(self.checkpoints)
        next_check: float = next(schedule)
        since_check = 0
        for i in range(self.steps):
            a = MOMENTUM if i > 0 else 1.0
            z = self.threat.project(x_adv + _per_sample(step, x) * self._direction(grad), x)
            x_new = self.threat.project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev), x)
            x_prev, x_adv = x_adv, x_new
            grad, loss, logits = self.gradient(x_adv, label)
            newly = (logits.argmax(dim=1) != y) & ~fooled
            x_fool = _where(newly, x_adv, x_fool)
            fooled = fooled | newly
            improved = loss > loss_best
            x_best = _where(improved, x_adv, x_best)
            grad_best = _where(improved, grad, grad_best)
            loss_best = torch.where(improved, loss, loss_best)
            increases += (loss > last_loss).to(increases.dtype)
            last_loss = loss
            since_check += 1
            if since_check == next_check:
                cond1 = increases <= self.rho * since_check
                cond2 = ~reduced_at_check & (best_at_check >= loss_best)
                reduce = cond1 | cond2
                step = torch.where(reduce, step / 2, step)
                x_adv = _where(reduce, x_best, x_adv)
                grad = _where(reduce, grad_best, grad)
                reduced_at_check, best_at_check = reduce, loss_best.clone()
                increases.zero_()
                next_check, since_check = next(schedule, math.inf), 0
        if self.max_loss:
            return x_best, fooled, loss_best
        return _where(fooled, x_fool, x_best), fooled, loss_best


    def _run_l1_restart(self, x: Tensor, y: Tensor, label: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One L1 restart: a single run at eps, or the large-eps schedule (only the last stage's successes count)."""
        noise = sharded_rand(x.shape, dtype=x.dtype, device=x.device, normal=True)
        if not self.use_largereps:
            x_best, fooled, loss_best, x_fool = self._run_l1(x, y, label, self.threat, self.steps, x + noise, False)
        else:
            x_init = x + noise
            for factor, steps in large_eps_schedule(self.steps):
                threat = ThreatModel("l1", factor * self.threat.eps)
                x_init, fooled, loss_best, x_fool = self._run_l1(x, y, label, threat, steps, x_init, True)
            x_best = x_init
        if self.max_loss:
            return x_best, fooled, loss_best
        return _where(fooled, x_fool, x_best), fooled, loss_best

    def _run_l1(
        self, x: Tensor, y: Tensor, label: Tensor, threat: ThreatModel, steps: int, x_init: Tensor, warm: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """APGD-L1 at ``threat``'s radius from the projection of ``x_init``; ``warm``: k from the start's sparsity.

        Returns (best-loss iterate, fooled, best loss, first fooling iterate).
        """
        n = x.shape[0]
        n_fts = x[0].numel()
        x_adv = threat.project(x_init, x)
        grad, loss, logits = self.gradient(x_adv, label)
        fooled = logits.argmax(dim=1) != y
        x_fool = x_adv.clone()
        x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), loss.clone()
        eta0 = L1_INITIAL_STEP * threat.eps
        step = torch.full((n,), eta0, dtype=x.dtype, device=x.device)
        if warm:
            sp_old = l0_norm(x_adv - x)
            topk = sp_old / n_fts / L1_STEP_DECAY
        else:
            topk = torch.full((n,), L1_SPARSITY, dtype=x.dtype, device=x.device)
            sp_old = torch.full_like(topk, float(n_fts))
        check_every = max(int(L1_CHECK_EVERY * steps), 1)
        rows = torch.arange(n, device=x.device)
        for i in range(steps):
            flat = grad.reshape(n, -1)
            kth = ((1.0 - topk) * n_fts).clamp(0, n_fts - 1).long()  # threshold rank in the ascending |g| order
            magnitude = flat.abs()
            # the value at ascending rank kth is the (n_fts - kth)-th largest: only the largest few need ordering
            largest = magnitude.topk(int((n_fts - kth).max()), dim=1).values
            thresh = largest[rows, n_fts - 1 - kth]
            direction = flat.sign() * (magnitude >= thresh[:, None])
            direction = direction / (direction.abs().sum(dim=1, keepdim=True) + 1e-10)
            x_adv = threat.project(x_adv + _per_sample(step, x) * direction.view_as(x), x)
            grad, loss, logits = self.gradient(x_adv, label)
            newly = (logits.argmax(dim=1) != y) & ~fooled
            x_fool = _where(newly, x_adv, x_fool)
            fooled = fooled | newly
            improved = loss > loss_best
            x_best = _where(improved, x_adv, x_best)
            grad_best = _where(improved, grad, grad_best)
            loss_best = torch.where(improved, loss, loss_best)
            if (i + 1) % check_every == 0:
                sp_curr = l0_norm(x_best - x)
                sparser = sp_curr / sp_old < 0.95
                topk = sp_curr / n_fts / L1_STEP_DECAY
                step = torch.where(sparser, torch.full_like(step, eta0), step / L1_STEP_DECAY)
                step = step.clamp(eta0 / L1_MIN_STEP, eta0)
                sp_old = sp_curr
                x_adv = _where(sparser, x_best, x_adv)
                grad = _where(sparser, grad_best, grad)
        return x_best, fooled, loss_best, x_fool


register_attack("apgd-ce", APGD)


@register_attack("apgd-dlr")
class APGDDLR(APGD):
    """APGD with the DLR loss by default (AutoAttack's ``apgd-dlr``)."""

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        steps: int = 100,
        restarts: int = 1,
        loss: str = "dlr",
        rho: float = 0.75,
        eot_samples: int = 1,
        seed: int | None = None,
        max_loss: bool = False,
        use_largereps: bool = False,
    ) -> None:
        super().__init__(
            model, threat, steps=steps, restarts=restarts, loss=loss, rho=rho, eot_samples=eot_samples, seed=seed,
            max_loss=max_loss, use_largereps=use_largereps,
        )


@register_attack("apgd-t")
class APGDTargeted(APGD):
    """``APGDTargeted(model, threat, steps=100, n_target_classes=9)``: APGD-T, one targeted-DLR APGD per target.

    Targets are the ``n_target_classes`` highest-scoring classes other than the top one on the clean input (capped
    at ``classes - 1``); each target class runs ``restarts`` runs on the samples still not misclassified.
    """

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        steps: int = 100,
        n_target_classes: int = 9,
        restarts: int = 1,
        rho: float = 0.75,
        eot_samples: int = 1,
        seed: int | None = None,
        use_largereps: bool = False,
    ) -> None:
        super().__init__(
            model, threat, steps=steps, restarts=restarts, loss="ce", rho=rho, eot_samples=eot_samples, seed=seed,
            use_largereps=use_largereps,
        )
        self.n_target_classes = _check_count(n_target_classes, "n_target_classes")
        self.loss_name = "dlr-targeted"
        self.loss_fn = targeted_dlr

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", n_target_classes={self.n_target_classes})"

    def _check_classes(self, x: Tensor) -> None:
        """The targeted DLR loss reads the 4th-largest logit."""
        num_classes = predict(self.model, x[:1]).shape[1]
        if num_classes < 4:
            raise InputError(f"APGD-T needs >= 4 classes (targeted DLR), got {num_classes}")

    def _attack(self, x: Tensor, y: Tensor) -> Tensor:
        """Targets in order of the clean scores; each runs on the samples no earlier target has fooled."""
        order = predict(self.model, x).argsort(dim=1, descending=True)
        n_targets = min(self.n_target_classes, order.shape[1] - 1)
        best, fooled, best_loss = x.clone(), torch.zeros_like(y, dtype=torch.bool), x.new_full(y.shape, -math.inf)
        for rank in range(1, n_targets + 1):
            idx = (~fooled).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            pair = torch.stack([y[idx], order[idx, rank]], dim=1)
            self._merge(best, fooled, best_loss, idx, *self._restarts(x[idx], y[idx], pair, self.restarts))
        return best
