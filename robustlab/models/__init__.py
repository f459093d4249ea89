"""Model zoo: registered architectures, the ``Normalized`` wrapper, layer taps and architecture fingerprints.

Every registered net is a ``ClassifierNet`` (``encode`` -> latent, ``classify`` -> logits, ``latent_layer`` names the
encoder output); ``create_model`` wraps it in ``Normalized`` so models take images in [0, 1].
"""

# Importing the architecture modules registers their builders.
from robustlab.models import cw_cnn, ensemble, mlp, preact_resnet, resnet, small_cnn, wide_resnet  # noqa: F401
from robustlab.models.adapters import SelectOutput
from robustlab.models.base import ClassifierNet
from robustlab.models.ensemble import Ensemble, ensemble_from_runs, member_logits, member_models
from robustlab.models.fingerprint import model_fingerprint, unwrap_model
from robustlab.models.normalized import Normalized
from robustlab.models.registry import DatasetLike, create_model, list_models, register_model, resolve_dataset
from robustlab.models.taps import LayerTaps, named_layers

__all__ = [
    "ClassifierNet",
    "DatasetLike",
    "Ensemble",
    "LayerTaps",
    "Normalized",
    "create_model",
    "ensemble_from_runs",
    "list_models",
    "member_logits",
    "member_models",
    "model_fingerprint",
    "named_layers",
    "register_model",
    "resolve_dataset",
    "SelectOutput",
    "unwrap_model",
]
