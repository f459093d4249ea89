"""Model zoo: registered architectures, the ``Normalized`` wrapper, the ``Ensemble`` module and layer taps.

Every registered net is a ``ClassifierNet`` (``encode`` -> latent, ``classify`` -> logits, ``latent_layer`` names the
encoder output); ``create_model`` wraps it in ``Normalized`` so models take images in [0, 1].
"""

# Importing the architecture modules registers their builders.
from robustlab.models import cw_cnn, ensemble, mlp, preact_resnet, resnet, small_cnn, wide_resnet  # noqa: F401
from robustlab.models.adapters import SelectOutput
from robustlab.models.base import ClassifierNet
from robustlab.models.ensemble import Ensemble, is_ensemble, member_logits, member_models
from robustlab.models.normalized import Normalized
from robustlab.models.registry import MODELS, DatasetLike, create_model, list_models, register_model, resolve_dataset
from robustlab.models.taps import LayerTaps, named_layers

__all__ = [
    "MODELS",
    "ClassifierNet",
    "DatasetLike",
    "Ensemble",
    "LayerTaps",
    "Normalized",
    "create_model",
    "is_ensemble",
    "list_models",
    "member_logits",
    "member_models",
    "named_layers",
    "register_model",
    "resolve_dataset",
    "SelectOutput",
]
