"""The bundled AToP presets. A preset ``atop-<dataset>`` is two things: the bundled robustlab preset of the same name
(``robustlab train atop-mnist`` trains the frozen classifier; its ``eval`` is the undefended classifier's baseline)
and the purifier settings below (:data:`ATOP_PRESETS`), which the generic preset schema has no section for."""

from __future__ import annotations

import copy
from typing import Any

from robustlab.core.config import Strict, parse_config
from robustlab.core.dicts import deep_merge
from robustlab.core.errors import ConfigError, UnknownNameError
from robustlab.presets import Preset, load_preset
from robustlab.purification.atop.config import AToPConfig, ProtocolSettings

_MNIST_EVAL = {"norm": "linf", "eps": 0.3, "unseen": {"linf": 0.3, "l2": 2.0, "l1": 10.0}}
_CIFAR_EVAL = {"norm": "linf", "eps": 8 / 255, "unseen": {"linf": 8 / 255, "l2": 0.5, "l1": 12.0}}

# MNIST and Fashion-MNIST share their budgets (28x28 grayscale, the same purifier size). The quick scale uses the
# autoencoder purifier: in 128 CPU steps the GAN inpainter does not learn (measured on MNIST: with the L1 term at
# weight 1 the classifier read 6% of its outputs; at GAN weight 0.1 the L1 term drove every pixel to the median,
# black, for good), while the AE reaches ~90%. The paper scale keeps the GAN.
_GRAYSCALE_SCALES: dict[str, Any] = {
    "quick": {"atop": {"train_subset": 4096, "pretrain": {"epochs": 2, "batch_size": 64, "lr": 5e-4},
                       "purifier": {"kind": "ae", "width": 16, "disc_width": 16},
                       "finetune": {"epochs": 1, "batch_size": 32, "lr": 2e-4}},
              "eval": {"n": 200, "eot_samples": 4, "apgd_steps": 20, "c_steps": 40, "unseen_steps": 20}},
    "paper": {"atop": {"pretrain": {"epochs": 20}, "finetune": {"epochs": 10}}},
}

#: Purifier settings of each bundled AToP preset, per scale; the classifier part is the YAML preset of the same name.
ATOP_PRESETS: dict[str, dict[str, Any]] = {
    "atop-mnist": {
        "atop": {"dataset": "mnist", "finetune": {"attack": {"name": "fgsm", "norm": "linf", "eps": 0.3}}},
        "eval": _MNIST_EVAL,
        "scales": _GRAYSCALE_SCALES,
    },
    "atop-fashion-mnist": {
        "atop": {"dataset": "fashion-mnist", "finetune": {"attack": {"name": "fgsm", "norm": "linf", "eps": 0.1}}},
        "eval": {**_MNIST_EVAL, "eps": 0.1, "unseen": {"linf": 0.1, "l2": 1.5, "l1": 10.0}},
        "scales": _GRAYSCALE_SCALES,
    },
    "atop-cifar10": {
        "atop": {"dataset": "cifar10", "val_size": 1000},
        "eval": _CIFAR_EVAL,
        "scales": {
            "quick": {"atop": {"train_subset": 2048, "pretrain": {"epochs": 1, "batch_size": 32, "lr": 5e-4},
                               "purifier": {"width": 16, "disc_width": 16},
                               "finetune": {"epochs": 1, "batch_size": 16}},
                      "eval": {"n": 64, "eot_samples": 2, "apgd_steps": 10, "c_steps": 20, "unseen_steps": 10}},
            # code: "epoch" = 625 iterations x 8 images, up to 300 epochs; pre-training is 1e6 iterations at bs 16
            "paper": {"atop": {"pretrain": {"epochs": 100}, "finetune": {"epochs": 300, "max_steps_per_epoch": 625}}},
        },
    },
}


class AToPPreset(Strict):
    """A resolved AToP preset: the classifier's robustlab preset, the purifier run and the protocol settings."""

    model_config = {"arbitrary_types_allowed": True, "extra": "forbid"}
    name: str
    scale: str
    classifier: Preset
    atop: AToPConfig
    eval: ProtocolSettings


def load_atop_preset(name: str, scale: str = "quick", overrides: dict[str, Any] | None = None) -> AToPPreset:
    """Resolve ``atop-<dataset>`` at ``scale``; ``overrides`` may touch ``atop`` and ``eval`` (nested dicts)."""
    if name not in ATOP_PRESETS:
        raise UnknownNameError(f"unknown AToP preset {name!r}; valid: {', '.join(sorted(ATOP_PRESETS))}")
    body = ATOP_PRESETS[name]
    if scale not in body["scales"]:
        raise ConfigError(f"AToP preset {name} has no {scale!r} scale; it has: {', '.join(body['scales'])}")
    merged = {"atop": copy.deepcopy(body["atop"]), "eval": copy.deepcopy(body["eval"])}
    merged = deep_merge(merged, body["scales"][scale])
    merged = deep_merge(merged, overrides or {})
    unknown = set(merged) - {"atop", "eval"}
    if unknown:
        raise ConfigError(f"AToP overrides may only touch 'atop' and 'eval', got {sorted(unknown)}")
    merged["atop"].setdefault("name", f"{name}-{scale}")
    return AToPPreset(name=name, scale=scale, classifier=load_preset(name, scale),
                      atop=parse_config(merged["atop"], AToPConfig, "atop"),
                      eval=parse_config(merged["eval"], ProtocolSettings, "eval"))


__all__ = ["ATOP_PRESETS", "AToPPreset", "load_atop_preset"]
