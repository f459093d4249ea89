"""Adversarial weight perturbation (Wu et al. 2020), as in the authors' ``utils_awp.py`` and UDR's released code.

Before the training loss is computed, the weights are moved to (approximately) the worst case in a layer-wise
relative ball: a proxy copy of the model takes one SGD step (``proxy_lr``) on ``-loss``, and every weight tensor
with more than one dimension is moved by ``gamma * ||w|| / ||w_proxy - w|| * (w_proxy - w)``. The optimizer step
is then taken at the perturbed weights and :meth:`WeightPerturbation.restore` subtracts the very same tensors, so
the net update is ``-lr * grad(loss)(w + v)``. Biases and normalisation parameters (1-D) are never perturbed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from robustlab.core.errors import InputError

EPS = 1e-20  # the reference code's guard against a zero proxy move


class AWPParams(BaseModel):
    """``gamma``: relative weight-perturbation size (0.01 in Wu et al. and UDR-AWP-AT; 0 = no perturbation);
    ``proxy_lr``: the proxy's SGD step (0.01; the layer-wise normalisation makes the result independent of it, as
    in the reference code whose proxy optimizer is plain SGD); ``warmup_epochs``: no perturbation before this many
    epochs (0)."""

    model_config = ConfigDict(extra="forbid")
    gamma: float = Field(default=0.01, ge=0)
    proxy_lr: float = Field(default=0.01, gt=0)
    warmup_epochs: float = Field(default=0.0, ge=0)


def _average_across_ranks(grads: list[Tensor]) -> None:
    """Under torchrun, average the proxy gradients so every rank computes the same perturbation (global batch)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


class WeightPerturbation:
    """``perturb(model, loss_fn, epochs_done)`` before the loss is computed, ``restore(model)`` after the step.

    The proxy is created once (a deep copy of the bare module) and reloaded from the model at every step. Its
    gradients are taken with ``torch.autograd.grad``, so nothing lands in the model's (or the proxy's) ``.grad``.
    The proxy runs in the model's mode (train mode during training: BatchNorm uses batch statistics, and only the
    proxy's running statistics move, which the next reload overwrites).
    """

    def __init__(self, params: AWPParams) -> None:
        self.params = params
        self._proxy: nn.Module | None = None
        self._applied: list[tuple[Tensor, Tensor]] = []  # (model parameter, tensor added to it)

    @property
    def pending(self) -> bool:
        """True between a perturbation and its :meth:`restore`."""
        return bool(self._applied)

    def active(self, epochs_done: float) -> bool:
        """Whether a step at this progress is perturbed (gamma > 0 and the warm-up is over)."""
        return self.params.gamma > 0 and epochs_done >= self.params.warmup_epochs

    def _sync_proxy(self, model: nn.Module) -> nn.Module:
        if self._proxy is None:
            self._proxy = copy.deepcopy(model)
        else:
            self._proxy.load_state_dict(model.state_dict())
        self._proxy.train(model.training)
        for p_proxy, p in zip(self._proxy.parameters(), model.parameters()):
            p_proxy.requires_grad_(p.requires_grad)
            p_proxy.grad = None
        return self._proxy

    def perturb(self, model: nn.Module, loss_fn: Callable[[nn.Module], Tensor], epochs_done: float) -> dict[str, float]:
        """Add ``gamma * diff`` to the weights of ``model`` (its bare module) and return metrics for logging.

        ``loss_fn(m)`` is the method's training loss evaluated with the module ``m`` (the proxy); the proxy step
        ascends it. Does nothing (returns ``{}``) with ``gamma == 0`` or before ``warmup_epochs``.
        """
        if self.pending:
            raise InputError("AWP: perturb() called twice without restore(); call restore() after the optimizer step")
        if not self.active(epochs_done):
            return {}
        bare = getattr(model, "module", model)
        proxy = self._sync_proxy(bare)
        named = [(n, p) for n, p in proxy.named_parameters() if p.requires_grad]
        proxy_loss = loss_fn(proxy)
        raw = torch.autograd.grad(-proxy_loss, [p for _, p in named], allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g.detach() for (_, p), g in zip(named, raw)]
        _average_across_ranks(grads)
        model_params = dict(bare.named_parameters())
        sq_sum = w_sum = proxy_loss.new_zeros((), dtype=torch.float32)
        with torch.no_grad():
            for (name, p_proxy), g in zip(named, grads):
                if p_proxy.dim() <= 1:
                    continue
                w = model_params[name]
                moved = -self.params.proxy_lr * g  # w_proxy - w after one plain SGD step on -loss
                diff = moved * (w.norm() / (moved.norm() + EPS))
                delta = (self.params.gamma * diff).to(w.dtype)
                sq_sum = sq_sum + delta.float().square().sum()
                w_sum = w_sum + w.float().square().sum()
                w.add_(delta)
                self._applied.append((w, delta))
        rel = float((sq_sum / w_sum.clamp_min(1e-30)).sqrt())  # = gamma unless a layer got no gradient
        return {"awp_proxy_loss": float(proxy_loss.detach()), "awp_rel_norm": rel}

    def restore(self, model: nn.Module) -> None:
        """Subtract exactly the tensors :meth:`perturb` added (a no-op when nothing is pending)."""
        with torch.no_grad():
            for w, delta in self._applied:
                w.sub_(delta)
        self._applied = []
