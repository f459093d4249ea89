"""Crossing Collaborative Ensemble (CCE; Bui et al., AAAI 2021; thesis ch.4 Part A), objective ``cce``.

Each member n gets a white-box PGD example x_a^n of its own (on the member alone). Its loss is (Eq. 5)

    L^n = C(f^n(x), y) + w_dpo C(f^n(x_a^n), y)
          + 1/(N-1) sum_{i != n} mean_batch[ lam_pm s C(f^n(x_a^i), y) - lam_dm (1 - s) H(f^n(x_a^i)) ]

with s = f^n_y(x_a^i), the soft indicator, used as a constant (stop-gradient, as the paper states; the released code
has no explicit stop: ``stop_gradient: false``). ``indicator: hard`` uses I[argmax f^n(x_a^i) = y] (Eq. 1). On another
member's example a member is promoted (cPO, cross-entropy) if it is right and demoted (DO, entropy ascent) if wrong.
The trained loss is sum_n L^n (each L^n depends on its own member only). Variants: ``rm`` (lam_pm = lam_dm = 1,
default), ``dm`` (0, 5: detection mode), ``base`` (0, 0). Cross-entropy and entropy are on the member softmax
(natural log), not on a second softmax of probabilities as the released code does (spec C4).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, model_validator
from torch import Tensor, nn

from robustlab.core.errors import ConfigError
from robustlab.models.ensemble import as_ensemble, log_mean_softmax, member_logits, member_models
from robustlab.training.objectives.adversarial import AdversarialObjective, AdversarialParams
from robustlab.training.objectives.base import Metrics, ObjectiveConfig, register_objective
from robustlab.training.objectives.losses import entropy

VARIANTS: dict[str, tuple[float, float]] = {"rm": (1.0, 1.0), "dm": (0.0, 5.0), "base": (0.0, 0.0)}


class CCEParams(AdversarialParams):
    """CCE weights; ``variant`` fills lambda_pm/lambda_dm from the paper's table (an explicit clash is an error)."""

    variant: Literal["rm", "dm", "base"] | None = None
    lambda_pm: float = Field(default=1.0, ge=0)
    lambda_dm: float = Field(default=1.0, ge=0)
    dpo_weight: float = Field(default=1.0, ge=0)
    clean_weight: float = Field(default=1.0, ge=0)
    indicator: Literal["soft", "hard"] = "soft"
    stop_gradient: bool = True

    @model_validator(mode="before")
    @classmethod
    def _apply_variant(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("variant") is None:
            return data
        variant = data["variant"]
        if variant not in VARIANTS:
            return data  # the Literal check reports the valid names
        pm, dm = VARIANTS[variant]
        for key, want in (("lambda_pm", pm), ("lambda_dm", dm)):
            if key in data and float(data[key]) != want:
                raise ValueError(f"variant {variant!r} sets {key}={want}; drop {key} or the variant")
        return {**data, "lambda_pm": pm, "lambda_dm": dm}


def cross_indicator(logits: Tensor, y: Tensor, *, kind: str = "soft", stop_gradient: bool = True) -> Tensor:
    """Per-sample switch between promote (1) and demote (0): p_y (soft) or I[argmax = y] (hard)."""
    if kind == "hard":
        return (logits.argmax(dim=1) == y).float()
    s = F.softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1)
    return s.detach() if stop_gradient else s


def cce_member_losses(
    clean: Tensor, adv: Tensor, y: Tensor, *, lambda_pm: float, lambda_dm: float, dpo_weight: float = 1.0,
    clean_weight: float = 1.0, indicator: str = "soft", stop_gradient: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """CCE losses L^n (K,) from member logits on clean x (K, N, C) and on every x_a^i, ``adv[i, n]`` = f^n(x_a^i).

    Also returns the per-pair promote weights ``s`` (K_i, K_n, N) for diagnostics (diagonal unused).
    """
    k = clean.shape[0]
    losses, weights = [], torch.zeros(adv.shape[:3], device=adv.device)
    for n in range(k):
        ln = clean_weight * F.cross_entropy(clean[n].float(), y) + dpo_weight * F.cross_entropy(adv[n, n].float(), y)
        if k > 1 and (lambda_pm > 0 or lambda_dm > 0):
            cross = adv.new_zeros(())
            for i in range(k):
                if i == n:
                    continue
                logits = adv[i, n]
                s = cross_indicator(logits, y, kind=indicator, stop_gradient=stop_gradient)
                weights[i, n] = s.detach()
                ce = F.cross_entropy(logits.float(), y, reduction="none")
                cross = cross + (lambda_pm * s * ce - lambda_dm * (1 - s) * entropy(logits)).mean()
            ln = ln + cross / (k - 1)
        losses.append(ln)
    return torch.stack(losses), {"s": weights}


@register_objective("cce")
class CCE(AdversarialObjective):
    """CCE: per-member PGD examples; dPO on each member's own, cPO/DO on the others' by the soft indicator."""

    model_kind = "ensemble"

    Params: ClassVar[type[BaseModel]] = CCEParams
    params: CCEParams

    def __init__(self, cfg: ObjectiveConfig) -> None:
        super().__init__(cfg)
        if self.params.udr is not None:
            raise ConfigError("cce crafts one example set per member; the udr soft ball is not supported with it")

    def craft(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """x_a^n for every member n, each a white-box attack on member n alone: (K, N, C, H, W).

        The attack ascends its configured loss (PGD's default: cross-entropy, the paper's cleverhans setting)."""
        views = member_models(model, who="objective 'cce'")
        return torch.stack([self.attack(view)(x, y) for view in views])

    def outer_loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Metrics]:
        p = self.params
        k = len(as_ensemble(model, who="objective 'cce'"))
        clean = member_logits(model, x)
        cross_needed = p.lambda_pm > 0 or p.lambda_dm > 0
        if cross_needed:
            adv = torch.stack([member_logits(model, x_adv[i]) for i in range(k)])  # adv[i, n] = f^n(x_a^i)
        else:
            adv = torch.zeros(k, k, *clean.shape[1:], device=clean.device, dtype=clean.dtype)
            for n, view in enumerate(member_models(model)):
                adv[n, n] = view(x_adv[n])
        losses, extra = cce_member_losses(clean, adv, y, lambda_pm=p.lambda_pm, lambda_dm=p.lambda_dm,
                                          dpo_weight=p.dpo_weight, clean_weight=p.clean_weight,
                                          indicator=p.indicator, stop_gradient=p.stop_gradient)
        with torch.no_grad():
            own = torch.stack([adv[n, n] for n in range(k)])
            metrics: Metrics = {
                "acc": float((log_mean_softmax(clean).argmax(1) == y).float().mean()),
                "member_acc": float((clean.argmax(2) == y).float().mean()),
                "adv_acc": float((own.argmax(2) == y).float().mean()),
            }
            if cross_needed:
                off = ~torch.eye(k, dtype=torch.bool, device=adv.device)
                metrics["cross_acc"] = float((adv.argmax(3) == y)[off].float().mean())
                metrics["promote_weight"] = float(extra["s"][off].mean())
        return losses.sum(), metrics
