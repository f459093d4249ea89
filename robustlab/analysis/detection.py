"""Entropy-based adversarial detection (thesis ch.4 A8, CCE-DM; protocol of Pang et al. 2018/2019).

The detector flags an input as adversarial when the Shannon entropy of the model's prediction exceeds a threshold.
Sweeping the threshold gives a ROC curve (positives = adversarial inputs) and its AUC, per attack and eps. Whose
prediction is used is unstated in the thesis: the ensemble's (``source="ensemble"``, default), or the mean of the
members' entropies (``"members"``). Following Pang et al., only clean points the model classifies correctly and
adversarial examples that fool it are scored by default (``only_successful=True``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.core.errors import InputError
from robustlab.io.atomic import atomic_write_json
from robustlab.models.ensemble import is_ensemble, member_logits

Source = Literal["ensemble", "members"]


@torch.no_grad()
def prediction_entropy(model: nn.Module, x: Tensor, *, source: Source = "ensemble", batch_size: int = 512) -> Tensor:
    """Shannon entropy (nats) of the prediction per sample; ``members`` = mean member entropy (ensembles only)."""
    if source not in ("ensemble", "members"):
        raise InputError(f"source must be 'ensemble' or 'members', got {source!r}")
    if source == "members" and not is_ensemble(model):
        raise InputError("source='members' needs an ensemble model; use source='ensemble' for a single model")
    out = []
    for i in range(0, len(x), batch_size):
        chunk = x[i : i + batch_size]
        z = member_logits(model, chunk) if source == "members" else model(chunk)[None]
        log_p = F.log_softmax(z.float(), dim=-1)
        out.append(-(log_p.exp() * log_p).sum(-1).mean(0))
    return torch.cat(out).cpu() if out else torch.zeros(0)


def _scores(values: Tensor | Sequence[float], what: str) -> Tensor:
    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if t.numel() == 0:
        raise InputError(f"{what} scores are empty; the ROC needs at least one clean and one adversarial score")
    if not torch.isfinite(t).all():
        raise InputError(f"{what} scores contain NaN or infinite values")
    return t


def roc_curve(clean: Tensor | Sequence[float], adversarial: Tensor | Sequence[float]) -> dict[str, list[float]]:
    """ROC of "adversarial iff score >= t" over every distinct threshold t (high to low), from (0, 0) to (1, 1)."""
    c, a = _scores(clean, "clean"), _scores(adversarial, "adversarial")
    thresholds = torch.unique(torch.cat([c, a])).flip(0)
    fpr = [(c >= t).double().mean().item() for t in thresholds]
    tpr = [(a >= t).double().mean().item() for t in thresholds]
    return {"fpr": [0.0, *fpr], "tpr": [0.0, *tpr], "thresholds": [math.inf, *thresholds.tolist()]}


def roc_auc(clean: Tensor | Sequence[float], adversarial: Tensor | Sequence[float]) -> float:
    """Area under the ROC: P(adv score > clean score) + 0.5 P(equal) (the trapezoid area of :func:`roc_curve`)."""
    c, a = _scores(clean, "clean"), _scores(adversarial, "adversarial")
    c = c.sort().values
    below = torch.searchsorted(c, a, side="left").double()
    ties = torch.searchsorted(c, a, side="right").double() - below
    return float((below + 0.5 * ties).sum() / (len(a) * len(c)))


@dataclass
class DetectionResult:
    """AUC and ROC per (attack, eps), with the counts behind each, and the settings that produced them."""

    source: str
    only_successful: bool
    n: int
    rows: list[dict[str, Any]] = field(default_factory=list)

    def auc(self, attack: str, eps: float) -> float:
        """The AUC of one (attack, eps) cell."""
        for row in self.rows:
            if row["attack"] == attack and math.isclose(row["eps"], eps):
                return row["auc"]
        raise KeyError(f"no detection result for attack {attack!r} at eps {eps}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def detection_experiment(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attacks: Mapping[str, Mapping[str, Any]],
    eps_values: Sequence[float],
    *,
    norm: str = "linf",
    source: Source = "ensemble",
    only_successful: bool = True,
    batch_size: int = 512,
) -> DetectionResult:
    """Run each attack at each eps on (x, y) and score the entropy detector; ``attacks`` maps a label to
    ``{"name": registry attack, **its options}``, e.g. ``{"pgd": {"name": "pgd", "steps": 20, "step_size": 1/255}}``."""
    from robustlab.attacks import create_attack
    from robustlab.attacks.base import attack_mode, predict
    from robustlab.core.threat import ThreatModel, canonical_norm

    if not attacks or not eps_values:
        raise InputError("detection needs at least one attack and one eps")
    with attack_mode(model):
        clean_pred = predict(model, x, batch_size).argmax(1).cpu()
        clean_h = prediction_entropy(model, x, source=source, batch_size=batch_size)
    keep = clean_pred == y.cpu() if only_successful else torch.ones(len(y), dtype=torch.bool)
    result = DetectionResult(source=source, only_successful=only_successful, n=len(x))
    for label, spec in attacks.items():
        if "name" not in spec:
            raise InputError(f"attack {label!r} needs a 'name' (a registered attack), got {dict(spec)}")
        options = {k: v for k, v in spec.items() if k != "name"}
        for eps in eps_values:
            attack = create_attack(spec["name"], model, ThreatModel(canonical_norm(norm), float(eps)), **options)
            x_adv = torch.cat([attack(x[i : i + batch_size], y[i : i + batch_size])
                               for i in range(0, len(x), batch_size)])
            with attack_mode(model):
                adv_pred = predict(model, x_adv, batch_size).argmax(1).cpu()
                adv_h = prediction_entropy(model, x_adv, source=source, batch_size=batch_size)
            fooled = keep & (adv_pred != y.cpu()) if only_successful else keep
            row: dict[str, Any] = {
                "attack": label, "eps": float(eps), "n_clean": int(keep.sum()), "n_adversarial": int(fooled.sum()),
                "mean_entropy_clean": float(clean_h[keep].mean()) if keep.any() else math.nan,
                "mean_entropy_adversarial": float(adv_h[fooled].mean()) if fooled.any() else math.nan,
            }
            if keep.any() and fooled.any():
                row["auc"] = roc_auc(clean_h[keep], adv_h[fooled])
                row["roc"] = roc_curve(clean_h[keep], adv_h[fooled])
            else:
                row["auc"], row["roc"] = math.nan, None
                row["note"] = ("the model classifies no clean point correctly" if not keep.any() else
                               "no adversarial example fooled the model, so there is nothing to detect")
            result.rows.append(row)
    return result


def save_detection(result: DetectionResult, path: str | Path) -> Path:
    """Write the result as JSON (atomically); the ROC thresholds' +inf is written as a string."""
    data = result.to_dict()
    for row in data["rows"]:
        if row.get("roc"):
            row["roc"]["thresholds"] = ["inf" if math.isinf(t) else t for t in row["roc"]["thresholds"]]
    atomic_write_json(path, data)
    return Path(path)


def plot_roc(result: DetectionResult, path: str | Path, *, title: str | None = None) -> Path:
    """ROC curves of every (attack, eps) with their AUC in the legend, as a PNG (Agg backend)."""
    from robustlab.analysis.plots import new_figure, save_figure

    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    curves = [row for row in result.rows if row.get("roc")]
    for row in curves:
        ax.plot(row["roc"]["fpr"], row["roc"]["tpr"], label=f"{row['attack']} eps={row['eps']:.4g} "
                f"(AUC {100 * row['auc']:.1f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate (clean flagged)")
    ax.set_ylabel("true positive rate (adversarial flagged)")
    ax.set_title(title or f"entropy detector ({result.source} prediction)")
    if curves:
        ax.legend(fontsize=7, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no ROC: no attack fooled the model", ha="center", va="center", transform=ax.transAxes)
    return save_figure(fig, path)
