"""CARSO's aggregation rules: E stochastic classifier outputs per image -> one logit vector.

``peel`` (the paper's default, "normalised doubly-exponential logit product") is computed in log space in float64:
log S_c = logsumexp_e l_{c,e}; log p = S - logsumexp(S); out = log p - log(1 - p) with log(1 - p_c) taken as the
logsumexp of the other classes' log p. The naive fp32 formula returns +-inf as soon as the logits reach ~3
(spec §1.7); this one stays finite (values beyond the float32 range are clipped to it).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from robustlab.core.errors import InputError, UnknownNameError

AGGREGATIONS = ("peel", "logit", "prob", "softmax", "count", "count-floor")
_F32_MAX = torch.finfo(torch.float32).max


def _others_logsumexp(log_p: Tensor) -> Tensor:
    """log(sum_{c' != c} p_c') for every c, from log p (B, C), without cancellation."""
    c = log_p.shape[-1]
    eye = torch.eye(c, dtype=torch.bool, device=log_p.device)
    masked = log_p.unsqueeze(-2).expand(*log_p.shape[:-1], c, c).masked_fill(eye, float("-inf"))
    return torch.logsumexp(masked, dim=-1)


def peel(logits: Tensor) -> Tensor:
    """PeeL: S_c = sum_e exp(l_{c,e}); p = softmax_c(S); out = log(p / (1 - p)), all in log space (float64)."""
    log_s = torch.logsumexp(logits.double(), dim=1)  # (B, C): log sum_e exp(l)
    s = torch.exp(log_s)  # finite for logits below ~700
    log_p = s - torch.logsumexp(s, dim=-1, keepdim=True)
    out = log_p - _others_logsumexp(log_p)
    return out.clamp(-_F32_MAX, _F32_MAX).to(logits.dtype)


def mean_logit(logits: Tensor) -> Tensor:
    """``logit``: the mean logit over samples (geometric pooling of the softmaxes)."""
    return logits.mean(dim=1)


def prob(logits: Tensor) -> Tensor:
    """``prob``: r = mean_e sigmoid(l); log(r / (1 - r)) as logsumexp_e logsigmoid(l) - logsumexp_e logsigmoid(-l)."""
    lf = torch.nn.functional.logsigmoid
    return torch.logsumexp(lf(logits), dim=1) - torch.logsumexp(lf(-logits), dim=1)


def softmax_mean(logits: Tensor) -> Tensor:
    """``softmax``: v1's sum of the samples' softmaxes, as log(mean_e softmax(l)) (same argmax as the sum; a log,
    so it is a logit vector whose softmax is that mean)."""
    log_p = torch.log_softmax(logits.double(), dim=-1)
    return (torch.logsumexp(log_p, dim=1) - math.log(logits.shape[1])).to(logits.dtype)


def count(logits: Tensor) -> Tensor:
    """``count``: hard vote, the number of samples whose argmax is each class (the paper's "hard voting")."""
    votes = torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1])
    return votes.sum(dim=1).to(logits.dtype)


def count_floor(logits: Tensor) -> Tensor:
    """The released code's literal count, sum_e floor(l_{c,e} / max_c' l_{c',e}); ill-defined for max <= 0 (spec §4)."""
    top = logits.max(dim=-1, keepdim=True).values
    return torch.floor(logits / top).sum(dim=1)


_RULES = {"peel": peel, "logit": mean_logit, "prob": prob, "softmax": softmax_mean, "count": count,
          "count-floor": count_floor}


def check_aggregation(name: str) -> str:
    """Validate an aggregation name (UnknownNameError lists the valid ones)."""
    if name not in _RULES:
        raise UnknownNameError(f"unknown aggregation {name!r}; valid: {', '.join(AGGREGATIONS)}")
    return name


def aggregate(logits: Tensor, rule: str = "peel") -> Tensor:
    """Aggregate per-sample logits (B, E, C) into (B, C) with ``rule`` (one of :data:`AGGREGATIONS`)."""
    fn = _RULES[check_aggregation(rule)]
    if logits.dim() != 3 or logits.shape[1] < 1 or logits.shape[2] < 2:
        raise InputError(f"aggregation needs logits of shape (B, E>=1, C>=2), got {tuple(logits.shape)}")
    return fn(logits)
