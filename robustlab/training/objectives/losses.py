"""Per-sample building blocks of the robust training losses (TRADES, MART, ADR, UDR), in float32.

Each function takes logits and returns one value per sample, so objectives can weight, mask and average them
as their papers do. KL arguments follow TRADES' official code: ``KL(p(x) || p(x_adv))`` (UDR spec A10).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from robustlab.attacks.losses import LossFn
from robustlab.core.errors import InputError


def kl_per_sample(ref_logits: Tensor, logits: Tensor) -> Tensor:
    """``KL(softmax(ref_logits) || softmax(logits))`` per sample; gradients flow into both arguments."""
    ref_log = F.log_softmax(ref_logits.float(), dim=1)
    log = F.log_softmax(logits.float(), dim=1)
    return (ref_log.exp() * (ref_log - log)).sum(dim=1)


def kl_attack_loss(clean_logits: Tensor) -> LossFn:
    """The TRADES inner objective ``KL(p(x) || p(x'))`` with the clean side fixed, as an attack loss ``(logits, y)``."""
    ref = clean_logits.detach().float()

    def loss(logits: Tensor, y: Tensor) -> Tensor:
        if logits.shape != ref.shape:
            raise InputError(f"the KL attack loss was built for a batch of shape {tuple(ref.shape)}, "
                             f"got logits of shape {tuple(logits.shape)} (restarts/early stop are not supported)")
        return kl_per_sample(ref, logits)

    return loss


def true_class_probability(logits: Tensor, y: Tensor) -> Tensor:
    """``p_y(x)`` per sample."""
    return F.softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1)


def boosted_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """MART's BCE: ``-log p_y - log(1 - max_{k != y} p_k)`` per sample (Wang et al. 2020, Eq. 7 of the UDR spec)."""
    logits = logits.float()
    probs = F.softmax(logits, dim=1)
    other = probs.masked_fill(F.one_hot(y, probs.shape[1]).bool(), 0.0).amax(dim=1)
    ce = F.cross_entropy(logits, y, reduction="none")
    return ce - torch.log((1.0 - other).clamp_min(1e-12))


def entropy(logits: Tensor) -> Tensor:
    """Shannon entropy of ``softmax(logits)`` per sample (nats)."""
    log = F.log_softmax(logits.float(), dim=1)
    return -(log.exp() * log).sum(dim=1)
