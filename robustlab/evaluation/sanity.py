"""Cheap sanity checks for an evaluation: each returns a flat dict of flags and values; True flags mean trouble.

They catch the usual ways an evaluation overstates robustness (Carlini et al. 2019, "On Evaluating Adversarial
Robustness"): stochastic outputs attacked without EoT, probabilities fed to a logit loss, zero or NaN gradients,
black-box attacks beating white-box ones, accuracy that grows with eps and no collapse at a huge eps.
:func:`run_sanity_checks` composes them and adds a human sentence to ``warnings`` for each failed check.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.attacks.base import attack_mode, predict
from robustlab.core.errors import InputError
from robustlab.core.validation import check_images, check_labels
from robustlab.evaluation.robust import grad_health

#: Robust accuracy above this at a near-total eps means the attack is not working (masking or a broken model).
LARGE_EPS_MAX_ACCURACY = 0.10


def output_randomness(model: nn.Module, x: Tensor, *, atol: float = 1e-6) -> dict[str, Any]:
    """Two identical eval-mode forward passes that differ reveal a stochastic defence: attacks need EoT."""
    check_images(x)
    with attack_mode(model):
        first, second = predict(model, x).float(), predict(model, x).float()
    diff = float((first - second).abs().max()) if first.numel() else 0.0
    return {"stochastic_outputs": diff > atol, "max_logit_diff": diff}


def softmax_as_logits(model: nn.Module, x: Tensor, *, atol: float = 1e-4) -> dict[str, Any]:
    """Outputs in [0, 1] whose rows sum to 1 are probabilities: CE on them saturates and masks gradients."""
    check_images(x)
    with attack_mode(model):
        out = predict(model, x).float()
    in_unit = bool(((out >= -atol) & (out <= 1 + atol)).all())
    sums_to_one = bool(((out.sum(dim=1) - 1).abs() <= atol).all())
    return {"softmax_outputs": out.numel() > 0 and in_unit and sums_to_one}


def gradient_health(
    model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 256, max_fraction: float = 0.0
) -> dict[str, Any]:
    """Zero or NaN/inf input gradients (shattered or masked gradients), via :func:`grad_health`."""
    check_images(x)
    check_labels(y, x.shape[0])
    health = grad_health(model, x, y, batch_size)
    bad = health["zero_grad_fraction"] > max_fraction or health["nonfinite_grad_fraction"] > max_fraction
    return {**health, "unhealthy_gradients": bad}


def _matches(name: str, names: Sequence[str]) -> bool:
    """Whether an attack label such as ``"square-5000 linf eps=0.03"`` names one of ``names``."""
    head = name.split()[0].lower() if name.strip() else ""
    return any(head == n or head.startswith(n + "-") for n in names)


def black_box_beats_white_box(
    flags_by_attack: dict[str, Tensor], black_box_names: Sequence[str] = ("square", "spsa")
) -> dict[str, Any]:
    """Points a black-box attack breaks but no white-box attack does: a sign of gradient masking.

    ``flags_by_attack`` maps attack names to per-sample robust masks, either independent or cumulative in run order
    (as from :func:`robust_flags` or ``AutoAttackResult.robust``). With cumulative masks only black-box attacks that
    run after a white-box one can be counted, which is the order every protocol here uses.
    """
    names = [n.lower() for n in black_box_names]
    black = {k: v for k, v in flags_by_attack.items() if _matches(k, names)}
    white = {k: v for k, v in flags_by_attack.items() if k not in black}
    if not black or not white:
        return {"black_box_only_count": 0, "black_box_only_fraction": 0.0, "black_box_beats_white_box": False}
    shape = next(iter(flags_by_attack.values())).shape
    if any(v.shape != shape for v in flags_by_attack.values()):
        raise InputError("all robust masks in flags_by_attack need the same shape")
    broken_white = torch.zeros(shape, dtype=torch.bool)
    for mask in white.values():
        broken_white |= ~mask.bool().cpu()
    broken_black = torch.zeros(shape, dtype=torch.bool)
    for mask in black.values():
        broken_black |= ~mask.bool().cpu()
    only_black = int((broken_black & ~broken_white).sum())
    return {
        "black_box_only_count": only_black,
        "black_box_only_fraction": only_black / max(broken_black.numel(), 1),
        "black_box_beats_white_box": only_black > 0,
    }


def accuracy_not_decreasing_in_eps(accuracies: dict[float, float], *, tol: float = 0.0) -> dict[str, Any]:
    """Robust accuracy that grows with eps (a larger ball contains the smaller one): the attack is failing."""
    curve = sorted(accuracies.items())
    rises = [b - a for (_, a), (_, b) in zip(curve, curve[1:], strict=False)]
    max_rise = max(rises, default=0.0)
    return {"max_accuracy_increase_in_eps": max(max_rise, 0.0), "accuracy_increases_with_eps": max_rise > tol}


def large_eps_collapse(accuracy: float, threshold: float = LARGE_EPS_MAX_ACCURACY) -> dict[str, Any]:
    """Robust accuracy at a near-total eps must collapse to ~0; if not, the attack cannot reach the boundary."""
    return {"large_eps_accuracy": float(accuracy), "large_eps_collapsed": float(accuracy) <= threshold}


def run_sanity_checks(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    flags_by_attack: dict[str, Tensor] | None = None,
    eps_curve: dict[float, float] | None = None,
    large_eps_accuracy: float | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """All applicable checks on ``(x, y)`` (keep it small: a few hundred points) in one flat dict with ``warnings``."""
    out: dict[str, Any] = {}
    warnings: list[str] = []
    rand = output_randomness(model, x)
    out.update(rand)
    if rand["stochastic_outputs"]:
        warnings.append(f"outputs differ between identical forward passes (max logit diff "
                        f"{rand['max_logit_diff']:.3g}): the defence is stochastic, attack it with eot_samples > 1")
    out.update(softmax_as_logits(model, x))
    if out["softmax_outputs"]:
        warnings.append("the model outputs probabilities (rows in [0, 1] summing to 1): losses expect logits, "
                        "so gradients are masked; return logits")
    grads = gradient_health(model, x, y, batch_size=batch_size)
    out.update(grads)
    if grads["unhealthy_gradients"]:
        warnings.append(f"input gradients are zero for {grads['zero_grad_fraction']:.1%} and NaN/inf for "
                        f"{grads['nonfinite_grad_fraction']:.1%} of points: gradient masking; use BPDA or EoT")
    if flags_by_attack is not None:
        bb = black_box_beats_white_box(flags_by_attack)
        out.update(bb)
        if bb["black_box_beats_white_box"]:
            warnings.append(f"a black-box attack broke {bb['black_box_only_count']} points no white-box attack "
                            "broke: gradients are likely masked")
    if eps_curve is not None:
        curve = accuracy_not_decreasing_in_eps(eps_curve)
        out.update(curve)
        if curve["accuracy_increases_with_eps"]:
            warnings.append(f"robust accuracy increases with eps (by up to {curve['max_accuracy_increase_in_eps']:.1%})"
                            ": the attack is not finding the worst case")
    if large_eps_accuracy is not None:
        big = large_eps_collapse(large_eps_accuracy)
        out.update(big)
        if not big["large_eps_collapsed"]:
            warnings.append(f"robust accuracy stays at {big['large_eps_accuracy']:.1%} at a near-total eps: the "
                            "attack cannot reach the decision boundary (masking or a broken attack)")
    out["warnings"] = warnings
    return out
