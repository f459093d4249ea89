"""AToP settings as a typed config (unknown keys are errors).

Defaults are the spec's (released-code) values where the paper text is silent; each ambiguity of spec §4 is an option:
``finetune.attack_target`` (paper Eq. 9: the whole ``pipeline``; released code: the ``classifier`` alone),
``finetune.recon_target`` (``input`` = x' as Eq. 9 and the notebook; ``clean`` = x as another logged run),
``finetune.lambda_cls`` (None: 0.05 for adversarial, 0.1 for clean fine-tuning, the code's values),
``transform.per_sample`` (paper silent; code shares one mask per batch).

The bundled AToP presets (purifier settings per dataset and scale) are in :mod:`robustlab.presets.atop`.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from robustlab.attacks.config import AttackConfig
from robustlab.core.config import Strict, plain_run_name
from robustlab.purification.atop.purifiers import PURIFIERS
from robustlab.purification.atop.transforms import TRANSFORMS, RandomTransform


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


AToPProtocol = Literal["A", "B", "C", "unseen"]
ATOP_PROTOCOLS: tuple[AToPProtocol, ...] = ("A", "B", "C", "unseen")


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
    protocols: list[AToPProtocol] = Field(default_factory=lambda: list(ATOP_PROTOCOLS))

    @field_validator("unseen")
    @classmethod
    def _norms(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k in v if k not in ("linf", "l2", "l1")]
        if bad:
            raise ValueError(f"unseen threat norms must be linf, l2 or l1, got {bad}")
        if any(not (math.isfinite(e) and e > 0) for e in v.values()):
            raise ValueError(f"unseen eps must be finite and > 0, got {v}")
        return v


__all__ = [
    "AToPConfig", "FinetuneSettings", "PhaseSettings", "ProtocolSettings", "PurifierSettings", "TransformSettings",
]
