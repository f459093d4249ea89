"""The 7 transformation families of TA-MOO's EoT experiments (Table 9), written in torch so that every one is
differentiable in its input and keeps the (N, C, H, W) shape.

Each family has a deterministic setting (a fixed parameter) and a stochastic one (a parameter drawn per call, as
the released code draws one factor per outer iteration): identity; horizontal / vertical flip (p = 1 | 0.5);
center crop resized back (scale 0.6 | U(0.6, 1)); brightness (factor 1.3 | U(1, 1.3)); rotation (10 deg |
U(-10, 10)); gamma (1.3 | U(0.7, 1.3)). Gamma < 1 has an infinite gradient at black pixels (App. D.4's overflow).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from robustlab.core.errors import InputError
from robustlab.core.registry import Registry


def hflip(x: Tensor) -> Tensor:
    """Mirror left-right."""
    return x.flip(-1)


def vflip(x: Tensor) -> Tensor:
    """Mirror top-bottom."""
    return x.flip(-2)


def center_crop(x: Tensor, scale: float) -> Tensor:
    """Keep the central ``scale`` fraction of each side and resize it back (bilinear) to the input size."""
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)


def brightness(x: Tensor, factor: float) -> Tensor:
    """torchvision's adjust_brightness: scale by ``factor`` and clip to [0, 1]."""
    return (x * factor).clamp(0.0, 1.0)


def rotate(x: Tensor, degrees: float) -> Tensor:
    """Rotate about the centre by ``degrees`` (counter-clockwise), bilinear, zero fill outside the image."""
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    mat = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(mat.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def adjust_gamma(x: Tensor, gamma: float) -> Tensor:
    """torchvision's adjust_gamma with gain 1: x ** gamma on [0, 1]."""
    return x.clamp(0.0, 1.0) ** gamma


@dataclass(frozen=True)
class TransformFamily:
    """A named family: ``apply(x, param)``, its deterministic parameter and a sampler for the stochastic one."""

    name: str
    apply: Callable[[Tensor, float], Tensor]
    fixed: float
    sample: Callable[[torch.Generator | None], float]


def _uniform(lo: float, hi: float) -> Callable[[torch.Generator | None], float]:
    return lambda gen: lo + (hi - lo) * float(torch.rand((), generator=gen))


def _coin(gen: torch.Generator | None) -> float:
    return float(torch.rand((), generator=gen) < 0.5)


def _maybe(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor, float], Tensor]:
    return lambda x, p: fn(x) if p >= 0.5 else x


FAMILIES: dict[str, TransformFamily] = {
    "identity": TransformFamily("identity", lambda x, _: x, 0.0, lambda gen: 0.0),
    "hflip": TransformFamily("hflip", _maybe(hflip), 1.0, _coin),
    "vflip": TransformFamily("vflip", _maybe(vflip), 1.0, _coin),
    "center-crop": TransformFamily("center-crop", center_crop, 0.6, _uniform(0.6, 1.0)),
    "brightness": TransformFamily("brightness", brightness, 1.3, _uniform(1.0, 1.3)),
    "rotation": TransformFamily("rotation", rotate, 10.0, _uniform(-10.0, 10.0)),
    "gamma": TransformFamily("gamma", adjust_gamma, 1.3, _uniform(0.7, 1.3)),
}
TABLE9: tuple[str, ...] = tuple(FAMILIES)  # I, H, V, C, B, R, G


TRANSFORMATIONS: Registry[TransformFamily] = Registry("transformation")
for _family in FAMILIES.values():
    TRANSFORMATIONS.register(_family.name, _family)


def get_family(name: str) -> TransformFamily:
    """Look a family up by name; an unknown name lists the valid ones."""
    return TRANSFORMATIONS.get(name)


class TransformSet:
    """The m tasks of an EoT attack: ``transforms(x)`` returns the m transformed batches (a fresh draw per call in
    the stochastic setting, one parameter per family per call)."""

    def __init__(self, names: Sequence[str] = TABLE9, stochastic: bool = False,
                 generator: torch.Generator | None = None) -> None:
        if isinstance(names, str) or len(names) == 0:
            raise InputError(f"transformations must be a non-empty list of names; valid: {', '.join(FAMILIES)}")
        self.families = [get_family(n) for n in names]
        self.stochastic = bool(stochastic)
        self.generator = generator

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.families]

    def params(self) -> list[float]:
        """This call's parameter of each family."""
        return [f.sample(self.generator) if self.stochastic else f.fixed for f in self.families]

    def __len__(self) -> int:
        return len(self.families)

    def __call__(self, x: Tensor) -> list[Tensor]:
        return [f.apply(x, p) for f, p in zip(self.families, self.params(), strict=True)]
