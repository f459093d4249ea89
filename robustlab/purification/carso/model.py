"""The CARSO model (Ballarin et al., arXiv 2306.06081): a cVAE purifier conditioned on a frozen classifier's
internal representation, a stochastic ensemble of reconstructions and an aggregation of their classifications.

Registered as ``carso`` so the Trainer, safetensors checkpoints and evaluation serve it unchanged. Like every
registry net it sits inside ``Normalized`` and receives normalised input: the representation is read from the
classifier's bare net on that input, the pre-encoder takes it as the released code's ``normalise(x)`` does, and the
reconstructions (in [0, 1]) go through the whole classifier, normalisation included.

``architecture`` picks the input pre-encoder and decoder: ``conv`` (the paper's strided convolutions and transposed
convolutions, images only), ``fc`` (fully connected blocks over the flattened input; table rows of d features in
[0, 1], or images of any size), ``auto`` (``fc`` for (d,) rows, ``conv`` for (C, H, W) images). The conditioning,
Gaussian neck and aggregation are the same for both.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from robustlab.core.errors import ConfigError, InputError
from robustlab.models.normalized import Normalized
from robustlab.models.registry import register_model
from robustlab.purification.carso.aggregation import aggregate, check_aggregation
from robustlab.purification.carso.blocks import (
    Decoder,
    GaussianNeck,
    InputPreEncoder,
    LayerCompressor,
    MLPDecoder,
    MLPPreEncoder,
    fc_block,
    reparameterise,
)
from robustlab.purification.carso.representation import RepresentationExtractor
from robustlab.purification.common import freeze_classifier

Sampling = Literal["prior", "mean"]
Architecture = Literal["auto", "conv", "fc"]
#: ``layers`` value that asks the ``carso`` objective to choose the layers at training start.
AUTO = "auto"


class CARSO(nn.Module):
    """Frozen ``classifier`` (a ``Normalized`` model on [0, 1] input) + the purifier, taking normalised input.

    Training path :meth:`reconstruct` (posterior, sees the input); inference :meth:`forward`: ``ensemble_size``
    prior samples z ~ N(0, I) (``sampling="mean"``: z = 0) decoded in one batch of B*E, classified, aggregated
    with ``aggregation``. ``differentiable=False`` detaches the representation (no gradient reaches the input).
    """

    classifier: Normalized
    classifier_source: str = ""  # the run folder or checkpoint it was loaded from
    classifier_dataset: str = ""

    def __init__(
        self,
        classifier: Normalized,
        layers: Sequence[str],
        *,
        image_shape: tuple[int, ...],
        latent_dim: int = 128,
        cond_dim: int = 512,
        joint_dim: int = 128,
        compressor_depth: int = 3,
        ensemble_size: int = 8,
        aggregation: str = "peel",
        sampling: Sampling = "prior",
        differentiable: bool = True,
        architecture: Architecture = "auto",
        fc_width: int = 128,
    ) -> None:
        super().__init__()
        if not isinstance(classifier, Normalized):
            raise ConfigError("CARSO needs a classifier built by create_model/load_trained_model (a Normalized model)")
        for name, v in (("latent_dim", latent_dim), ("cond_dim", cond_dim), ("joint_dim", joint_dim),
                        ("compressor_depth", compressor_depth), ("fc_width", fc_width)):
            if int(v) != v or v < 1:
                raise ConfigError(f"CARSO {name} must be an integer >= 1, got {v!r}")
        if sampling not in ("prior", "mean"):
            raise ConfigError(f"CARSO sampling must be 'prior' or 'mean', got {sampling!r}")
        self.classifier = freeze_classifier(classifier)
        self.extractor = RepresentationExtractor(classifier, layers)
        self.layers = self.extractor.layers
        self.image_shape = tuple(int(s) for s in image_shape)
        if len(self.image_shape) not in (1, 3) or min(self.image_shape) < 1:
            raise ConfigError(f"CARSO takes images (C, H, W) or table rows (d,); got input shape {image_shape!r}")
        self.architecture = resolve_architecture(architecture, self.image_shape)
        with torch.no_grad():
            probe = torch.zeros(2, *self.image_shape, device=next(classifier.buffers()).device)
            acts, logits = self.extractor.extract(classifier.normalize(probe), keep_graph=False, forward=classifier.net)
        self.num_classes = int(logits.shape[1])
        if self.num_classes < 2:
            raise ConfigError("CARSO needs a classifier with at least 2 classes")
        compressors = [LayerCompressor(tuple(a.shape[1:]), compressor_depth) for a in acts]
        self.compressors = nn.ModuleList(compressors)
        self.cond = fc_block(sum(m.out_features for m in compressors), cond_dim)
        self.pre_encoder: InputPreEncoder | MLPPreEncoder
        self.decoder: Decoder | MLPDecoder
        if self.architecture == "conv":
            c, h, w = self.image_shape
            self.pre_encoder = InputPreEncoder(c, (h, w))
        else:
            self.pre_encoder = MLPPreEncoder(math.prod(self.image_shape), fc_width)
        self.joint = fc_block(self.pre_encoder.out_features + cond_dim, joint_dim)
        self.neck = GaussianNeck(joint_dim, latent_dim)
        if self.architecture == "conv":
            self.decoder = Decoder(latent_dim + cond_dim, c, (h, w))
        else:
            self.decoder = MLPDecoder(latent_dim + cond_dim, self.image_shape, fc_width)
        self.latent_dim, self.cond_dim = int(latent_dim), int(cond_dim)
        self.ensemble_size = ensemble_size
        self.aggregation = check_aggregation(aggregation)
        self.sampling: Sampling = sampling
        self.differentiable = bool(differentiable)
        self.classifier_source = ""

    # ------------------------------------------------------------------------------------------- settings
    @property
    def ensemble_size(self) -> int:
        """Number of reconstructions per image at inference (>= 1)."""
        return self._ensemble_size

    @ensemble_size.setter
    def ensemble_size(self, value: int) -> None:
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise InputError(f"CARSO ensemble_size must be an integer >= 1, got {value!r} "
                             "(sampling='mean' gives the deterministic z = 0 decoder)")
        self._ensemble_size = int(value)

    def train(self, mode: bool = True) -> CARSO:
        """Train/eval mode for the purifier; the classifier always stays in eval mode (frozen BatchNorm)."""
        super().train(mode)
        self.classifier.eval()
        return self

    # ------------------------------------------------------------------------------------------- pieces
    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 1 + len(self.image_shape) or tuple(x.shape[1:]) != self.image_shape:
            if len(self.image_shape) == 1:
                raise InputError(f"CARSO was built for table rows of {self.image_shape[0]} features (N x d); got "
                                 f"input of shape {tuple(x.shape)}")
            c, h, w = self.image_shape
            raise InputError(f"CARSO was built for {c}x{h}x{w} images (NCHW); got input of shape {tuple(x.shape)}")

    def condition(self, x_norm: Tensor, *, keep_graph: bool | None = None) -> Tensor:
        """The condition vector c (N, cond_dim) from the classifier's representation of normalised input."""
        self._check_input(x_norm)
        keep = self.differentiable if keep_graph is None else keep_graph
        acts, _ = self.extractor.extract(x_norm, keep_graph=keep, forward=self.classifier.net)
        return self.cond(torch.cat([m(a) for m, a in zip(self.compressors, acts)], dim=1))

    def reconstruct_logits(self, x_norm: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training path: (pre-sigmoid reconstruction, mu, logvar); the representation is taken without graph."""
        c = self.condition(x_norm, keep_graph=False)
        h = self.joint(torch.cat([self.pre_encoder(x_norm), c], dim=1))
        mu, logvar = self.neck(h)
        return self.decoder.logits(torch.cat([reparameterise(mu, logvar), c], dim=1)), mu, logvar

    def reconstruct(self, x_norm: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training path: (reconstruction in [0, 1], mu, logvar)."""
        rec_logits, mu, logvar = self.reconstruct_logits(x_norm)
        return torch.sigmoid(rec_logits), mu, logvar

    def sample_reconstructions(self, x_norm: Tensor, ensemble_size: int | None = None) -> Tensor:
        """(B, E, *input shape) reconstructions from the prior (z = 0 for every sample when ``sampling="mean"``)."""
        e = self.ensemble_size if ensemble_size is None else ensemble_size
        if isinstance(e, bool) or int(e) != e or e < 1:
            raise InputError(f"ensemble size must be an integer >= 1, got {e!r}")
        c = self.condition(x_norm)
        b = c.shape[0]
        c_rep = c.repeat_interleave(e, dim=0)
        z = c.new_zeros(b * e, self.latent_dim)
        if self.sampling == "prior":
            z = torch.randn_like(z)
        return self.decoder(torch.cat([z, c_rep], dim=1)).view(b, e, *self.image_shape)

    def sample_logits(self, x_norm: Tensor, ensemble_size: int | None = None) -> Tensor:
        """(B, E, classes): the frozen classifier on every reconstruction, in one batch of B*E."""
        rec = self.sample_reconstructions(x_norm, ensemble_size)
        b, e = rec.shape[:2]
        return self.classifier(rec.flatten(0, 1)).view(b, e, -1)

    def forward(self, x_norm: Tensor, aggregation: str | None = None) -> Tensor:
        """Aggregated logits (B, classes) for normalised input."""
        return aggregate(self.sample_logits(x_norm), aggregation or self.aggregation)


def resolve_architecture(architecture: str, shape: tuple[int, ...]) -> Literal["conv", "fc"]:
    """``conv`` or ``fc`` for input ``shape``: ``auto`` is ``fc`` for rows (d,), ``conv`` for images (C, H, W)."""
    if architecture == "auto":
        return "fc" if len(shape) == 1 else "conv"
    if architecture == "fc":
        return "fc"
    if architecture == "conv":
        if len(shape) != 3:
            raise ConfigError(f"CARSO architecture conv needs images (C, H, W), but its input is table rows of "
                              f"{shape[0]} features; use architecture: fc (or auto) for rows")
        return "conv"
    raise ConfigError(f"CARSO architecture must be auto, conv or fc, got {architecture!r}")


# ---------------------------------------------------------------------------------------------- building
def _load_classifier(spec: str | dict[str, Any], which: str) -> tuple[Normalized, str, str]:
    """(classifier, its dataset name, where it came from) from a run folder / checkpoint or {name, kwargs, dataset}."""
    from robustlab.models.registry import create_model

    if isinstance(spec, dict):
        bad = set(spec) - {"name", "kwargs", "dataset"}
        if bad or "name" not in spec or "dataset" not in spec:
            raise ConfigError(f"CARSO classifier spec must be {{name, dataset, kwargs}} or a run folder; got {spec!r}")
        model = create_model(str(spec["name"]), str(spec["dataset"]), **dict(spec.get("kwargs") or {}))
        return model, str(model.model_spec["dataset"]), ""
    from robustlab.runs.loading import load_trained_model

    path = Path(str(spec))
    if not path.exists():
        raise ConfigError(f"CARSO classifier {path} does not exist; give the run folder (or .safetensors) of a "
                          "trained classifier, e.g. runs/mnist-pgd-at-quick")
    loaded, meta = load_trained_model(path, which=which)
    if not isinstance(loaded, Normalized):
        raise ConfigError(f"CARSO's classifier {path} is a {meta.get('model')} without the Normalized wrapper; "
                          "give a classifier trained by robustlab on a registry model")
    return loaded, meta["dataset"], str(path)


def resolve_classifier(
    classifier: str | dict[str, Any] | None, *, classifier_model: str | None = None,
    classifier_dataset: str | None = None, classifier_kwargs: dict[str, Any] | None = None, which: str = "best",
) -> tuple[Normalized, str, str]:
    """(classifier, its dataset, its run folder or "") from the ``carso`` builder's classifier settings."""
    if classifier is None:
        if not (classifier_model and classifier_dataset):
            raise ConfigError("CARSO needs its classifier: classifier=runs/<classifier-run> (trained), or "
                              "classifier_model=NAME with classifier_dataset=DATASET (architecture only)")
        classifier = {"name": classifier_model, "dataset": classifier_dataset, "kwargs": classifier_kwargs or {}}
    elif isinstance(classifier, str) and not Path(classifier).exists() and classifier_model and classifier_dataset:
        # A trained CARSO checkpoint holds its classifier's weights, so a run folder that was moved, or opened from
        # another directory, still loads from the architecture alone. Training refuses such a CARSO (no trained
        # classifier), so a mistyped path cannot train on an untrained classifier.
        warnings.warn(f"CARSO classifier run {classifier} not found: building its architecture ({classifier_model} "
                      f"on {classifier_dataset}); its weights must come from the CARSO checkpoint being loaded",
                      stacklevel=3)
        classifier = {"name": classifier_model, "dataset": classifier_dataset, "kwargs": classifier_kwargs or {}}
    return _load_classifier(classifier, which)


@register_model("carso")
def carso(
    in_channels: int,
    num_classes: int,
    image_size: int | tuple[int, int],
    *,
    layers: list[str] | str,
    classifier: str | dict[str, Any] | None = None,
    classifier_model: str | None = None,
    classifier_dataset: str | None = None,
    classifier_kwargs: dict[str, Any] | None = None,
    which: str = "best",
    latent_dim: int = 128,
    cond_dim: int = 512,
    joint_dim: int = 128,
    compressor_depth: int = 3,
    ensemble_size: int = 8,
    aggregation: str = "peel",
    sampling: Sampling = "prior",
    differentiable: bool = True,
    auto_layers: int = 4,
    layers_auto: dict[str, Any] | None = None,
    architecture: Architecture = "auto",
    fc_width: int = 128,
) -> CARSO:
    """CARSO over a frozen classifier tapped at ``layers`` (names as on the classifier, e.g. ``net.features.conv2``;
    a list or one comma-separated string). The classifier is ``classifier``: a trained run folder / checkpoint, or
    ``{name, dataset, kwargs}``; or, for presets before a classifier run exists, the untrained architecture
    ``classifier_model`` (with ``classifier_kwargs``) of ``classifier_dataset`` (training refuses it). Given both,
    the architecture also rebuilds a trained CARSO whose classifier run folder is gone (its checkpoint has the
    classifier's weights). ``layers="auto"`` is resolved by the ``carso`` objective at training start
    (:mod:`robustlab.purification.carso.layer_choice`, ``auto_layers`` layers); ``layers_auto`` is its record of
    what it measured, kept in the config and checkpoint, not used to build. ``architecture``: ``conv``, ``fc`` (hidden
width ``fc_width``) or ``auto`` (fc for a table classifier's rows, conv for images). Defaults: the final code's CIFAR
sizes."""
    if isinstance(layers, str):
        if layers.strip() == AUTO:
            raise ConfigError("CARSO layers: auto is chosen at training start by the carso objective, on training "
                              "points; to build a CARSO outside training, list the layers (a trained run's "
                              "config.yaml and checkpoint list the ones it chose)")
        layers = [name.strip() for name in layers.split(",") if name.strip()]
    model, dataset, source = resolve_classifier(classifier, classifier_model=classifier_model,
                                                classifier_dataset=classifier_dataset,
                                                classifier_kwargs=classifier_kwargs, which=which)
    model.eval().requires_grad_(False)  # ours to freeze: no warning
    hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    shape: tuple[int, ...] = (in_channels, int(hw[0]), int(hw[1]))
    from robustlab.models.registry import resolve_dataset

    info = resolve_dataset(dataset)
    theirs = tuple(int(s) for s in info.shape)
    if len(theirs) == 1 and shape == (1, 1, theirs[0]):  # create_model hands table rows (d,) over as 1 x 1 x d
        shape = theirs
    if theirs != shape or int(info.num_classes) != num_classes:
        what = f"rows of {shape[0]} features" if len(shape) == 1 else f"{shape} images"
        raise ConfigError(f"the CARSO classifier was trained on {dataset} ({info.shape}, {info.num_classes} classes), "
                          f"but CARSO is built for {what} with {num_classes} classes: use a classifier of the "
                          "same dataset")
    net = CARSO(model, layers, image_shape=shape, latent_dim=latent_dim, cond_dim=cond_dim, joint_dim=joint_dim,
                compressor_depth=compressor_depth, ensemble_size=ensemble_size, aggregation=aggregation,
                sampling=sampling, differentiable=differentiable, architecture=architecture, fc_width=fc_width)
    net.classifier_source = source
    net.classifier_dataset = dataset
    return net


def carso_of(model: nn.Module) -> tuple[CARSO, Normalized | None]:
    """(the CARSO net, its Normalized wrapper or None) of a model built by ``create_model("carso", ...)``."""
    inner = getattr(model, "module", model)
    wrapper = inner if isinstance(inner, Normalized) else None
    net = inner.net if wrapper is not None else inner
    if not isinstance(net, CARSO):
        raise ConfigError("this needs a CARSO model (model: {name: carso, kwargs: {classifier: RUN, layers: [...]}}), "
                          f"got {type(net).__name__}")
    return net, wrapper


def check_same_dataset(model: nn.Module) -> None:
    """Refuse a CARSO whose classifier was trained on another dataset than the one CARSO is built for."""
    net, wrapper = carso_of(model)
    spec = getattr(wrapper, "model_spec", {}) or {}
    ours, theirs = spec.get("dataset"), getattr(net, "classifier_dataset", None)
    if ours and theirs and ours != theirs:
        raise ConfigError(f"CARSO is built for {ours} but its classifier was trained on {theirs}")
    if wrapper is not None and not (torch.equal(wrapper.mean, net.classifier.mean)
                                    and torch.equal(wrapper.std, net.classifier.std)):
        raise ConfigError("CARSO's input normalisation differs from its classifier's: "
                          "they come from different datasets")


def describe(model: nn.Module) -> str:
    """One line: tapped layers, sizes and inference settings (for logs and reports)."""
    net, _ = carso_of(model)
    return json.dumps({"layers": net.layers, "architecture": net.architecture, "latent": net.latent_dim,
                       "cond": net.cond_dim,
                       "ensemble_size": net.ensemble_size, "aggregation": net.aggregation, "sampling": net.sampling})

