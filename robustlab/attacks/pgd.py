"""Projected gradient descent (Madry et al. 2018) with random restarts and early stopping, and BIM.

Each step is ``x <- project(x + step_size * steepest_ascent(grad))``: the gradient sign for L-inf, the normalised
gradient for L2 and the sparse SLIDE direction for L1 (see :meth:`ThreatModel.steepest_ascent`). The default step
size is Madry's ``2.5 * eps / steps``, so that a run can cross the ball and back within its budget.

Restarts: per sample we keep the point that fools the model if any restart does, otherwise the one with the highest
objective. Restarts after the first run only on the samples not fooled yet: a fooled sample is already at its worst
case (a success cannot get better), so re-attacking it would cost forward/backward passes without changing the
result.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustlab.attacks.base import Attack
from robustlab.attacks.losses import LossFn
from robustlab.attacks.registry import register_attack
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel
from robustlab.core.validation import check_logits, check_positive

MADRY_STEP = 2.5  # Madry et al. (2018): step size 2.5 * eps / steps


def _check_count(value: int, name: str) -> int:
    """Require an integer >= 1 (steps, restarts)."""
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def attack_success(logits: Tensor, label: Tensor, targeted: bool) -> Tensor:
    """Per-sample success: misclassified (untargeted) or classified as the target (targeted)."""
    pred = logits.argmax(dim=1)
    return pred == label if targeted else pred != label


@register_attack("pgd")
class PGD(Attack):
    """``PGD(model, threat, steps=40)``: iterated steepest-ascent steps projected onto the ball and the box.

    ``step_size`` defaults to Madry's ``2.5 * eps / steps``. A ``target`` makes it descend the loss on the target.
    ``early_stop=True`` drops samples from the active batch as soon as they are fooled (evaluation: same success,
    less compute, the fooled iterate is returned); training keeps it False to return the last iterate as in Madry.
    """

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        steps: int = 40,
        step_size: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        loss: str | LossFn = "ce",
        eot_samples: int = 1,
        early_stop: bool = False,
    ) -> None:
        super().__init__(model, threat, loss=loss, eot_samples=eot_samples)
        self.steps = _check_count(steps, "steps")
        self.restarts = _check_count(restarts, "restarts")
        if step_size is not None:
            check_positive(step_size, "step_size")
        self.step_size = float(step_size) if step_size is not None else MADRY_STEP * threat.eps / self.steps
        self.random_start = bool(random_start)
        if self.restarts > 1 and not self.random_start:
            raise InputError("restarts > 1 need random_start=True: without a random start every restart is identical")
        self.early_stop = bool(early_stop)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.threat}, steps={self.steps}, step_size={self.step_size:.6g}, "
            f"random_start={self.random_start}, restarts={self.restarts}, loss={self.loss_name!r}, "
            f"eot={self.eot_samples}, early_stop={self.early_stop})"
        )

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Run ``restarts`` runs, later ones only on samples not yet fooled; keep each sample's worst case."""
        targeted = target is not None
        label = target if target is not None else y
        if self.restarts == 1:
            return self._run(x, label, targeted, evaluate=False)[0]
        best, best_obj, fooled = self._run(x, label, targeted, evaluate=True)
        for _ in range(1, self.restarts):
            idx = (~fooled).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x_r, obj_r, fooled_r = self._run(x[idx], label[idx], targeted, evaluate=True)
            better = fooled_r | (obj_r > best_obj[idx])  # the old ones are not fooled, so a success always wins
            sel = idx[better]
            best[sel] = x_r[better]
            best_obj[sel] = obj_r[better].to(best_obj.dtype)
            fooled[sel] = fooled_r[better]
        return best

    def _run(self, x: Tensor, label: Tensor, targeted: bool, *, evaluate: bool) -> tuple[Tensor, Tensor, Tensor]:
        """One PGD run; with ``evaluate`` also the final objective and success per sample (one extra forward)."""
        x_adv = self.threat.random_start(x) if self.random_start else x.clone()
        bounds = self._linf_bounds(x)
        if self.early_stop:
            return self._run_early_stop(x, x_adv, label, targeted, bounds, evaluate=evaluate)
        for _ in range(self.steps):
            grad, _, _ = self.gradient(x_adv, label, targeted=targeted)
            x_adv = self._step(x_adv, grad, x, bounds)
        if not evaluate:
            return x_adv, x_adv.new_empty(0), label.new_empty(0, dtype=torch.bool)
        obj, fooled = self._evaluate(x_adv, label, targeted)
        return x_adv, obj, fooled

    def _run_early_stop(
        self,
        x: Tensor,
        x_adv: Tensor,
        label: Tensor,
        targeted: bool,
        bounds: tuple[Tensor, Tensor] | None,
        *,
        evaluate: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """A PGD run whose active batch shrinks as samples get fooled; a fooled sample keeps the fooling iterate."""
        n = x.shape[0]
        out = x_adv  # rows are final once their sample leaves the active set
        obj_out = x.new_full((n,), float("-inf"))
        fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
        idx = torch.arange(n, device=x.device)
        for _ in range(self.steps):
            grad, obj, logits = self.gradient(x_adv, label, targeted=targeted)
            succ = attack_success(logits, label, targeted)
            if bool(succ.any()):  # the only host sync of a step, needed to shrink the batch
                done = succ.nonzero().squeeze(1)
                out[idx[done]] = x_adv[done]
                obj_out[idx[done]] = obj[done].to(obj_out.dtype)
                fooled[idx[done]] = True
                keep = (~succ).nonzero().squeeze(1)
                if keep.numel() == 0:
                    return out, obj_out, fooled
                idx, x_adv, x, label, grad = idx[keep], x_adv[keep], x[keep], label[keep], grad[keep]
                if bounds is not None:
                    bounds = (bounds[0][keep], bounds[1][keep])
            x_adv = self._step(x_adv, grad, x, bounds)
        if x_adv is not out:  # the L-inf step works in place, so without a shrink x_adv may still be out
            out[idx] = x_adv
        if evaluate:
            obj, succ = self._evaluate(x_adv, label, targeted)
            obj_out[idx] = obj.to(obj_out.dtype)
            fooled[idx] = succ
        return out, obj_out, fooled

    def _linf_bounds(self, x: Tensor) -> tuple[Tensor, Tensor] | None:
        """For L-inf the ball intersected with the box is the box [max(x-eps, 0), min(x+eps, 1)]: one clamp projects."""
        if self.threat.norm != "linf":
            return None
        eps = self.threat.eps
        return (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)

    def _step(self, x_adv: Tensor, grad: Tensor, x: Tensor, bounds: tuple[Tensor, Tensor] | None) -> Tensor:
        """One ascent step and projection; L-inf works in place on ``x_adv`` and ``grad`` to avoid allocations."""
        if bounds is not None:
            x_adv.add_(grad.sign_(), alpha=self.step_size)
            return x_adv.clamp_(min=bounds[0], max=bounds[1])
        if self.threat.norm == "l1":
            # coordinates pinned at the box edge cannot move outwards; spend the sparse L1 budget elsewhere
            grad = grad.masked_fill_(((x_adv <= 0) & (grad < 0)) | ((x_adv >= 1) & (grad > 0)), 0.0)
        step = self.threat.steepest_ascent(grad).mul_(self.step_size)
        return self.threat.project(x_adv.add_(step), x)

    @torch.no_grad()
    def _evaluate(self, x_adv: Tensor, label: Tensor, targeted: bool) -> tuple[Tensor, Tensor]:
        """Objective and success at ``x_adv``, averaged over EoT samples like :func:`input_gradient` (no backward)."""
        obj_sum = x_adv.new_zeros(x_adv.shape[0])
        logits_sum: Tensor | None = None
        for _ in range(self.eot_samples):
            logits = check_logits(self.model(x_adv), x_adv.shape[0]).float()
            obj = self.loss_fn(logits, label)
            obj_sum += -obj if targeted else obj
            logits_sum = logits if logits_sum is None else logits_sum + logits
        assert logits_sum is not None
        return obj_sum / self.eot_samples, attack_success(logits_sum, label, targeted)


@register_attack("bim")
class BIM(PGD):
    """Basic Iterative Method (Kurakin et al. 2017; thesis Eq. 2.20): PGD started at x itself, one run.

    Same step-size default as PGD (``2.5 * eps / steps``); pass the paper's ``step_size`` to reproduce a protocol.
    """

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        steps: int = 40,
        step_size: float | None = None,
        loss: str | LossFn = "ce",
        eot_samples: int = 1,
        early_stop: bool = False,
    ) -> None:
        super().__init__(
            model,
            threat,
            steps=steps,
            step_size=step_size,
            random_start=False,
            restarts=1,
            loss=loss,
            eot_samples=eot_samples,
            early_stop=early_stop,
        )
