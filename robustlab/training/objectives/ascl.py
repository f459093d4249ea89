"""ASCL: Adversarial Supervised Contrastive Learning (Bui 2023 thesis §3.4; Bui et al. 2023, Eqs. 1-6).

Loss (Eq. 6): ``natural_weight CE(h(x), y) + adv_weight CE(h(x_a), y) + scl_weight L_SCL + vat_weight KL(h(x)||h(x_a))``
with x_a from the configured attack (PGD on CE). ``L_SCL`` is a SupCon loss over the 2N views ``[x; x_a]`` at the
latent ``z``, optionally through a projection head that the objective owns and the trainer trains
(:meth:`ASCL.modules`). The latent is the thesis's (§4.1, App. A): the penultimate layer, i.e. the input of the
last FC layer (``latent: penultimate``, the model's ``penultimate_layer``). On the ResNets and the MLP that is the
encoder output; on the conv stacks (``cw-cnn``, ``adr-cnn``) it is the last hidden FC activation, while
``latent: encoder`` takes the model's ``encode()`` output there (the flattened conv features, what ADR regularises);
``latent_layer`` names any other layer. For anchor a with positives P(a) and negatives
Q(a) (the selection strategy, :func:`selection_masks`), with ``s`` the similarity and ``t`` the temperature:

    l_a = -1/|P(a)| sum_{p in P(a)} log( exp(s(a,p)/t) / sum_{k in P(a) u Q(a)} exp(s(a,k)/t) )

Samples outside P(a) u Q(a) appear nowhere in l_a. Predictions that select samples come from the same forward pass
and are constants (argmax, no gradient); gradients flow through anchors, positives and negatives alike.

Where the text and the released code differ, the text is the default and the code is an option:
``scl_average`` ("pairs" = Eq. 3, 1/N times the sum over 2N anchors; "anchors" = the code's mean, half of it),
``vat_reduction`` ("batchmean" = Eq. 5; "elementwise-mean" = the code's KLDivLoss mean, divided by the number of
classes), ``leaked_counterpart`` ("always" = the text; "same-prediction" = the code's mask), ``similarity``
("cosine"; "neg-linf" = the code's -L_inf distance on L2-normalised latents) and ``temperature`` (0.07; the code's
run script uses 0.2). ``variant="robustbench"`` is "Ours *" of Table 3: no natural CE and no VAT term.

Anchors with no positive (possible only with ``leaked_counterpart="same-prediction"``, since otherwise every anchor
keeps its own counterpart) are excluded from the mean, as in SupCon's reference code; if no anchor has a positive,
``L_SCL`` is 0. ``forward="joint"`` (default) runs the model once on ``cat[x, x_a]`` as the thesis's pseudo-code does
(``z = f(cat[x, x_a])``), so BatchNorm normalises both views with shared batch statistics; ``"separate"`` runs it
once per view (BatchNorm sees clean and adversarial batches apart, as in the other objectives here). Under data
parallelism each process contrasts its own slice of the batch.
"""

from __future__ import annotations

from typing import ClassVar, Literal, cast

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, model_validator
from torch import Tensor, nn

from robustlab.attacks.base import attack_mode
from robustlab.core.errors import ConfigError, UnknownNameError
from robustlab.models.base import EncoderClassifier
from robustlab.models.taps import LayerTaps
from robustlab.training.objectives.adversarial import AdversarialObjective, AdversarialParams
from robustlab.training.objectives.base import Metrics, ObjectiveConfig, accuracy, register_objective, unwrap
from robustlab.training.objectives.losses import kl_per_sample

STRATEGIES = ("global", "hard-ls", "soft-ls", "leaked-ls")
SIMILARITIES = ("cosine", "neg-linf")
Strategy = Literal["global", "hard-ls", "soft-ls", "leaked-ls"]
Similarity = Literal["cosine", "neg-linf"]
_EXCLUDED = -1e9  # logit given to unselected samples (exp underflows to exactly 0 in float32)


class ASCLParams(AdversarialParams):
    """ASCL options; defaults follow the thesis text (λ_SCL=1, λ_VAT=2, τ=0.07, no projection head)."""

    strategy: Strategy = "global"
    similarity: Similarity = "cosine"
    linf_normalize: bool = True  # neg-linf only: L2-normalise latents first (the code's hidden_norm=True)
    temperature: float = Field(default=0.07, gt=0, allow_inf_nan=False)
    projection_head: Literal["identity", "linear", "two-layer"] = "identity"
    projection_dim: int = Field(default=128, ge=1)  # output size of "linear" and "two-layer" (App. C.1: 128)
    projection_hidden: int = Field(default=200, ge=1)  # hidden size of "two-layer" (App. C.1: 200)
    latent: Literal["penultimate", "encoder"] = "penultimate"  # input of the last FC layer, or encode()
    latent_layer: str | None = None  # a LayerTaps name (output flattened); overrides ``latent``
    variant: Literal["ascl", "robustbench"] = "ascl"
    natural_weight: float | None = Field(default=None, ge=0)  # None: 1 ("ascl"), 0 ("robustbench")
    adv_weight: float = Field(default=1.0, ge=0)
    scl_weight: float = Field(default=1.0, ge=0)
    vat_weight: float | None = Field(default=None, ge=0)  # None: 2 ("ascl"), 0 ("robustbench")
    vat_reduction: Literal["batchmean", "elementwise-mean"] = "batchmean"
    scl_average: Literal["pairs", "anchors"] = "pairs"
    leaked_counterpart: Literal["always", "same-prediction"] = "always"
    forward: Literal["separate", "joint"] = "joint"

    @model_validator(mode="after")
    def _resolve_variant(self) -> ASCLParams:
        if self.variant == "robustbench":
            set_terms = [k for k in ("natural_weight", "vat_weight") if getattr(self, k)]
            if set_terms:
                raise ValueError(f"variant 'robustbench' drops the natural CE and VAT terms; remove {set_terms} "
                                 "or use variant 'ascl'")
            self.natural_weight, self.vat_weight = 0.0, 0.0
        else:
            self.natural_weight = 1.0 if self.natural_weight is None else self.natural_weight
            self.vat_weight = 2.0 if self.vat_weight is None else self.vat_weight
        return self


# ------------------------------------------------------------------------------------------------ pure pieces
def selection_masks(
    y: Tensor, pred: Tensor, strategy: str, *, leaked_counterpart: str = "always"
) -> tuple[Tensor, Tensor]:
    """Positive and negative masks (2N, 2N) over the views ``[clean; adversarial]``: row = anchor, column = sample.

    ``y`` and ``pred`` are the labels and argmax predictions of the 2N views. The counterpart of view a is a ± N.
    Adversarial anchors use their own prediction (the spec's reading of Table 1, equal to the code).
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown ASCL strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    if leaked_counterpart not in ("always", "same-prediction"):
        raise ConfigError(f"leaked_counterpart must be 'always' or 'same-prediction', got {leaked_counterpart!r}")
    n2 = y.numel()
    if n2 % 2 or pred.shape != y.shape:
        raise ConfigError(f"selection_masks needs 2N labels and 2N predictions, got {tuple(y.shape)} and "
                          f"{tuple(pred.shape)}")
    eye = torch.eye(n2, dtype=torch.bool, device=y.device)
    same_y = y[:, None] == y[None, :]
    same_p = pred[:, None] == pred[None, :]
    if strategy == "leaked-ls":
        pos = same_y & same_p & ~eye
        if leaked_counterpart == "always":
            pos = pos | eye.roll(n2 // 2, dims=1)
    else:
        pos = same_y & ~eye
    if strategy == "global":
        neg = ~same_y
    elif strategy == "hard-ls":
        neg = ~same_y & (pred[None, :] == y[:, None])  # predicted as the anchor's true label
    else:
        neg = ~same_y & same_p  # predicted as the anchor's predicted label
    return pos, neg


def similarity_matrix(u: Tensor, kind: str, *, linf_normalize: bool = True) -> Tensor:
    """Pairwise similarities (2N, 2N) in float32: cosine, or -||u_a - u_b||_inf (on L2-normalised u by default)."""
    if kind not in SIMILARITIES:
        raise ConfigError(f"unknown ASCL similarity {kind!r}; valid: {', '.join(SIMILARITIES)}")
    u = u.float()
    if kind == "cosine":
        u = F.normalize(u, dim=1)
        return u @ u.T
    if linf_normalize:
        u = F.normalize(u, dim=1)
    return -(u[:, None, :] - u[None, :, :]).abs().amax(dim=2)


def supcon_terms(sim: Tensor, pos: Tensor, neg: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Per-anchor loss ``l_a`` (module doc) and the mask of anchors with at least one positive (others give 0)."""
    logits = sim / temperature
    denom = torch.logsumexp(logits.masked_fill(~(pos | neg), _EXCLUDED), dim=1, keepdim=True)
    log_prob = torch.where(pos, logits - denom, torch.zeros_like(logits))
    n_pos = pos.sum(dim=1)
    return -log_prob.sum(dim=1) / n_pos.clamp_min(1), n_pos > 0


def scl_loss(per_anchor: Tensor, valid: Tensor, average: str = "pairs") -> Tensor:
    """Mean of ``l_a`` over anchors with a positive; "pairs" doubles it (Eq. 3: 1/N times the sum over 2N)."""
    scale = 2.0 if average == "pairs" else 1.0
    return scale * torch.where(valid, per_anchor, torch.zeros_like(per_anchor)).sum() / valid.sum().clamp_min(1)


def projection_head(kind: str, in_dim: int, out_dim: int = 128, hidden: int = 200) -> nn.Module | None:
    """App. C.1 heads without bias: "linear" ``W1 z``, "two-layer" ``W2 ReLU(W1 z)``; None for "identity"."""
    if kind == "identity":
        return None
    if kind == "linear":
        return nn.Linear(in_dim, out_dim, bias=False)
    if kind == "two-layer":
        return nn.Sequential(nn.Linear(in_dim, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, out_dim, bias=False))
    raise ConfigError(f"unknown projection_head {kind!r}; valid: identity, linear, two-layer")


# ------------------------------------------------------------------------------------------------ objective
@register_objective("ascl")
class ASCL(AdversarialObjective):
    """Adversarial training with a supervised contrastive term over clean and adversarial latents (module doc)."""

    Params: ClassVar[type[BaseModel]] = ASCLParams
    params: ASCLParams
    attack_loss = "ce"
    latent_plot = True

    def __init__(self, cfg: ObjectiveConfig) -> None:
        super().__init__(cfg)
        self.head: nn.Module | None = None

    def _layer(self, bare: nn.Module) -> str | None:
        """The tap name of the latent: ``latent_layer``, the model's penultimate layer, or None for ``encode()``."""
        p = self.params
        if p.latent_layer is not None or p.latent == "encoder":
            return p.latent_layer
        layer = getattr(bare, "penultimate_layer", None)
        if not isinstance(layer, str):
            raise ConfigError(f"ascl: model {type(bare).__name__} names no penultimate_layer (the input of its last "
                              "FC layer); set latent_layer to one of its layer names")
        return layer

    def latent_and_logits(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        """One forward pass giving the latent (N, d) (``latent`` / ``latent_layer``) and the logits."""
        bare = unwrap(model)
        layer = self._layer(bare)
        if layer is None:
            if not (hasattr(bare, "encode") and hasattr(bare, "classify")):
                raise ConfigError(f"ascl: model {type(bare).__name__} has no encode()/classify(); set latent_layer "
                                  "to one of its layer names")
            split = cast(EncoderClassifier, bare)
            z = split.encode(x)
            return z.flatten(1), split.classify(z)
        try:
            taps = LayerTaps(bare, [layer])
        except UnknownNameError as exc:
            where = "latent_layer" if self.params.latent_layer is not None else "the model's penultimate_layer"
            raise ConfigError(f"ascl {where}: {exc}; set latent_layer to one of them") from None
        with taps:
            logits = model(x)
        z = taps[layer]
        if not isinstance(z, Tensor):
            raise ConfigError(f"ascl latent_layer {layer!r} outputs {type(z).__name__}, not a tensor")
        return z.flatten(1), logits

    def modules(self, model: nn.Module, example: Tensor) -> nn.Module | None:
        """The projection head (None for "identity"), sized from ``model``'s latent and built once."""
        p = self.params
        if p.projection_head == "identity" or self.head is not None:
            return self.head
        bare = unwrap(model)
        if p.latent_layer is None and p.latent == "encoder" and hasattr(bare, "latent_dim"):
            dim = int(cast(EncoderClassifier, bare).latent_dim)
        else:
            with torch.no_grad(), attack_mode(bare):  # eval mode: the dry run leaves BatchNorm statistics alone
                dim = self.latent_and_logits(bare, example)[0].shape[1]
        self.head = projection_head(p.projection_head, dim, p.projection_dim, p.projection_hidden)
        return self.head

    def _project(self, z: Tensor) -> Tensor:
        if self.params.projection_head == "identity":
            return z
        if self.head is None:  # used outside the trainer without modules(): build it now (not trained by anyone)
            p = self.params
            head = projection_head(p.projection_head, z.shape[1], p.projection_dim, p.projection_hidden)
            assert head is not None  # only "identity" has none, returned above
            self.head = head.to(z.device)
        return self.head(z)

    def outer_loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Metrics]:
        p = self.params
        n = len(x)
        if p.forward == "joint":
            z, logits = self.latent_and_logits(model, torch.cat([x, x_adv]))
        else:
            (z_nat, l_nat), (z_adv, l_adv) = self.latent_and_logits(model, x), self.latent_and_logits(model, x_adv)
            z, logits = torch.cat([z_nat, z_adv]), torch.cat([l_nat, l_adv])
        logits = logits.float()
        logits_nat, logits_adv = logits[:n], logits[n:]
        y2 = torch.cat([y, y])
        pos, neg = selection_masks(y2, logits.detach().argmax(dim=1), p.strategy,
                                   leaked_counterpart=p.leaked_counterpart)
        sim = similarity_matrix(self._project(z), p.similarity, linf_normalize=p.linf_normalize)
        per_anchor, valid = supcon_terms(sim, pos, neg, p.temperature)
        scl = scl_loss(per_anchor, valid, p.scl_average)
        ce_nat, ce_adv = F.cross_entropy(logits_nat, y), F.cross_entropy(logits_adv, y)
        loss = p.adv_weight * ce_adv + p.scl_weight * scl
        if p.natural_weight:
            loss = loss + p.natural_weight * ce_nat
        metrics: Metrics = {"acc": accuracy(logits_nat, y), "adv_acc": accuracy(logits_adv, y),
                            "ce_nat": float(ce_nat.detach()), "ce_adv": float(ce_adv.detach()),
                            "scl": float(scl.detach())}
        if p.vat_weight:
            vat = kl_per_sample(logits_nat, logits_adv).mean()
            if p.vat_reduction == "elementwise-mean":
                vat = vat / logits.shape[1]
            loss = loss + p.vat_weight * vat
            metrics["vat"] = float(vat.detach())
        metrics.update(selection_counts(pos, neg))
        return loss, metrics


def selection_counts(pos: Tensor, neg: Tensor) -> Metrics:
    """Mean positives / negatives per anchor, and how many of them are adversarial views (Fig. 4 statistics)."""
    n = pos.shape[0] // 2
    def per_anchor(mask: Tensor) -> float:
        return float(mask.sum(dim=1).float().mean())

    return {"scl_pos": per_anchor(pos), "scl_neg": per_anchor(neg), "scl_pos_adv": per_anchor(pos[:, n:]),
            "scl_neg_adv": per_anchor(neg[:, n:]), "scl_valid": float((pos.sum(dim=1) > 0).float().mean())}
