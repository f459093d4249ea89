"""CARSO's ``layers: auto``: which classifier layers to condition the purifier on, chosen by intrinsic dimension.

Criterion: the ``k`` candidate layers (the classifier's Conv2d and Linear modules) whose TwoNN intrinsic dimension
changes most, relative to its clean value, between a fixed batch of clean training points and the same points
under the training attack crafted on the classifier alone; returned in network order.

Why this one: CARSO's decoder never sees the input, only the classifier's representation (spec §1.2), so it can undo
a perturbation only as far as the tapped layers register it. A layer whose geometry is unchanged by the attack (the
same dimension for clean and adversarial points) tells the purifier nothing about the attack, while a large
relative change marks a layer where the adversarial points leave the clean data's manifold: the information the
purifier has to invert. TwoNN is the estimator CARSO's authors used on representations (Ansuini et al. 2019); the
relative change makes layers of different widths comparable. The "lowest-dimensional layers" rule was rejected:
it ignores the attack and, on trained nets, mostly picks the last layers, whose logits already encode the attack's
outcome rather than the perturbation. Measured on a small PGD-AT C&W CNN (benchmarks/campaigns/carso_classifier_only.py,
256 MNIST training points, PGD-10 at 0.3): the lowest-dimensional layers were fc3, fc2, fc1, conv4 (TwoNN 4.3-6.6),
while the attack moved conv1-conv4 most (9.1 -> 15.3, 8.2 -> 11.3, 7.1 -> 8.8, 6.6 -> 8.3) and the FC layers by
under 13%.

The choice is made once at training start (by the ``carso`` objective, on the first training points, under a seed
derived from the run's) and the chosen list replaces ``auto`` in the run's config and checkpoint, so evaluation
rebuilds the same model without the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.attacks.config import AttackConfig, build_attack
from robustlab.core.errors import ConfigError, InputError
from robustlab.core.rng import derive_seed
from robustlab.purification.carso.intrinsic_dim import layer_intrinsic_dims
from robustlab.purification.carso.model import AUTO, resolve_classifier

#: How many training points the choice is measured on (the first ones of the training set: fixed, seed-free).
AUTO_N = 256
CRITERION = "largest relative TwoNN intrinsic-dimension change, clean vs adversarial (attack on the classifier)"


def candidate_layers(model: nn.Module) -> list[str]:
    """Names of ``model``'s Conv2d and Linear modules, in registration (network) order."""
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@dataclass
class LayerChoice:
    """The chosen layers and the measurements behind them (written into the run's config)."""

    layers: list[str]
    clean: dict[str, float]
    adversarial: dict[str, float]

    def change(self, name: str) -> float:
        """|ID_adv - ID_clean| / ID_clean of layer ``name``."""
        return abs(self.adversarial[name] - self.clean[name]) / max(self.clean[name], 1e-12)

    def record(self, n: int) -> dict[str, Any]:
        """JSON-ready record: criterion, batch size and the dimensions per candidate layer."""
        return {"criterion": CRITERION, "n": n,
                "intrinsic_dim": {k: [round(self.clean[k], 4), round(self.adversarial[k], 4)] for k in self.clean}}


def choose_layers(
    model: nn.Module, x_clean: Tensor, x_adv: Tensor, k: int, *, candidates: Sequence[str] | None = None,
) -> LayerChoice:
    """The ``k`` layers of ``model`` (among ``candidates``, default :func:`candidate_layers`) whose intrinsic
    dimension changes most between ``x_clean`` and ``x_adv`` (the same points), in network order."""
    names = list(candidates) if candidates is not None else candidate_layers(model)
    if not names:
        raise ConfigError("layers: auto found no Conv2d or Linear layer in the classifier; list the layers instead")
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= len(names):
        raise InputError(f"layers: auto needs 1 <= auto_layers <= {len(names)} (candidate layers), got {k!r}")
    if x_clean.shape != x_adv.shape:
        raise InputError(f"clean and adversarial batches differ in shape: {tuple(x_clean.shape)} vs "
                         f"{tuple(x_adv.shape)}")
    clean = layer_intrinsic_dims(model, x_clean, names)
    adv = layer_intrinsic_dims(model, x_adv, names)
    choice = LayerChoice([], clean, adv)
    ranked = sorted(range(len(names)), key=lambda i: (-choice.change(names[i]), i))
    choice.layers = [names[i] for i in sorted(ranked[: int(k)])]
    return choice


def resolve_auto_layers(
    kwargs: dict[str, Any], images: Tensor, labels: Tensor, attack: AttackConfig, *, seed: int,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """``carso`` builder kwargs with ``layers: auto`` replaced by :func:`choose_layers` on ``images``/``labels`` (a
    fixed batch of training points) against ``attack`` on the classifier alone, under a seed derived from ``seed``;
    ``layers_auto`` records what was measured. Other kwargs come back unchanged."""
    layers = kwargs.get("layers")
    if not (isinstance(layers, str) and layers.strip() == AUTO):
        return kwargs
    classifier, _, _ = resolve_classifier(kwargs.get("classifier"), classifier_model=kwargs.get("classifier_model"),
                                          classifier_dataset=kwargs.get("classifier_dataset"),
                                          classifier_kwargs=kwargs.get("classifier_kwargs"),
                                          which=kwargs.get("which", "best"))
    classifier = classifier.to(device).eval().requires_grad_(False)
    x, y = images.to(device), labels.to(device)
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derive_seed(seed, "carso-layers-auto"))
        x_adv = build_attack(attack, classifier)(x, y).detach()
    k = int(kwargs.get("auto_layers", 4))
    choice = choose_layers(classifier, x, x_adv, k)
    return {**kwargs, "layers": choice.layers, "layers_auto": choice.record(len(x))}
