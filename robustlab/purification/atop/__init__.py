"""AToP (Lin et al., ICLR 2024): adversarial training on purification. A random transform (RT1/RT2/RT3) and a
generative purifier (GAN inpainter or autoencoder) in front of a frozen classifier; the purifier is pre-trained with
its generative loss, then fine-tuned with ``l_g + lambda * CE`` of the classifier on purified (adversarial) images."""

from robustlab.purification.atop.config import AToPConfig, ProtocolSettings
from robustlab.purification.atop.losses import atop_loss, discriminator_loss, generative_loss
from robustlab.purification.atop.pipeline import AToPDefense, purify
from robustlab.purification.atop.purifiers import (
    PURIFIERS,
    AEPurifier,
    InpaintGenerator,
    PatchDiscriminator,
    build_purifier,
)
from robustlab.purification.atop.transforms import TRANSFORMS, RandomTransform

__all__ = [
    "PURIFIERS", "TRANSFORMS", "AEPurifier", "AToPConfig", "AToPDefense", "InpaintGenerator", "PatchDiscriminator",
    "ProtocolSettings", "RandomTransform", "atop_loss", "build_purifier", "discriminator_loss", "generative_loss",
    "purify",
]
