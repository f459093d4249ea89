"""Attack name registry: configs and the CLI name attacks; each attack module registers its classes."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from robustlab.attacks.base import Attack
from robustlab.errors import InputError, UnknownNameError
from robustlab.threat import ThreatModel

_REGISTRY: dict[str, type[Attack]] = {}


def _canonical(name: str) -> str:
    """Registry key: lower case, underscores as hyphens (``"FGSM_RS"`` -> ``"fgsm-rs"``)."""
    return str(name).strip().lower().replace("_", "-")


def register_attack(
    name: str, cls: type[Attack] | None = None, *, overwrite: bool = False
) -> type[Attack] | Callable[[type[Attack]], type[Attack]]:
    """Make ``create_attack(name, ...)`` build ``cls(model, threat, **kwargs)``; also usable as a class decorator."""

    def add(c: type[Attack]) -> type[Attack]:
        if not (isinstance(c, type) and issubclass(c, Attack)):
            raise InputError(f"register_attack needs an Attack subclass, got {c!r}")
        key = _canonical(name)
        if key in _REGISTRY and _REGISTRY[key] is not c and not overwrite:
            raise InputError(f"attack {key!r} is already registered; pass overwrite=True to replace it")
        _REGISTRY[key] = c
        return c

    return add if cls is None else add(cls)


def list_attacks() -> list[str]:
    """Registered attack names, sorted."""
    return sorted(_REGISTRY)


def get_attack_class(name: str) -> type[Attack]:
    """The class registered under ``name``; unknown names raise UnknownNameError listing the valid ones."""
    key = _canonical(name)
    if key not in _REGISTRY:
        raise UnknownNameError(f"unknown attack {name!r}; valid attacks: {', '.join(list_attacks())}")
    return _REGISTRY[key]


def create_attack(name: str, model: nn.Module, threat: ThreatModel, **kwargs: object) -> Attack:
    """Build a registered attack by name, e.g. ``create_attack("pgd", model, threat, steps=20)``."""
    return get_attack_class(name)(model, threat, **kwargs)
