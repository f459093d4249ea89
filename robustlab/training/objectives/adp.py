"""ADP (adaptive diversity promoting; Pang et al. 2019), the thesis ch.4 baseline, objective ``adp``.

ADP_{alpha,beta}(x, y) = alpha H(f^en(x)) + beta log ED(x), where H is the Shannon entropy of the ensemble's mean
prediction and ED = det(M~^T M~ + det_offset I), M~ the members' non-true-class probability vectors, each
L2-normalised (the squared volume they span). The trained loss is the adversarial version (spec A9)

    L = sum_{z in {x, x_a}} [ sum_k CE(f^k(z), y) - alpha H(f^en(z)) - beta log ED(z) ]

with x_a crafted against the ensemble output. Defaults are ADP_{2,0.5} and the official code's offsets
(det_offset 1e-6, log_offset 1e-20 inside the entropy's log).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import Tensor, nn

from robustlab.models.ensemble import as_ensemble, log_mean_softmax, member_logits
from robustlab.training.objectives.adversarial import AdversarialObjective, AdversarialParams
from robustlab.training.objectives.base import Metrics, register_objective


class ADPParams(AdversarialParams):
    """alpha (entropy weight), beta (log-det weight) and the official numerical offsets."""

    alpha: float = Field(default=2.0, ge=0)
    beta: float = Field(default=0.5, ge=0)
    det_offset: float = Field(default=1e-6, gt=0)
    log_offset: float = Field(default=1e-20, ge=0)


def ensemble_entropy(member_z: Tensor, log_offset: float = 1e-20) -> Tensor:
    """Shannon entropy (nats) of the mean member softmax, per sample, from stacked logits (K, N, C)."""
    p = F.softmax(member_z.float(), dim=-1).mean(0)
    return -(p * torch.log(p + log_offset)).sum(1)


def log_ensemble_diversity(member_z: Tensor, y: Tensor, det_offset: float = 1e-6) -> Tensor:
    """log det(M~^T M~ + det_offset I) per sample: M~ = the members' L2-normalised non-true-class probabilities."""
    p = F.softmax(member_z.float(), dim=-1).transpose(0, 1)  # (N, K, C)
    n, k, c = p.shape
    keep = ~F.one_hot(y, c).bool()[:, None, :].expand(n, k, c)
    rest = p[keep].view(n, k, c - 1)
    rest = rest / rest.norm(dim=2, keepdim=True).clamp_min(1e-12)
    gram = rest @ rest.transpose(1, 2)
    return torch.logdet(gram + det_offset * torch.eye(k, device=p.device))


def adp_regularizer(member_z: Tensor, y: Tensor, *, alpha: float, beta: float, det_offset: float = 1e-6,
                    log_offset: float = 1e-20) -> Tensor:
    """ADP_{alpha,beta} per sample: alpha H(f^en) + beta log ED."""
    return alpha * ensemble_entropy(member_z, log_offset) + beta * log_ensemble_diversity(member_z, y, det_offset)


@register_objective("adp")
class ADP(AdversarialObjective):
    """Adversarial ADP: member cross-entropies minus ADP on the clean and on the ensemble-adversarial batch."""

    model_kind = "ensemble"

    Params: ClassVar[type[BaseModel]] = ADPParams
    params: ADPParams

    def _batch_loss(self, model: nn.Module, z_in: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        p = self.params
        z = member_logits(model, z_in)
        ce = sum(F.cross_entropy(zk.float(), y) for zk in z)
        reg = adp_regularizer(z, y, alpha=p.alpha, beta=p.beta, det_offset=p.det_offset, log_offset=p.log_offset)
        return ce - reg.mean(), z, reg

    def outer_loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Metrics]:
        as_ensemble(model, who="objective 'adp'")
        clean_loss, z, reg = self._batch_loss(model, x, y)
        adv_loss, z_adv, reg_adv = self._batch_loss(model, x_adv, y)
        with torch.no_grad():
            metrics: Metrics = {
                "acc": float((log_mean_softmax(z).argmax(1) == y).float().mean()),
                "adv_acc": float((log_mean_softmax(z_adv).argmax(1) == y).float().mean()),
                "adp_reg": float((reg.mean() + reg_adv.mean()) / 2),
                "log_ed": float(log_ensemble_diversity(z, y, self.params.det_offset).mean()),
            }
        return clean_loss + adv_loss, metrics
