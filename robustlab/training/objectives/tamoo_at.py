"""TA-MOO adversarial training of an ensemble (Bui et al., TMLR 2023, App. D.2): adversarial examples from the
TA-MOO ENS attack on the members (task i = fool member i), then cross-entropy of the ensemble output
(log of the mean member softmax) on them.

The training loss is not stated in the paper; the default is the inferred CE(ens(x_adv), y). The released code also
adds the clean term (``natural_weight: 1.0``). ``method`` gives the paper's baselines with the same budget:
``minmax`` (MinMax-AT), ``moo`` (MOO-AT), ``uniform`` (sum of member losses). Set the attack to
``{name: tamoo-ens, eps: 8/255, steps: 10, step_size: 2/255}`` (paper; the code scripts use 20 steps).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from robustlab.attacks.config import build_attack
from robustlab.attacks.moo.applications import EnsembleMOO
from robustlab.core.errors import ConfigError
from robustlab.training.objectives.base import (
    Metrics,
    Objective,
    ObjectiveConfig,
    accuracy,
    register_objective,
    unwrap,
)


class TAMOOATParams(BaseModel):
    """Solver options of the training attack (see MOOSettings; its task loss is ``attack.loss``, CE by default)
    and the loss weights."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["tamoo", "moo", "uniform", "minmax"] = "tamoo"
    lam: float = Field(default=100.0, ge=0)
    inner_steps: int = Field(default=10, ge=0)
    w_lr: float = Field(default=0.005, gt=0)
    gamma: float = Field(default=3.0, ge=0)
    init: Literal["symmetric", "positive", "zero"] = "symmetric"
    order: Literal["paper", "code"] = "paper"
    adv_weight: float = Field(default=1.0, gt=0)
    natural_weight: float = Field(default=0.0, ge=0)


@register_objective("tamoo-at")
class TAMOOAT(Objective):
    """min_theta adv_weight * CE(ens(x_adv), y) + natural_weight * CE(ens(x), y), x_adv = ENS TA-MOO on members."""

    model_kind = "ensemble"

    Params: ClassVar[type[BaseModel]] = TAMOOATParams
    params: TAMOOATParams

    def __init__(self, cfg: ObjectiveConfig) -> None:
        super().__init__(cfg)
        if cfg.attack is not None and cfg.attack.name.replace("_", "-").lower() != "tamoo-ens":
            raise ConfigError(f"objective 'tamoo-at' crafts its examples with the 'tamoo-ens' attack, "
                              f"got attack {cfg.attack.name!r}; set attack.name: tamoo-ens")

    def craft(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, EnsembleMOO]:
        """TA-MOO (or baseline) ENS examples on the bare ensemble, in eval mode (the attack's own context)."""
        p = self.params
        assert self.cfg.attack is not None
        attack = build_attack(self.cfg.attack, unwrap(model), eps=self.current_eps, method=p.method,
                              lam=p.lam, inner_steps=p.inner_steps, w_lr=p.w_lr, gamma=p.gamma, init=p.init,
                              order=p.order)
        assert isinstance(attack, EnsembleMOO)
        return attack(x, y), attack

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Metrics]:
        p = self.params
        x_adv, attack = self.craft(model, x, y)
        with torch.no_grad():
            rates = attack.success(x_adv, y)
        logits_adv = model(x_adv)
        loss = p.adv_weight * F.cross_entropy(logits_adv.float(), y)
        metrics: Metrics = {"adv_acc": accuracy(logits_adv, y), "members_fooled_all": rates.a_all / 100,
                            "members_fooled_avg": rates.a_avg / 100}
        if p.natural_weight > 0:
            logits = model(x)
            loss = loss + p.natural_weight * F.cross_entropy(logits.float(), y)
            metrics["acc"] = accuracy(logits, y)
        metrics["loss"] = float(loss.detach())
        return loss, metrics

