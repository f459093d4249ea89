"""An attack as configuration (YAML presets, ``--set``, objectives, protocols) and the one place names meet classes.

``AttackConfig`` carries the threat model, the settings every iterative attack shares under one vocabulary
(``steps``, ``step_size``, ``restarts``, ``random_start``, ``loss``, ``eot_samples``) and any other keyword the
attack's constructor takes (Square's ``queries``, APGD-T's ``n_target_classes``, CW's ``binary_search_steps``).
Every setting is checked against the registered class's signature, and the norm against the class's ``norms``, when
the config is read, so a typo, a setting the attack does not take or a norm it does not implement fails (with the
valid ones) before anything runs.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from robustlab.attacks.base import Attack
from robustlab.attacks.registry import create_attack, get_attack_class
from robustlab.core.errors import ConfigError
from robustlab.core.threat import ThreatModel

#: Fields of every config that are not constructor keywords: the name and threat model, and evaluation's surrogate.
_NOT_SETTINGS = frozenset({"name", "norm", "eps", "surrogate"})


def attack_settings(cls: type[Attack]) -> dict[str, inspect.Parameter | None]:
    """The keyword settings an attack class's constructor takes (everything but the model and threat model),
    following ``**kwargs`` up to the parent constructors they are passed to. A class whose ``**kwargs`` go to an
    options model instead declares them as ``extra_settings`` (no signature shows them)."""
    out: dict[str, inspect.Parameter | None] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        for p in params:
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("self", "model", "threat"):
                out.setdefault(p.name, p)
        if "extra_settings" in vars(klass):
            out.update((name, None) for name in vars(klass)["extra_settings"] if name not in out)
            break
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return out


def takes_setting(name: str, setting: str) -> bool:
    """Whether registered attack ``name`` takes ``setting`` (e.g. ``early_stop``: it can drop fooled points)."""
    return setting in attack_settings(get_attack_class(name))


class AttackConfig(BaseModel):
    """An attack as used by an objective (training), for validation, or by an evaluation protocol."""

    model_config = ConfigDict(extra="allow")

    name: str = "pgd"
    norm: Literal["linf", "l2", "l1"] = "linf"
    eps: float = Field(gt=0)
    # None = the attack's own default (see the attack's docstring)
    steps: int | None = Field(default=None, ge=1)
    step_size: float | None = Field(default=None, gt=0)
    restarts: int | None = Field(default=None, ge=1)
    random_start: bool | None = None
    loss: str | None = None
    eot_samples: int | None = Field(default=None, ge=1)  # gradients averaged over this many passes (stochastic models)
    # evaluation only: craft on this view of the model (CARSO: an aggregation, e.g. "logit", smooth where "peel"
    # saturates), then judge the examples on the model itself; rules out gradient masking by the model's output
    surrogate: str | None = None

    @model_validator(mode="after")
    def _settings_the_attack_takes(self) -> AttackConfig:
        try:
            cls = get_attack_class(self.name)
        except KeyError as exc:  # UnknownNameError: the message lists the registered attacks
            raise ValueError(str(exc)) from None
        if self.norm not in cls.norms:
            raise ValueError(f"attack {self.name!r} supports the {', '.join(cls.norms)} norm(s), not {self.norm!r}")
        valid = attack_settings(cls)
        unknown = sorted(k for k, v in self.settings().items() if k not in valid)
        if unknown:
            raise ValueError(f"attack {self.name!r} takes no setting(s) {', '.join(unknown)}; its settings: "
                             f"{', '.join(sorted(valid)) or '(none)'}")
        return self

    def settings(self) -> dict[str, Any]:
        """The constructor keywords this config sets (shared fields that are not None, then any other setting)."""
        data = self.model_dump(exclude_none=True)
        return {k: v for k, v in data.items() if k not in _NOT_SETTINGS}


def build_attack(cfg: AttackConfig, model: nn.Module, *, eps: float | None = None, **extra: object) -> Attack:
    """Instantiate ``cfg.name`` from the attack registry on ``model``, optionally at another ``eps``.

    Only settings that are set are passed on (each one checked when the config was read). When ``eps`` differs from
    the config's (eps warm-up), an explicit ``step_size`` is scaled by the same factor. ``extra`` are keywords the
    caller adds (evaluation's ``early_stop``).
    """
    if cfg.surrogate is not None:
        raise ConfigError(f"attack {cfg.name!r}: 'surrogate' ({cfg.surrogate!r}) is an evaluation setting (the "
                          "protocol crafts on the surrogate view and judges on the model); training attacks take none")
    threat = ThreatModel(cfg.norm, cfg.eps if eps is None else eps)
    kwargs: dict[str, Any] = cfg.settings()
    if eps is not None and cfg.step_size is not None:
        kwargs["step_size"] = cfg.step_size * eps / cfg.eps
    kwargs.update(extra)
    return create_attack(cfg.name, model, threat, **kwargs)
