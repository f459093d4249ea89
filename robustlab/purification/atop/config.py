"""AToP settings as a typed config (unknown keys are errors) and the bundled AToP presets.

Defaults are the spec's (released-code) values where the paper text is silent; each ambiguity of spec §4 is an option:
``finetune.attack_target`` (paper Eq. 9: the whole ``pipeline``; released code: the ``classifier`` alone),
``finetune.recon_target`` (``input`` = x' as Eq. 9 and the notebook; ``clean`` = x as another logged run),
``finetune.lambda_cls`` (None: 0.05 for adversarial, 0.1 for clean fine-tuning, the code's values),
``transform.per_sample`` (paper silent; code shares one mask per batch).

A preset ``atop-<dataset>`` is two things: the bundled robustlab preset of the same name (``robustlab train
atop-mnist`` trains the frozen classifier; its ``eval`` is the undefended classifier's baseline) and the purifier
settings below (:data:`ATOP_PRESETS`), which the generic preset schema has no section for.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

from pydantic import Field, field_validator

from robustlab.errors import ConfigError, UnknownNameError
from robustlab.presets import Preset, deep_merge, load_preset
from robustlab.purification.atop.purifiers import PURIFIERS
from robustlab.purification.atop.transforms import TRANSFORMS, RandomTransform
from robustlab.training.config import AttackConfig, Strict, parse_config, plain_run_name


class TransformSettings(Strict):
    """The random transform t (see :class:`RandomTransform`)."""

    name: str = "rt2"
    block_size: int = Field(default=4, ge=1)
    missing_rate: float = Field(default=0.25, gt=0, lt=1)
    noise_std: float = Field(default=0.25, ge=0)
    num_masks: int = Field(default=4, ge=2)
    per_sample: bool = True
    composite: bool = False

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v.strip().lower() not in TRANSFORMS:
            raise ValueError(f"unknown random transform {v!r}; valid: {', '.join(TRANSFORMS)}")
        return v.strip().lower()

    def build(self) -> RandomTransform:
        """The transform object."""
        return RandomTransform(self.name, block_size=self.block_size, missing_rate=self.missing_rate,
                               noise_std=self.noise_std, num_masks=self.num_masks, per_sample=self.per_sample)


class PurifierSettings(Strict):
    """Which purifier, its width, and the generative loss weights (released code: 1 and 1)."""

    kind: str = "gan"
    width: int = Field(default=32, ge=1)
    gan_weight: float = Field(default=1.0, ge=0)
    l1_weight: float = Field(default=1.0, ge=0)
    disc_width: int = Field(default=32, ge=1)

    @field_validator("kind")
    @classmethod
    def _known(cls, v: str) -> str:
        if v.strip().lower() not in PURIFIERS:
            raise ValueError(f"unknown purifier {v!r}; valid: {', '.join(PURIFIERS)}")
        return v.strip().lower()


class PhaseSettings(Strict):
    """One training phase: Adam (lr 1e-4, betas 0.5/0.999 as configs/train.yaml) for G and D."""

    epochs: int = Field(default=0, ge=0)
    batch_size: int = Field(default=16, ge=1)
    lr: float = Field(default=1e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)
    max_steps_per_epoch: int | None = Field(default=None, ge=1)


class FinetuneSettings(PhaseSettings):
    """AToP fine-tuning: ``l_g(x_in) + lambda * CE(f(g(t(x_in))), y)``, x_in = x' (adversarial) or x (clean)."""

    batch_size: int = Field(default=8, ge=1)
    variant: Literal["adversarial", "clean"] = "adversarial"
    attack: AttackConfig = Field(default_factory=lambda: AttackConfig(name="fgsm", norm="linf", eps=8 / 255))
    attack_target: Literal["pipeline", "classifier"] = "pipeline"
    attack_eot: int = Field(default=1, ge=1)
    lambda_cls: float | None = Field(default=None, ge=0)
    recon_target: Literal["input", "clean"] = "input"
    ce_start_epoch: int = Field(default=0, ge=0)

    @property
    def lam(self) -> float:
        """lambda: as set, else the released code's 0.05 (adversarial) / 0.1 (clean)."""
        if self.lambda_cls is not None:
            return self.lambda_cls
        return 0.05 if self.variant == "adversarial" else 0.1


class AToPConfig(Strict):
    """Everything that determines a purifier run step by step (hashed for resume)."""

    name: str = "atop"
    dataset: str
    data_root: str | None = None
    seed: int = 777
    train_subset: int | None = Field(default=None, ge=1)
    val_size: int = Field(default=5000, ge=0)
    checkpoint_every_steps: int = Field(default=0, ge=0)
    transform: TransformSettings = Field(default_factory=TransformSettings)
    purifier: PurifierSettings = Field(default_factory=PurifierSettings)
    pretrain: PhaseSettings = Field(default_factory=lambda: PhaseSettings(epochs=1, batch_size=16))
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings)

    _safe_name = field_validator("name")(plain_run_name)


class ProtocolSettings(Strict):
    """Evaluation of the defence (spec §2.6): A full pipeline with EoT, B BPDA-identity / classifier-only,
    C PGD+EoT, and the unseen threats (every ``unseen`` threat attacked end to end with EoT)."""

    n: int = Field(default=512, ge=1)
    batch_size: int = Field(default=128, ge=1)
    seed: int = 0
    norm: Literal["linf", "l2", "l1"] = "linf"
    eps: float = Field(default=8 / 255, gt=0)
    eot_samples: int = Field(default=20, ge=1)
    apgd_steps: int = Field(default=100, ge=1)
    b_source: Literal["bpda", "classifier"] = "bpda"
    b_steps: int = Field(default=20, ge=1)
    b_eot_samples: int = Field(default=1, ge=1)
    c_steps: int = Field(default=200, ge=1)
    c_step_size: float | None = Field(default=0.007, gt=0)
    c_random_start: bool = False
    unseen: dict[str, float] = Field(default_factory=lambda: {"linf": 8 / 255, "l2": 0.5, "l1": 12.0})
    unseen_steps: int = Field(default=100, ge=1)
    protocols: list[Literal["A", "B", "C", "unseen"]] = Field(default_factory=lambda: ["A", "B", "C", "unseen"])

    @field_validator("unseen")
    @classmethod
    def _norms(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k in v if k not in ("linf", "l2", "l1")]
        if bad:
            raise ValueError(f"unseen threat norms must be linf, l2 or l1, got {bad}")
        if any(not (math.isfinite(e) and e > 0) for e in v.values()):
            raise ValueError(f"unseen eps must be finite and > 0, got {v}")
        return v


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


__all__ = [
    "ATOP_PRESETS", "AToPConfig", "AToPPreset", "FinetuneSettings", "PhaseSettings", "ProtocolSettings",
    "PurifierSettings", "TransformSettings", "load_atop_preset",
]
