"""Attacks: callable objects ``attack(x, y[, target=t]) -> x_adv`` and a name registry for configs and the CLI.

To add an attack, write its module (an :class:`Attack` subclass decorated with
``@register_attack("name")`` from :mod:`robustlab.attacks.registry`) and import the module here. The registry
holds classes, so configs can check keyword arguments against the constructor's signature.
"""

from __future__ import annotations

from robustlab.attacks import (  # noqa: F401  (registration side effects)
    apgd,
    bb,
    cw,
    deepfool,
    fab,
    fgsm,
    mim,
    moo,
    multitarget,
    pgd,
    rfgsm,
    spsa,
    square,
)
from robustlab.attacks.base import Attack, attack_mode, input_gradient, predict
from robustlab.attacks.fgsm import FGSM, FGSMRS
from robustlab.attacks.losses import LOSSES, get_loss
from robustlab.attacks.pgd import BIM, PGD, attack_success
from robustlab.attacks.registry import create_attack, get_attack_class, list_attacks, register_attack

__all__ = [
    "LOSSES",
    "Attack",
    "BIM",
    "FGSM",
    "FGSMRS",
    "PGD",
    "attack_mode",
    "attack_success",
    "create_attack",
    "get_attack_class",
    "get_loss",
    "input_gradient",
    "list_attacks",
    "predict",
    "register_attack",
]
