"""The AToP defence as one stochastic ``nn.Module``: random transform -> purifier -> frozen classifier.

``AToPDefense(transform, purifier, classifier)(x)`` returns logits, so every robustlab attack and evaluation takes it
as a model (with ``eot_samples`` for its randomness). ``bpda=True`` gives the same forward with the transform+purifier
back-propagated as the identity (BPDA, protocol B); attack that copy and evaluate the real one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.attacks.wrappers import BPDA
from robustlab.core.errors import InputError
from robustlab.purification.atop.purifiers import Purifier
from robustlab.purification.atop.transforms import RandomTransform
from robustlab.purification.common import freeze_classifier


@dataclass
class PurifierPass:
    """One purifier pass: the mask it filled (1 = missing) and its stage outputs (the last is the image)."""

    mask: Tensor
    stages: tuple[Tensor, ...]


def purify(
    purifier: Purifier, transform: RandomTransform, x: Tensor, *, composite: bool = False
) -> tuple[Tensor, list[PurifierPass]]:
    """Apply the random transform and the purifier: ``(x_hat, passes)``.

    RT1/RT2: ``x_hat = g((1 - m) * t(x), m)``, the whole generator output (the paper's x_hat = g(t(x)); no pixel is
    trusted), or with ``composite`` the inpainted pixels pasted into the kept ones. RT3: ``x_hat = sum_k m_k *
    g((1 - m_k) * t(x), m_k)`` over the disjoint masks m_k that partition the image.
    """
    noisy = transform.add_noise(x)
    masks = transform.sample_masks(x)
    passes: list[PurifierPass] = []
    out = torch.zeros_like(x)
    for mask in masks:
        stages = purifier.forward_stages(noisy * (1 - mask), mask)
        passes.append(PurifierPass(mask, stages))
        out = out + mask * stages[-1]
    if len(masks) == 1 and not composite:
        out = passes[0].stages[-1]
    elif len(masks) == 1:
        out = out + (1 - masks[0]) * noisy
    return out, passes


class AToPDefense(nn.Module):
    """``transform -> purifier -> classifier``; the classifier is frozen (and kept in eval mode by ``train()``).

    ``bpda=True``: forward is unchanged, the backward pass treats transform+purifier as the identity (BPDA).
    """

    def __init__(
        self,
        transform: RandomTransform,
        purifier: Purifier,
        classifier: nn.Module,
        *,
        bpda: bool = False,
        composite: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(transform, RandomTransform):
            raise InputError(f"transform must be a RandomTransform, got {type(transform).__name__}")
        if not isinstance(purifier, Purifier):
            raise InputError(f"purifier must be built by build_purifier, got {type(purifier).__name__}")
        transform.grid(*purifier.image_shape[1:])  # the mask grid must tile the purifier's images
        self.transform = transform
        self.purifier = purifier
        self.classifier = freeze_classifier(classifier)
        self.bpda = bool(bpda)
        self.composite = bool(composite)
        self._bpda = BPDA(self.purified)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The (C, H, W) the purifier was built for."""
        return self.purifier.image_shape

    def purified(self, x: Tensor) -> Tensor:
        """One random draw of the purified image ``g(t(x))``."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            c, h, w = self.image_shape
            raise InputError(f"the AToP pipeline's purifier was built for {c}x{h}x{w} images, got shape "
                             f"{tuple(x.shape)}")
        return purify(self.purifier, self.transform, x, composite=self.composite)[0]

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the classifier on one random purification of ``x``."""
        x_hat = self._bpda(x) if self.bpda else self.purified(x)
        return self.classifier(x_hat)

    def train(self, mode: bool = True) -> AToPDefense:
        """Train mode reaches the purifier only; the classifier stays frozen in eval mode."""
        super().train(mode)
        self.classifier.eval()
        return self

    def with_bpda(self) -> AToPDefense:
        """The same modules with BPDA-identity gradients for transform+purifier (protocol B's attack target)."""
        return AToPDefense(self.transform, self.purifier, self.classifier, bpda=True, composite=self.composite)


__all__ = ["AToPDefense", "PurifierPass", "purify"]
