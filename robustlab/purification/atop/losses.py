"""AToP losses: the generative loss l_g (hinge GAN + L1 for the inpainter, pixel MSE for the autoencoder), the
discriminator's hinge loss, and the AToP objective ``l_g + lambda * CE(f(g(t(x_in))), y)``.

GAN terms follow the released code (DeepFillv2): D minimises ``0.5 E relu(1 - D(real)) + 0.5 E relu(1 + D(fake))``;
G minimises ``-gan_weight * E D(fake) + l1_weight * sum_stages E |target - stage|``. For RT3 each purifier pass (one
per mask) contributes its own terms and l_g is their mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from robustlab.purification.atop.pipeline import PurifierPass
from robustlab.purification.atop.purifiers import PatchDiscriminator


def discriminator_loss(disc: PatchDiscriminator, real: Tensor, passes: Sequence[PurifierPass]) -> Tensor:
    """Hinge loss of the patch discriminator: real = the reconstruction target, fake = each pass's final image."""
    terms = [0.5 * F.relu(1 - disc(real, p.mask)).mean() + 0.5 * F.relu(1 + disc(p.stages[-1].detach(), p.mask)).mean()
             for p in passes]
    return torch.stack(terms).mean()


def generative_loss(
    passes: Sequence[PurifierPass],
    target: Tensor,
    *,
    disc: PatchDiscriminator | None = None,
    gan_weight: float = 1.0,
    l1_weight: float = 1.0,
) -> tuple[Tensor, dict[str, float]]:
    """l_g and its parts: GAN purifier (``disc`` given) ``-w_gan E D(fake) + w_l1 sum_s E|target - s|``; autoencoder
    (``disc`` None) pixel MSE of the final image (the paper's L_mae, reconstruction of the whole image)."""
    if disc is None:
        mse = torch.stack([F.mse_loss(p.stages[-1].float(), target.float()) for p in passes]).mean()
        return mse, {"mse": float(mse.detach())}
    adv = torch.stack([-disc(p.stages[-1], p.mask).mean() for p in passes]).mean()
    l1 = torch.stack([sum((target - s).abs().mean() for s in p.stages) for p in passes]).mean()  # type: ignore[misc]
    total = gan_weight * adv + l1_weight * l1
    return total, {"g_adv": float(adv.detach()), "l1": float(l1.detach())}


def atop_loss(gen: Tensor, logits: Tensor | None, y: Tensor, lam: float) -> tuple[Tensor, dict[str, float]]:
    """``gen + lam * CE(logits, y)`` (CE in float32); ``logits`` None means the CE term is off (pre-training)."""
    if logits is None:
        return gen, {"gen": float(gen.detach())}
    ce = F.cross_entropy(logits.float(), y)
    return gen + lam * ce, {"gen": float(gen.detach()), "ce": float(ce.detach())}


__all__ = ["atop_loss", "discriminator_loss", "generative_loss"]
