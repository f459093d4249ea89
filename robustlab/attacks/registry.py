"""Attack name registry: configs and the CLI name attacks; each attack module registers its classes."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from robustlab.attacks.base import Attack
from robustlab.core.registry import Registry
from robustlab.core.threat import ThreatModel

ATTACKS: Registry[type[Attack]] = Registry(
    "attack", check=lambda c: isinstance(c, type) and issubclass(c, Attack), expects="an Attack subclass")


def register_attack(
    name: str, cls: type[Attack] | None = None, *, overwrite: bool = False
) -> type[Attack] | Callable[[type[Attack]], type[Attack]]:
    """Make ``create_attack(name, ...)`` build ``cls(model, threat, **kwargs)``; also usable as a class decorator."""
    return ATTACKS.register(name, cls, overwrite=overwrite)


def list_attacks() -> list[str]:
    """Registered attack names, sorted."""
    return ATTACKS.names()


def get_attack_class(name: str) -> type[Attack]:
    """The class registered under ``name``; unknown names raise UnknownNameError listing the valid ones."""
    return ATTACKS.get(name)


def create_attack(name: str, model: nn.Module, threat: ThreatModel, **kwargs: object) -> Attack:
    """Build a registered attack by name, e.g. ``create_attack("pgd", model, threat, steps=20)``."""
    return get_attack_class(name)(model, threat, **kwargs)
