"""Configured attacks made ready for an evaluation: labelled, built with evaluation settings (early stop where the
attack takes it), and crafted on a surrogate view of the model where the config asks for one."""

from __future__ import annotations

from typing import Any

from torch import nn

from robustlab.attacks.config import AttackConfig, build_attack, takes_setting
from robustlab.attacks.wrappers import TransferAttack
from robustlab.core.errors import ConfigError
from robustlab.core.threat import ThreatModel
from robustlab.evaluation import labels
from robustlab.evaluation.classifier_only import entry_name
from robustlab.evaluation.config import EvalConfig
from robustlab.evaluation.robust import AttackFn, NamedAttack


def attack_label(cfg: AttackConfig) -> str:
    """Human-readable label naming every setting that is set: ``pgd-50x3 step_size=0.01 linf eps=0.3``."""
    return labels.attack_label(cfg.model_dump(exclude_none=True))


def surrogate_view(model: nn.Module, name: str) -> nn.Module:
    """The model seen through surrogate ``name`` (weights shared). CARSO models offer their aggregations."""
    from robustlab.purification.carso.evaluation import AggregationView
    from robustlab.purification.carso.model import carso_of

    try:
        carso_of(model)
    except ConfigError:
        raise ConfigError(f"attack surrogate {name!r}: this model has no surrogate views (CARSO models have one per "
                          "aggregation: peel, logit, prob, count)") from None
    return AggregationView(model, name)


def first_attack_config(cfg: EvalConfig) -> AttackConfig:
    """The protocol's first attack; PGD-50 at AutoAttack's threat model for an AutoAttack-only protocol.

    The large-eps sanity check and the eps sweep re-run this attack at other radii."""
    if cfg.attacks:
        return cfg.attacks[0]
    assert cfg.autoattack is not None
    return AttackConfig(name="pgd", norm=cfg.autoattack.norm, eps=cfg.autoattack.eps, steps=50)


def named_attacks(model: nn.Module, cfgs: list[AttackConfig]) -> list[NamedAttack]:
    """Build each configured attack with evaluation settings (early stop on fooled points where supported)."""
    out = []
    for cfg in cfgs:
        extra: dict[str, Any] = {"early_stop": True} if takes_setting(cfg.name, "early_stop") else {}
        attack: AttackFn
        if cfg.surrogate:  # crafted on the view, judged (by robust_flags) on the model itself
            attack = TransferAttack(build_attack(cfg.model_copy(update={"surrogate": None}),
                                                 surrogate_view(model, cfg.surrogate), **extra))
        else:
            attack = build_attack(cfg, model, **extra)
        out.append(NamedAttack(attack_label(cfg), attack, ThreatModel(cfg.norm, cfg.eps), _settings(cfg)))
    return out


def _settings(cfg: AttackConfig) -> dict[str, Any]:
    return cfg.model_dump(exclude_none=True, exclude={"norm", "eps"})


def protocol_entries(cfg: EvalConfig) -> list[dict[str, Any]]:
    """The ``protocol`` list an evaluation under ``cfg`` writes into its result: each attack's registry name, threat
    model and settings, then AutoAttack's settings, then the classifier-only AutoAttack's (marked as outside the worst
    case). Reproduce matches stored results against it."""
    out: list[dict[str, Any]] = [{"name": attack_label(a), "threat": ThreatModel(a.norm, a.eps).to_dict(),
                                  **_settings(a)} for a in cfg.attacks]
    if cfg.autoattack is not None:
        out.append({"name": f"autoattack-{cfg.autoattack.version}", **cfg.autoattack.model_dump(exclude_none=True)})
    if cfg.classifier_only is not None:  # crafted on the classifier alone: its name never starts with "autoattack"
        out.append({"name": entry_name(cfg.classifier_only), "judged_on": "carso", "in_worst_case": False,
                    **cfg.classifier_only.model_dump(exclude_none=True)})
    return out
