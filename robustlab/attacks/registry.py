"""Attack name registry: configs and the CLI name attacks; each attack module registers its classes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from torch import nn

from robustlab.attacks.base import Attack
from robustlab.core.registry import Registry
from robustlab.core.threat import ThreatModel

ATTACKS: Registry[type[Attack]] = Registry(
    "attack", check=lambda c: isinstance(c, type) and issubclass(c, Attack), expects="an Attack subclass")


A = TypeVar("A", bound=type[Attack])


@overload
def register_attack(name: str, cls: None = None, *, overwrite: bool = False) -> Callable[[A], A]: ...


@overload
def register_attack(name: str, cls: A, *, overwrite: bool = False) -> A: ...


def register_attack(name: str, cls: A | None = None, *, overwrite: bool = False) -> A | Callable[[A], A]:
    """Make ``create_attack(name, ...)`` build ``cls(model, threat, **kwargs)``; also usable as a class decorator."""
    if cls is None:
        def add(item: A) -> A:
            ATTACKS.register(name, item, overwrite=overwrite)
            return item

        return add
    ATTACKS.register(name, cls, overwrite=overwrite)
    return cls


def list_attacks() -> list[str]:
    """Registered attack names, sorted."""
    return ATTACKS.names()


def get_attack_class(name: str) -> type[Attack]:
    """The class registered under ``name``; unknown names raise UnknownNameError listing the valid ones."""
    return ATTACKS.get(name)


def create_attack(name: str, model: nn.Module, threat: ThreatModel, **kwargs: Any) -> Attack:
    """Build a registered attack by name, e.g. ``create_attack("pgd", model, threat, steps=20)``."""
    return get_attack_class(name)(model, threat, **kwargs)
