"""SPSA (Uesato et al. 2018): a gradient-free attack that estimates the gradient of the margin loss from queries.

Each step draws ``n_samples`` Rademacher directions ``v`` (in chunks of ``chunk_size``) and estimates the gradient of
the margin ``z_y - max_{k != y} z_k`` (targeted: ``max_{k != t} z_k - z_t``) by central finite differences,
``mean_v [(L(x + delta v) - L(x - delta v)) / (2 delta)] v``; an Adam step with ``lr`` descends it, then the iterate is
projected onto the ball and the [0, 1] box. As in cleverhans' ``SPSA`` (the thesis's implementation) the start is
uniform in the L-inf ball and the finite-difference probes are not clipped to the box. Only forward passes under
``torch.no_grad`` are used; random draws come from a local generator seeded with ``seed``, so a call is reproducible.
A sample leaves the active batch as soon as it is fooled and keeps that iterate; the others return the point with the
lowest margin found.

Thesis settings (CCE tables, cleverhans SPSA): L-inf, eps = 8/255 (CIFAR-10) or 0.01 (CIFAR-100), 50 steps, on 1000
test samples; the perturbation size, batch and learning rate are unstated, so the defaults here are cleverhans's
(``delta=0.01``, ``lr=0.01``, 128 samples); pass ``steps=50`` to reproduce the tables.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustlab.attacks.base import Attack, predict
from robustlab.attacks.losses import cw_margin
from robustlab.attacks.pgd import _check_count, attack_success
from robustlab.attacks.registry import register_attack
from robustlab.core.threat import ThreatModel
from robustlab.core.validation import check_positive

_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-9  # cleverhans's SPSAAdam


class _Adam:
    """Per-sample Adam state for descending an estimated gradient; rows can be dropped as samples finish."""

    def __init__(self, like: Tensor, lr: float) -> None:
        self.m, self.v = torch.zeros_like(like), torch.zeros_like(like)
        self.t, self.lr = 0, lr

    def step(self, grad: Tensor) -> Tensor:
        """The update to add to the iterate (a descent step)."""
        self.t += 1
        self.m.mul_(_BETA1).add_(grad, alpha=1 - _BETA1)
        self.v.mul_(_BETA2).addcmul_(grad, grad, value=1 - _BETA2)
        m_hat = self.m / (1 - _BETA1**self.t)
        v_hat = self.v / (1 - _BETA2**self.t)
        return -self.lr * m_hat / (v_hat.sqrt() + _ADAM_EPS)

    def keep(self, rows: Tensor) -> None:
        """Keep only the given rows (the samples still active)."""
        self.m, self.v = self.m[rows], self.v[rows]


@register_attack("spsa")
class SPSA(Attack):
    """``SPSA(model, threat, steps=100, n_samples=128, delta=0.01, lr=0.01)``: finite-difference gradient + Adam.

    Forward passes only, under ``torch.no_grad``; ``chunk_size`` bounds how many directions are evaluated at once.
    """

    forward_only = True

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        steps: int = 100,
        n_samples: int = 128,
        delta: float = 0.01,
        lr: float = 0.01,
        seed: int = 0,
        chunk_size: int = 32,
    ) -> None:
        super().__init__(model, threat, loss="cw")
        self.steps = _check_count(steps, "steps")
        self.n_samples = _check_count(n_samples, "n_samples")
        self.chunk_size = _check_count(chunk_size, "chunk_size")
        check_positive(delta, "delta")
        check_positive(lr, "lr")
        self.delta, self.lr, self.seed = float(delta), float(lr), int(seed)

    def __repr__(self) -> str:
        return (
            f"SPSA({self.threat}, steps={self.steps}, n_samples={self.n_samples}, delta={self.delta:.6g}, "
            f"lr={self.lr:.6g}, seed={self.seed})"
        )

    @torch.no_grad()
    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Descend the margin with SPSA gradient estimates; fooled samples stop and keep their fooling iterate."""
        targeted = target is not None
        label = target if target is not None else y
        gen = torch.Generator().manual_seed(self.seed)
        x_adv = self._start(x, gen)
        margin, fooled = self._margin(x_adv, label, targeted)
        best, best_margin = x_adv.clone(), margin.clone()
        idx = torch.arange(x.shape[0], device=x.device)
        adam = _Adam(x, self.lr)
        for _ in range(self.steps):
            if bool(fooled.any()):  # fooled rows are final in ``best``; drop them from the active batch
                keep = (~fooled).nonzero().squeeze(1)
                if keep.numel() == 0:
                    break
                idx, x_adv = idx[keep], x_adv[keep]
                adam.keep(keep)
            grad = self._estimate(x_adv, label[idx], targeted, gen)
            x_adv = self.threat.project(x_adv + adam.step(grad), x[idx])
            margin, fooled = self._margin(x_adv, label[idx], targeted)
            better = fooled | (margin < best_margin[idx])
            best[idx[better]], best_margin[idx[better]] = x_adv[better], margin[better]
        return best

    def _start(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """Uniform noise in [-eps, eps] per coordinate (cleverhans's start), projected into the ball and the box."""
        noise = (torch.rand(x.shape, generator=gen) * 2 - 1).to(device=x.device, dtype=x.dtype)
        return self.threat.project(x + self.threat.eps * noise, x)

    def _margin(self, x: Tensor, label: Tensor, targeted: bool) -> tuple[Tensor, Tensor]:
        """The margin loss to minimise (< 0 once fooled) and per-sample success."""
        logits = predict(self.model, x)
        m = cw_margin(logits, label)
        return (m if targeted else -m), attack_success(logits, label, targeted)

    def _estimate(self, x: Tensor, label: Tensor, targeted: bool, gen: torch.Generator) -> Tensor:
        """SPSA gradient estimate of the margin from ``n_samples`` Rademacher directions, in chunks."""
        n, rest = x.shape[0], x.shape[1:]
        grad = torch.zeros_like(x)
        for start in range(0, self.n_samples, self.chunk_size):
            k = min(self.chunk_size, self.n_samples - start)
            v = (torch.randint(0, 2, (n, k, *rest), generator=gen) * 2 - 1).to(device=x.device, dtype=x.dtype)
            probes = torch.cat((x[:, None] + self.delta * v, x[:, None] - self.delta * v), dim=1).flatten(0, 1)
            labels = label.repeat_interleave(2 * k)
            loss = self._margin(probes, labels, targeted)[0].reshape(n, 2, k).to(x.dtype)
            diff = (loss[:, 0] - loss[:, 1]) / (2 * self.delta)
            grad += (diff.reshape(n, k, *([1] * len(rest))) * v).sum(1)
        return grad / self.n_samples
