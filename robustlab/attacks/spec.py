"""Build an attack from its config (YAML presets, CLI, objectives): the one place names meet classes."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from torch import nn

from robustlab.errors import ConfigError
from robustlab.threat import ThreatModel

if TYPE_CHECKING:
    from robustlab.attacks.base import Attack
    from robustlab.training.config import AttackConfig

_SHARED_FIELDS = ("steps", "step_size", "restarts", "random_start", "loss", "eot_samples")


def build_attack(cfg: AttackConfig, model: nn.Module, *, eps: float | None = None, **extra: object) -> Attack:
    """Instantiate ``cfg.name`` from the attack registry on ``model``, optionally at another ``eps``.

    Only fields that are set (not None) are passed on, and a field the attack does not take is an error
    (``steps`` on FGSM, say), so a config never silently means something other than it says. When ``eps``
    differs from the config's (eps warm-up), an explicit ``step_size`` is scaled by the same factor.
    """
    from robustlab.attacks import create_attack

    if cfg.surrogate is not None:
        raise ConfigError(f"attack {cfg.name!r}: 'surrogate' ({cfg.surrogate!r}) is an evaluation setting (the "
                          "protocol crafts on the surrogate view and judges on the model); training attacks take none")
    threat = ThreatModel(cfg.norm, cfg.eps if eps is None else eps)
    kwargs: dict[str, object] = {f: getattr(cfg, f) for f in _SHARED_FIELDS if getattr(cfg, f) is not None}
    if eps is not None and cfg.step_size is not None:
        kwargs["step_size"] = cfg.step_size * eps / cfg.eps
    kwargs.update(extra)
    try:
        return create_attack(cfg.name, model, threat, **kwargs)
    except TypeError as exc:
        bad = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if bad is None:
            raise
        raise ConfigError(f"attack {cfg.name!r} takes no {bad.group(1)!r} setting") from None
