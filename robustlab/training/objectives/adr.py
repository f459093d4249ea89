"""ADR, Adversary Divergence Reduction (Bui et al., ECCV 2020; thesis ch.3 §3.3): adversarial training plus
local/global compactness of the latent space and a clustering-assumption (confidence + smoothness) term.

``L = L_c + λ_lc L_lc + λ_gb L_gb + λ_conf L_conf + λ_smt L_smt`` (Eq. 7), with z = encoder output, x_a the adversary:

* ``L_c``   = CE(h(x_a), y) + CE(h(x), y) (Eq. 4). ``base="trades"`` crafts x_a with the TRADES KL adversary; with
  ``trades_robust_term="kl"`` [code] the robust CE is replaced by ``beta * KL(h(x) || h(x_a))`` as in ``adr_trades``.
* ``L_lc``  = mean_i d(z_i, z_a_i) (Eq. 1);
* ``L_gb``  = mean over all B×B pairs of w_ij d(., .), ``w_ij = (α − 1[y_i≠y_j]) / α`` (Eqs. 2–3), i.e. 1 for the
  same class and (α−1)/α (−0.0101 at α=0.99) otherwise; computed on the weights directly, so a single-class batch
  is fine (the code's ``d / max(d)`` divides by zero there);
* ``L_conf`` = mean_i [H(h(x_a_i)) + H(h(x_i))] (Eq. 5), H = Shannon entropy;
* ``L_smt`` = mean_i KL(h(x_i) || h(x_a_i)) (Eq. 6; x_a from the same adversary, not VAT's power iteration).

Where the thesis text and the released code differ or the text is silent, each choice is an option (spec §9):

* ``p`` (latent distance, text: "a p-norm", p unstated): "l1", "l2", "linf", or "mean-abs" (L1 / dimension, the
  code's). The text does not choose, so the default is the code's "mean-abs" (it also keeps λ=1 meaningful for
  latents of any width).
* ``stop_grad_clean`` (text: Eq. 1 writes no stop-gradient, the default False; code: True): the clean latent is a
  constant target wherever it meets an adversarial one (L_lc, and L_gb with clean–adv pairs). Clean–clean pairs keep
  both sides (detaching both would remove the term). The code's form diverges here: with the clean side a moving
  target, descending L_lc raises the scale of the whole latent (benchmarks/campaigns/adr_mnist_latent_growth.py:
  mean |z| 0.3 → 320 over 60 Adam steps with L_lc alone, against 0.45 without the stop-gradient and 0.95 for ADV;
  docs/results.md).
* ``smt_stop_grad_clean`` (text silent; code: True): the clean prediction in L_smt is detached.
* ``global_pairs``: "clean-clean" (text, default) or "clean-adv" (code: adversarial z_i vs clean z_j).
* ``gb_scale``: "none" (text, default) or "max" (code: the pair distances divided by their batch maximum, so L_gb
  lies in [(α−1)/α, 1]). Unscaled, the negative weight of different-class pairs rewards inflating the latent
  without bound: an ADR-ADV MNIST run under Adam diverged that way (local compactness 11 → 1,223, accuracy at
  chance; docs/results.md), so the presets use "max".
* ``conf_on``: "both" (text, Eq. 5, default) or "adv" (code).
* ``trades_robust_term``: "ce" (text, Eq. 4, default) or "kl" (code); ``beta`` weighs the KL (code default 1.0).
* ``lambda_warmup_epochs`` [neither; default 0 = off]: every ADR λ ramps linearly from 0 to its value over this
  many epochs, so the cross-entropy shapes the latent before the compactness terms act on it.
* ``lambda_gb_smt`` [code only, default 0]: the code's pair-weighted global smoothness, mean_ij w_ij KL(h(x_j) ||
  h(x_a_i)), absent from the text.

Defaults of the λ's follow supp Table 1 for MNIST (1, 1, 0, 1); α = 0.99. The latent is the model's ``encode``
output (after the last conv block / the penultimate layer), or the flattened output of any named ``latent_layer``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, field_validator, model_validator
from torch import Tensor, nn

from robustlab.attacks.losses import LossFn
from robustlab.core.errors import InputError
from robustlab.models.latent import latent_and_logits
from robustlab.training.objectives.adversarial import AdversarialObjective, AdversarialParams
from robustlab.training.objectives.base import Metrics, accuracy, register_objective, unwrap
from robustlab.training.objectives.losses import entropy, kl_per_sample

Distance = Literal["l1", "l2", "linf", "mean-abs"]


class ADRParams(AdversarialParams):
    """ADR options; see the module docstring for what each one chooses and which default is text or code."""

    base: Literal["adv", "trades"] = "adv"
    trades_robust_term: Literal["ce", "kl"] = "ce"
    beta: float = Field(default=1.0, ge=0)
    lambda_lc: float = Field(default=1.0, ge=0)
    lambda_gb: float = Field(default=1.0, ge=0)
    lambda_conf: float = Field(default=0.0, ge=0)
    lambda_smt: float = Field(default=1.0, ge=0)
    lambda_gb_smt: float = Field(default=0.0, ge=0)
    alpha: float = 0.99
    p: Distance = "mean-abs"
    latent_layer: str | None = None
    stop_grad_clean: bool = False
    smt_stop_grad_clean: bool = True
    global_pairs: Literal["clean-clean", "clean-adv"] = "clean-clean"
    gb_scale: Literal["none", "max"] = "none"
    conf_on: Literal["both", "adv"] = "both"
    lambda_warmup_epochs: float = Field(default=0.0, ge=0)

    @field_validator("alpha")
    @classmethod
    def _open_unit_interval(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"alpha must lie in the open interval (0, 1) (thesis: 0.99), got {v}")
        return v

    @model_validator(mode="after")
    def _beta_only_with_kl(self) -> ADRParams:
        set_ = self.model_fields_set
        if self.base == "adv" and "trades_robust_term" in set_:
            raise ValueError("trades_robust_term applies only to base='trades'")
        if "beta" in set_ and not (self.base == "trades" and self.trades_robust_term == "kl"):
            raise ValueError("beta weighs the TRADES KL robust term: it applies only with base='trades' and "
                             "trades_robust_term='kl'")
        return self


def pair_weights(y: Tensor, alpha: float) -> Tensor:
    """ADR's global-compactness weights ``w_ij = (α − 1[y_i≠y_j]) / α`` for all B×B pairs (float32)."""
    differ = (y[:, None] != y[None, :]).float()
    return (alpha - differ) / alpha


def latent_distance(a: Tensor, b: Tensor, p: str) -> Tensor:
    """Row-wise distance between latents ``a`` and ``b`` (N, D) -> (N,)."""
    diff = (a.float() - b.float()).flatten(1)
    if p == "l1":
        return diff.abs().sum(dim=1)
    if p == "mean-abs":
        return diff.abs().mean(dim=1)
    if p == "linf":
        return diff.abs().amax(dim=1)
    if p == "l2":
        return torch.linalg.vector_norm(diff, dim=1)
    raise InputError(f"unknown latent distance {p!r}; valid: 'l1', 'l2', 'linf', 'mean-abs'")


def pairwise_distance(a: Tensor, b: Tensor, p: str) -> Tensor:
    """All-pairs distance ``D[i, j] = d(a_i, b_j)`` (N, M), exact (no matmul shortcut), finite gradients at 0."""
    a, b = a.float().flatten(1), b.float().flatten(1)
    norms = {"l1": 1.0, "mean-abs": 1.0, "l2": 2.0, "linf": float("inf")}
    if p not in norms:
        raise InputError(f"unknown latent distance {p!r}; valid: 'l1', 'l2', 'linf', 'mean-abs'")
    d = torch.cdist(a[None], b[None], p=norms[p], compute_mode="donot_use_mm_for_euclid_dist")[0]
    return d / a.shape[1] if p == "mean-abs" else d


def adr_terms(
    z: Tensor, z_adv: Tensor, logits: Tensor, logits_adv: Tensor, y: Tensor, params: ADRParams
) -> dict[str, Tensor]:
    """Every ADR term as a scalar tensor with graph: ``ce_clean``, ``ce_adv`` (or ``robust_kl``), ``lc``, ``gb``,
    ``conf``, ``smt``, ``gb_smt``; the objective weighs them, tests check each against hand-computed values."""
    logits, logits_adv = logits.float(), logits_adv.float()
    z, z_adv = z.float().flatten(1), z_adv.float().flatten(1)
    anchor = z.detach() if params.stop_grad_clean else z
    terms: dict[str, Tensor] = {"ce_clean": F.cross_entropy(logits, y)}
    if params.base == "trades" and params.trades_robust_term == "kl":
        terms["robust_kl"] = kl_per_sample(logits, logits_adv).mean()
    else:
        terms["ce_adv"] = F.cross_entropy(logits_adv, y)
    terms["lc"] = latent_distance(anchor, z_adv, params.p).mean()
    w = pair_weights(y, params.alpha)
    if params.global_pairs == "clean-clean":
        pair_d = pairwise_distance(z, z, params.p)
    else:  # rows: adversarial z_i, columns: clean z_j, as in the code
        pair_d = pairwise_distance(z_adv, anchor, params.p)
    if params.gb_scale == "max":  # the code's d / max(d); the floor keeps an all-identical batch finite
        pair_d = pair_d / pair_d.max().clamp_min(1e-12)
    terms["gb"] = (w * pair_d).mean()
    conf = entropy(logits_adv).mean()
    terms["conf"] = conf + entropy(logits).mean() if params.conf_on == "both" else conf
    ref = logits.detach() if params.smt_stop_grad_clean else logits
    terms["smt"] = kl_per_sample(ref, logits_adv).mean()
    log_ref, log_adv = F.log_softmax(ref, dim=1), F.log_softmax(logits_adv, dim=1)
    # KL(h(x_j) || h(x_a_i)) for all pairs: rows i (adversarial), columns j (clean); elementwise, so fp32 under autocast
    p_ref = log_ref.exp()
    pair_kl = (p_ref * log_ref).sum(dim=1)[None, :] - (p_ref[None, :, :] * log_adv[:, None, :]).sum(dim=2)
    terms["gb_smt"] = (w * pair_kl).mean()
    return terms


@register_objective("adr")
class ADR(AdversarialObjective):
    """Adversary Divergence Reduction on top of PGD-AT (``base="adv"``) or TRADES (``base="trades"``)."""

    Params: ClassVar[type[BaseModel]] = ADRParams
    params: ADRParams
    attack_loss = "kl"  # used when base == "trades"; base "adv" ascends CE (see attack_loss_fn)
    latent_plot = True

    def attack_loss_fn(self, model: nn.Module, x: Tensor) -> str | LossFn:
        if self.params.base == "adv":
            return "ce"
        return super().attack_loss_fn(model, x)

    def lambda_ramp(self) -> float:
        """The factor on every ADR λ: epochs done / ``lambda_warmup_epochs``, capped at 1 (1 without warm-up)."""
        warm = self.params.lambda_warmup_epochs
        return 1.0 if warm <= 0 else min(1.0, self._epochs_done / warm)

    def outer_loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Metrics]:
        prm: ADRParams = self.params
        bare = unwrap(model)
        z, logits = latent_and_logits(bare, x, prm.latent_layer)
        z_adv, logits_adv = latent_and_logits(bare, x_adv, prm.latent_layer)
        terms = adr_terms(z, z_adv, logits, logits_adv, y, prm)
        if "robust_kl" in terms:
            loss = terms["ce_clean"] + prm.beta * terms["robust_kl"]
        else:
            loss = terms["ce_clean"] + terms["ce_adv"]
        ramp = self.lambda_ramp()
        for name, lam in (("lc", prm.lambda_lc), ("gb", prm.lambda_gb), ("conf", prm.lambda_conf),
                          ("smt", prm.lambda_smt), ("gb_smt", prm.lambda_gb_smt)):
            if lam > 0:
                loss = loss + ramp * lam * terms[name]
        metrics: Metrics = {k: float(v.detach()) for k, v in terms.items()}
        if prm.lambda_warmup_epochs > 0:
            metrics["lambda_ramp"] = ramp
        metrics.update(acc=accuracy(logits, y), adv_acc=accuracy(logits_adv, y))
        return loss, metrics
