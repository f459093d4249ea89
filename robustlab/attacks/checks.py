"""The reference AutoAttack's checks on the defence (pyautoattack ``checks.py``), run inside :class:`AutoAttack`.

Each check returns flags (True means trouble) and values, plus a sentence per failed check for ``warnings``:

* randomised outputs: 5 forward passes on the same points whose L2-normalised outputs (or correct counts) differ;
* probabilities: outputs in [0, 1] whose rows sum to 1 (softmax outputs fed to logit losses mask gradients);
* a forward pass that changes the model's state (BatchNorm kept in train mode, a buffer written by forward), or
  calls autograd (the reference's "dynamic defence"): the model attacked is not the model evaluated;
* number of classes: DLR needs 3 classes, targeted DLR 4, and APGD-T/FAB-T need ``n_target_classes + 1``;
* zero gradients of the DLR loss at APGD's random start;
* Square beating the white-box attacks: the reference's 0.2-point drop, and the points Square broke.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.attacks.base import attack_mode, input_gradient, predict
from robustlab.attacks.losses import dlr
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel

#: The reference's settings: passes and tolerance of the randomness check, tolerance of the probability check, and
#: the drop in robust accuracy (a fraction: 0.2 points) by which Square may beat the white-box attacks.
RANDOM_PASSES, RANDOM_ALPHA, PROBABILITY_ALPHA, SQUARE_ALPHA = 5, 1e-4, 1e-5, 0.002
#: Attacks on the DLR loss (untargeted needs 3 classes) and on the targeted DLR loss (needs 4).
DLR_ATTACKS, TARGETED_DLR_ATTACKS = ("apgd-dlr", "apgd-t"), ("apgd-t",)
#: Functions whose call during a forward pass marks a dynamic defence, as in the reference.
_AUTOGRAD_CALLS = frozenset({"grad", "backward", "_make_grads"})


def randomised_outputs(model: nn.Module, x: Tensor, y: Tensor, *, passes: int = RANDOM_PASSES,
                       alpha: float = RANDOM_ALPHA) -> dict[str, Any]:
    """Forward passes that differ (normalised outputs by more than ``alpha`` in L2, or correct counts) on same input."""
    outputs, correct = [], []
    with attack_mode(model), torch.no_grad():
        for _ in range(passes):
            out = predict(model, x, len(x) or 1).float()
            correct.append(int((out.argmax(dim=1) == y).sum()))
            outputs.append(out / (out.flatten(1).norm(dim=1, keepdim=True) + 1e-10))
    diff = max((float((a - b).flatten(1).norm(dim=1).max()) for i, a in enumerate(outputs) for b in outputs[i + 1:]
                if a.numel()), default=0.0)
    return {"randomised_outputs": diff > alpha or len(set(correct)) > 1, "max_normalised_output_diff": diff}


def probability_outputs(logits: Tensor, *, alpha: float = PROBABILITY_ALPHA) -> dict[str, Any]:
    """Outputs that look like a probability distribution: all in (-alpha, 1 + alpha), rows summing to 1."""
    out = logits.float()
    flag = bool(out.numel()) and bool(out.max() < 1 + alpha) and bool(out.min() > -alpha) and bool(
        ((out.sum(dim=-1) - 1).abs() < alpha).all())
    return {"probability_outputs": flag}


def state_changing_forward(model: nn.Module, x: Tensor) -> dict[str, Any]:
    """One forward pass as the attacks run it (eval mode): names of state entries it changed, autograd calls it made.

    The state is restored afterwards, so the check itself leaves the model as it found it.
    """
    before = _snapshot(model)
    calls: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_name in _AUTOGRAD_CALLS:
            calls.append(frame.f_code.co_name)

    previous = sys.getprofile()
    with attack_mode(model):
        sys.setprofile(profile)  # sees every Python call, as the reference's settrace does, without line events
        try:
            model(x)
        finally:
            sys.setprofile(previous)
    changed = _restore(model, before)
    return {"state_changing_forward": bool(changed), "changed_state": changed, "autograd_in_forward": bool(calls)}


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    """A copy of the model's state (parameters and buffers)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _restore(model: nn.Module, before: dict[str, Tensor]) -> list[str]:
    """Names of the state entries that differ from ``before``, which is loaded back if any do."""
    after = model.state_dict()
    changed = sorted(k for k, v in before.items() if k not in after or not _same(v, after[k]))
    if changed:
        with torch.no_grad():
            model.load_state_dict(before)
    return changed


def _same(a: Tensor, b: Tensor) -> bool:
    """Equal shape, dtype and values, NaNs in the same places counting as equal."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return bool(torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num()))
    return bool(torch.equal(a, b))


def class_count(n_classes: int, attacks: Sequence[str], target_counts: dict[str, int]) -> dict[str, Any]:
    """Raises when a DLR attack cannot run at all; flags ``n_target_classes`` larger than the classes allow."""
    dlr_needed = [a for a in attacks if a in DLR_ATTACKS]
    if dlr_needed and n_classes <= 2:
        raise InputError(f"the model has {n_classes} classes: the DLR loss of {', '.join(dlr_needed)} needs at least 3;"
                         " run version='custom' with attacks=['apgd-ce', 'fab', 'square']")
    targeted = [a for a in attacks if a in TARGETED_DLR_ATTACKS]
    if targeted and n_classes == 3:
        raise InputError("the model has 3 classes: the targeted DLR loss of apgd-t needs at least 4; run "
                         "version='custom' with attacks=['apgd-ce', 'apgd-dlr', 'fab-t', 'square']")
    too_many = {a: k for a, k in target_counts.items() if k + 1 > n_classes}
    return {"n_classes": n_classes, "too_many_target_classes": bool(too_many), "target_classes": dict(target_counts)}


def apgd_start(x: Tensor, threat: ThreatModel, generator: torch.Generator) -> Tensor:
    """APGD's random start as in the reference: a uniform (L-inf) or Gaussian (L2) direction scaled to eps."""
    flat = (-1, *([1] * (x.dim() - 1)))
    if threat.norm == "linf":
        t = 2 * torch.rand(x.shape, generator=generator) - 1
        t = t / t.flatten(1).abs().amax(dim=1).clamp_min(1e-12).reshape(flat)
    else:
        t = torch.randn(x.shape, generator=generator)
        t = t / (t.flatten(1).norm(dim=1).reshape(flat) + 1e-12)
    return (x + threat.eps * t.to(x.device, x.dtype)).clamp(0.0, 1.0)


def zero_dlr_gradients(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, seed: int) -> dict[str, Any]:
    """Points whose DLR gradient is exactly zero at APGD's random start: APGD on DLR cannot move them.

    As in the reference, this also counts points whose true class ranks third at the start, where DLR is constant
    (-1 over its own denominator): a large eps can trip it on a plain model."""
    if not len(x):
        return {"zero_dlr_gradients": False, "zero_dlr_gradient_count": 0}
    start = apgd_start(x, threat, torch.Generator().manual_seed(seed))
    with attack_mode(model):
        grad, _, _ = input_gradient(model, start, y, dlr)
    zero = int((grad.flatten(1).abs().sum(dim=1) == 0).sum())
    return {"zero_dlr_gradients": zero > 0, "zero_dlr_gradient_count": zero}


def square_check(clean: Tensor, flags: dict[str, Tensor], *, alpha: float = SQUARE_ALPHA) -> dict[str, Any]:
    """The reference's test (Square lowers robust accuracy more than ``alpha`` below every other entry, clean
    included, of the cumulative accuracies) beside the per-point one: how many points Square broke.

    With cumulative masks the points Square broke are points every white-box attack before it failed on.
    """
    if "square" not in flags:
        return {"square_beats_white_box": False, "square_accuracy_drop": 0.0, "square_only_count": 0}
    acc = {"clean": _mean(clean), **{k: _mean(v) for k, v in flags.items()}}
    others = min(v for k, v in acc.items() if k != "square")
    drop = others - acc["square"]
    names = list(flags)
    i = names.index("square")
    before = flags[names[i - 1]] if i else clean
    only = int((before & ~flags["square"]).sum())
    return {"square_beats_white_box": len(acc) > 2 and acc["square"] < others - alpha,
            "square_accuracy_drop": max(drop, 0.0), "square_only_count": only}


def pre_attack_checks(model: nn.Module, x: Tensor, y: Tensor, clean: Tensor, *, version: str,
                      attacks: Sequence[tuple[str, Any]], threat: ThreatModel, seed: int) -> dict[str, Any]:
    """Every check the reference runs before attacking, on ``x`` (its first batch), leaving the model's state and
    torch's generators as they were. Raises when a DLR attack cannot run on the model's number of classes."""
    names = [name for name, _ in attacks]
    targets = {name: int(a.n_target_classes) for name, a in attacks if hasattr(a, "n_target_classes")}
    before = _snapshot(model)
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        out: dict[str, Any] = {"randomised_outputs": False, "max_normalised_output_diff": 0.0}
        if version != "rand":  # randomness is what rand expects
            out.update(randomised_outputs(model, x, y))
        with attack_mode(model), torch.no_grad():
            logits = predict(model, x, len(x))
        out.update(probability_outputs(logits))
        out.update(state_changing_forward(model, x))
        out.update(class_count(int(logits.shape[1]), names, targets))
        out.update({"zero_dlr_gradients": False, "zero_dlr_gradient_count": 0})
        if any(n in DLR_ATTACKS for n in names):
            keep = clean if bool(clean.any()) else torch.ones_like(clean)  # APGD attacks the clean-correct points
            out.update(zero_dlr_gradients(model, x[keep], y[keep], threat, seed))
    _restore(model, before)
    return out


def _mean(mask: Tensor) -> float:
    """Fraction of True entries as a Python float, as the reference computes accuracies."""
    return int(mask.sum()) / mask.numel() if mask.numel() else 0.0


def warnings_for(checks: dict[str, Any]) -> list[str]:
    """One sentence per failed check, as the reference words it (with robustlab's advice)."""
    out = []
    if checks.get("randomised_outputs"):
        out.append("it seems to be a randomised defence (outputs differ between identical forward passes by "
                   f"{checks['max_normalised_output_diff']:.3g} after normalisation): use version='rand'")
    if checks.get("probability_outputs"):
        out.append("the outputs look like a probability distribution (in [0, 1], rows summing to 1): make sure the "
                   "model returns logits")
    if checks.get("state_changing_forward"):
        out.append(f"a forward pass in eval mode changed the model's state ({', '.join(checks['changed_state'][:5])})"
                   ": BatchNorm in train mode or a buffer written by forward; the attacked model is not the one "
                   "evaluated")
    if checks.get("autograd_in_forward"):
        out.append("the forward pass calls autograd: it seems to be a dynamic defence, for which AutoAttack might be "
                   "insufficient")
    if checks.get("too_many_target_classes"):
        out.append(f"more target classes ({checks['target_classes']}) than the model's {checks['n_classes']} classes "
                   f"allow ({checks['n_classes'] - 1}); the attacks use {checks['n_classes'] - 1}")
    if checks.get("zero_dlr_gradients"):
        out.append(f"there are {checks['zero_dlr_gradient_count']} points with zero DLR gradient at APGD's start: "
                   "gradient-based attacks might be unreliable")
    if checks.get("square_beats_white_box"):
        out.append(f"Square Attack decreased the robust accuracy by {checks['square_accuracy_drop']:.2%} "
                   f"({checks['square_only_count']} points): the evaluation might be unreliable; consider Square "
                   "with more queries and restarts, or an adaptive attack")
    return out
