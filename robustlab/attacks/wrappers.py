"""Attack wrappers for adaptive evaluation: BPDA for non-differentiable steps and transfer (black-box) attacks.

**BPDA** (Athalye et al. 2018, Backward Pass Differentiable Approximation): ``BPDA(f, approx)`` runs the real ``f``
forward and back-propagates through ``approx`` (identity by default). Wrap *only* the non-differentiable part of a
defence (rounding, JPEG, quantisation, a discrete purifier step): ``nn.Sequential(BPDA(quantise), classifier)``.
Honesty rule: never wrap a differentiable part, since replacing a true gradient by an approximation weakens the attack
and overstates robustness.

**Transfer**: :class:`TransferAttack` crafts examples on a source model, to be evaluated on a target (a black-box
baseline, and a check: a transfer attack beating the white-box one signals gradient masking);
:func:`transfer_matrix` gives the accuracy of every model on examples crafted on every model.

**Randomised defences**: there is no stochastic-averaging wrapper. Expectation over Transformation is the
``eot_samples`` argument of every gradient attack (:func:`robustlab.attacks.base.input_gradient` averages the
gradient over that many forward passes), e.g. ``PGD(model, threat, eot_samples=20)``; use
:func:`robustlab.evaluation.sanity.output_randomness` to see whether a model needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.attacks.base import Attack, attack_mode, predict
from robustlab.core.errors import InputError
from robustlab.core.validation import check_images, check_labels

AttackFn = Callable[[Tensor, Tensor], Tensor]
TensorFn = Callable[[Tensor], Tensor]


class _BPDAFunction(torch.autograd.Function):
    """Forward: the real function; backward: the vector-Jacobian product of the approximation."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, real: TensorFn, approx: TensorFn | None) -> Tensor:
        ctx.approx = approx
        ctx.save_for_backward(x)
        return real(x)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        if ctx.approx is None:  # identity: d approx / dx = I
            if grad_output.shape != x.shape:
                raise InputError(f"BPDA identity needs the output shape {tuple(grad_output.shape)} to equal the "
                                 f"input shape {tuple(x.shape)}; pass an approx")
            return grad_output, None, None
        with torch.enable_grad():
            x_req = x.detach().requires_grad_(True)
            out = ctx.approx(x_req)
            if out.shape != grad_output.shape:
                raise InputError(f"BPDA approx output shape {tuple(out.shape)} differs from the real output shape "
                                 f"{tuple(grad_output.shape)}")
            (grad,) = torch.autograd.grad(out, x_req, grad_output)
        return grad, None, None


class BPDA(nn.Module):
    """``BPDA(f, approx=None)``: forward is ``f(x)``, backward the gradient of ``approx`` (identity by default).

    For non-differentiable parts of a defence only (see the module docstring). ``f`` and ``approx`` may be
    ``nn.Module`` s; they are then registered as submodules, so ``.eval()`` and ``.to()`` reach them.
    """

    def __init__(
        self,
        module_forward: Callable[[Tensor], Tensor],
        approx: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        if not callable(module_forward) or (approx is not None and not callable(approx)):
            raise InputError("BPDA needs callables: module_forward(x) and optionally approx(x)")
        self.real = module_forward
        self.approx = approx

    def forward(self, x: Tensor) -> Tensor:
        """The real function's output, with the approximation's gradient attached."""
        return _BPDAFunction.apply(x, self.real, self.approx)

    def extra_repr(self) -> str:
        return "approx=identity" if self.approx is None else ""


class TransferAttack:
    """``TransferAttack(attack_on_source)(x, y)``: adversarial examples crafted on the source model.

    Evaluate them on a different target, e.g. ``NamedAttack("transfer", TransferAttack(PGD(src, t)), t, {})`` in
    :func:`robustlab.evaluation.robust.robust_flags` with the target model. No gradient of the target is used.
    """

    def __init__(self, source_attack: Attack) -> None:
        if not callable(source_attack):
            raise InputError(f"source_attack must be callable, got {type(source_attack).__name__}")
        self.source_attack = source_attack

    @property
    def source_model(self) -> nn.Module | None:
        """The model the examples are crafted on (None when the source attack does not expose one)."""
        return getattr(self.source_attack, "model", None)

    def __call__(self, x: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
        if target is None:
            return self.source_attack(x, y).detach()
        return self.source_attack(x, y, target=target).detach()

    def __repr__(self) -> str:
        return f"TransferAttack({self.source_attack!r})"


def _craft(attack: AttackFn, x: Tensor, y: Tensor, batch_size: int) -> Tensor:
    """Run ``attack`` over ``x`` in chunks."""
    return torch.cat([attack(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def _accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> float:
    """Accuracy of ``model`` on ``x`` in eval mode, without gradients."""
    with attack_mode(model):
        return float((predict(model, x, batch_size).argmax(dim=1) == y).float().mean())


def transfer_matrix(
    models: dict[str, nn.Module],
    attack_factory: Callable[[nn.Module], AttackFn],
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 256,
) -> dict[tuple[str, str], float]:
    """``a[(src, tgt)]``: accuracy of ``tgt`` on examples crafted by ``attack_factory(models[src])`` on all of x.

    The diagonal is the white-box accuracy; examples are crafted once per source and reused for every target.
    """
    check_images(x)
    check_labels(y, x.shape[0])
    if not models:
        raise InputError("transfer_matrix needs at least one model")
    out: dict[tuple[str, str], float] = {}
    for src, source in models.items():
        x_adv = _craft(attack_factory(source), x, y, batch_size)
        for tgt, target in models.items():
            out[(src, tgt)] = _accuracy(target, x_adv, y, batch_size)
    return out
