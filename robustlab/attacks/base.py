"""What every attack shares: the eval-mode context, the one input-gradient function (with EoT) and the
callable ``Attack`` base class that validates input and keeps outputs in the threat model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from robustlab.attacks.losses import LossFn, get_loss
from robustlab.core.errors import InputError, NoGradientError
from robustlab.core.threat import NORMS, ThreatModel
from robustlab.core.validation import check_images, check_labels, check_logits, check_module, check_positive


@contextlib.contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode and switch parameter gradients off; restore both exactly afterwards."""
    check_module(model)
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


def input_gradient(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    *,
    targeted: bool = False,
    eot_samples: int = 1,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradient of the per-sample attack objective with respect to the input.

    The objective is ``loss_fn(logits, y)`` (or its negative when ``targeted``, with ``y`` the target), so
    ascending the gradient always helps the attacker. With ``eot_samples > 1`` the gradient, loss and logits
    are averaged over that many forward passes of a stochastic model (Expectation over Transformation).
    Returns ``(grad, objective, logits)``, the latter two detached, each averaged over EoT samples.
    """
    if eot_samples < 1:
        raise InputError(f"eot_samples must be >= 1, got {eot_samples}")
    sums: list[Tensor] = []  # gradient, objective, logits, summed over the EoT samples
    for _ in range(eot_samples):
        x_req = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = check_logits(model(x_req), x.shape[0])
            objective = loss_fn(logits, y)
            if targeted:
                objective = -objective
            if not objective.requires_grad:
                raise NoGradientError(
                    "the model's output does not depend differentiably on its input (e.g. a hard-vote or argmax "
                    "output): a gradient attack cannot run on it. Attack a differentiable view of the model (for "
                    "CARSO: surrogate: logit) or approximate the non-differentiable part with BPDA")
            (grad,) = torch.autograd.grad(objective.sum(), x_req)
        sample = (grad, objective.detach().to(x.dtype), logits.detach().float())
        sums = list(sample) if not sums else [total + t for total, t in zip(sums, sample, strict=True)]
    if eot_samples == 1:  # one pass: nothing to average, so no copy on the attacks' hot path...
        grad = sums[0]
        if not (grad.is_contiguous() or grad.is_contiguous(memory_format=torch.channels_last)):
            grad = grad.contiguous()  # ...unless autograd gave a broadcast view, which callers may not write into
        return grad, sums[1], sums[2]
    return sums[0] / eot_samples, sums[1] / eot_samples, sums[2] / eot_samples


def check_norm(cls: type[Attack], norm: str) -> None:
    """Refuse a threat-model norm the attack class does not declare in ``norms``, naming the ones it has."""
    if norm not in cls.norms:
        raise InputError(f"attack {cls.__name__} supports the {', '.join(cls.norms)} norm(s), not {norm}")


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Logits of ``model`` on ``x`` in chunks, without gradients (the model's mode is left to the caller)."""
    chunks = (x[i : i + batch_size] for i in range(0, len(x), batch_size))
    return torch.cat([check_logits(model(chunk), len(chunk)) for chunk in chunks])


def _probe(model: nn.Module, x: Tensor) -> object:
    """One forward pass whose shape errors name the input convention (a raw conv error says neither)."""
    try:
        return model(x)
    except RuntimeError as exc:
        looks_nhwc = x.dim() == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3)
        nhwc = " (it looks like NHWC: use x.permute(0, 3, 1, 2))" if looks_nhwc else ""
        raise InputError(f"the model failed on an input of shape {tuple(x.shape)}{nhwc}; robustlab feeds float NCHW "
                         f"images in [0, 1]. The model said: {exc}") from exc


class Attack:
    """Base class: ``attack = PGD(model, threat, ...); x_adv = attack(x, y)`` or ``attack(x, y, target=t)``.

    ``__call__`` validates inputs, runs ``perturb`` under :func:`attack_mode`, and checks that the output lies
    in the threat model's ball and the [0, 1] box. Subclasses implement ``perturb``.
    """

    supports_targeted: bool = True
    #: Makes forward passes only (score-based): AutoAttack runs it with channels-last weights on CPU, where
    #: forward passes are faster in that layout and forward + backward ones are not.
    forward_only: bool = False
    #: The threat-model norms the attack implements; a config naming it at another norm is refused when it is read.
    norms: tuple[str, ...] = NORMS
    #: Constructor settings no signature shows (forwarded through ``**options`` to an options model).
    extra_settings: frozenset[str] = frozenset()

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        loss: str | LossFn = "ce",
        eot_samples: int = 1,
    ) -> None:
        if not isinstance(threat, ThreatModel):
            raise InputError(f"threat must be a ThreatModel, got {type(threat).__name__}")
        check_norm(type(self), threat.norm)
        check_positive(eot_samples, "eot_samples")
        check_module(model)
        self.model = model
        self.threat = threat
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")
        self.loss_fn = get_loss(loss)
        self.eot_samples = int(eot_samples)

    def gradient(self, x: Tensor, y: Tensor, *, targeted: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """The shared input gradient with this attack's loss and EoT setting."""
        return input_gradient(self.model, x, y, self.loss_fn, targeted=targeted, eot_samples=self.eot_samples)

    def _check_inputs(self, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Validate images, labels and targets (before any forward pass); returns them on x's device."""
        check_images(x)
        check_labels(y, x.shape[0])
        y = y.to(x.device)
        if target is not None:
            if not self.supports_targeted:
                raise InputError(f"{type(self).__name__} has no targeted mode")
            check_labels(target, x.shape[0], name="target")
            target = target.to(x.device)
            if bool((target == y).any()):
                raise InputError("target equals the true label for some samples; a targeted attack needs target != y")
        return y, target

    def __call__(self, x: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
        y, target = self._check_inputs(x, y, target)
        with attack_mode(self.model):
            with torch.no_grad():
                num_classes = check_logits(_probe(self.model, x[:1]), 1).shape[1]
            check_labels(y, x.shape[0], num_classes)
            if target is not None:
                check_labels(target, x.shape[0], num_classes, name="target")
            x_adv = self.perturb(x.detach(), y, target)
        x_adv = x_adv.detach()
        if not bool(self.threat.contains(x_adv, x).all()):  # a bug in an attack, never the user's fault
            raise RuntimeError(f"{type(self).__name__} produced points outside {self.threat} or [0, 1]")
        return x_adv

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Return adversarial examples for validated inputs; the model is already in attack mode."""
        raise NotImplementedError


class BoundarySearchAttack(Attack):
    """Base of minimum-norm attacks that search for the closest adversarial point (FAB, Brendel & Bethge).

    Subclasses implement ``_search(x, y, target, stop_at) -> (best, best_norm)``: per sample the closest adversarial
    point found (x where none) and its norm (inf where none); ``stop_at`` lets a sample stop once within that norm.
    As a fixed-eps attack a sample gets its closest point if that lies within eps, otherwise x unchanged.
    """

    def minimal_perturbation(self, x: Tensor, y: Tensor, target: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(x_min, found)`` without the eps cut; samples already misclassified come back unchanged, found."""
        y, target = self._check_inputs(x, y, target)
        with attack_mode(self.model):
            best, best_norm = self._search(x.detach(), y, target, stop_at=None)
        return best.detach(), torch.isfinite(best_norm)

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """The closest adversarial point found when it lies within eps; other samples stay at ``x``."""
        best, best_norm = self._search(x, y, target, stop_at=self.threat.eps)
        keep = (best_norm <= self.threat.eps).reshape(-1, *([1] * (x.dim() - 1)))
        return self.threat.project(torch.where(keep, best, x), x)

    def _search(self, x: Tensor, y: Tensor, target: Tensor | None, stop_at: float | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError
