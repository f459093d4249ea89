"""Evaluation: attacks run only on still-robust points, worst case is cumulative, sanity checks flag masking."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from robustlab.attacks import PGD
from robustlab.core.errors import NoGradientError
from robustlab.core.threat import ThreatModel
from robustlab.evaluation.robust import NamedAttack, grad_health, robust_flags


class Linear2(nn.Module):
    """Two-class linear model on the mean pixel: class 1 iff mean(x) > 0.5."""

    def forward(self, x: Tensor) -> Tensor:
        m = x.flatten(1).mean(dim=1, keepdim=True) - 0.5
        return torch.cat([-m, m], dim=1) * 10


class Rounded(Linear2):
    """The same classifier behind a rounding step: gradients are zero everywhere (a masked defence)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(torch.round(x * 4) / 4)


class HardVote(Linear2):
    """The same classifier answering with a one-hot vote: its output has no gradient path to the input at all."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.one_hot(super().forward(x).argmax(1), 2).float()


def data(n: int = 40) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    level = torch.rand(n, generator=g) * 0.6 + 0.2  # mean pixel in [0.2, 0.8]
    x = level[:, None, None, None].expand(n, 1, 4, 4).clone()
    return x, (level > 0.5).long()


class Recorder:
    """Wraps an attack and records how many points it was asked to attack."""

    def __init__(self, attack: PGD) -> None:
        self.attack, self.seen = attack, 0

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        self.seen += len(x)
        return self.attack(x, y)


def test_attacks_run_only_on_robust_points_and_worst_case_is_cumulative() -> None:
    model, (x, y) = Linear2(), data()
    small, big = ThreatModel("linf", 0.05), ThreatModel("linf", 0.15)
    first = Recorder(PGD(model, small, steps=10))
    second = Recorder(PGD(model, big, steps=10))
    attacks = [NamedAttack("small", first, small, {}), NamedAttack("big", second, big, {})]
    clean, flags, timings = robust_flags(model, x, y, attacks, batch_size=7)
    assert bool(clean.all())
    assert first.seen == len(x)
    assert second.seen == int(flags["small"].sum())  # only points the first attack failed on
    assert bool((flags["big"] <= flags["small"]).all())
    margin = (x.flatten(1).mean(1) - 0.5).abs()  # exact: broken iff the margin is below eps
    assert torch.equal(flags["small"], margin > 0.05) and torch.equal(flags["big"], margin > 0.15)
    assert set(timings) == {"small", "big"}


def test_grad_health_flags_zero_gradients() -> None:
    x, y = data()
    assert grad_health(Linear2(), x, y)["zero_grad_fraction"] == 0.0
    assert grad_health(Rounded(), x, y)["zero_grad_fraction"] == 1.0
    assert grad_health(HardVote(), x, y, batch_size=16)["zero_grad_fraction"] == 1.0  # reported, not a crash


def test_a_gradient_attack_on_a_hard_vote_says_what_to_do() -> None:
    x, y = data()
    with pytest.raises(NoGradientError, match="surrogate"):
        PGD(HardVote(), ThreatModel("linf", 0.1), steps=2)(x, y)


def test_large_eps_check_exposes_a_masked_model() -> None:
    x, y = data()
    huge = ThreatModel("linf", 0.9)
    for model, should_collapse in ((Linear2(), True), (Rounded(), False)):
        attacks = [NamedAttack("pgd", PGD(model, huge, steps=20), huge, {})]
        _, flags, _ = robust_flags(model, x, y, attacks)
        collapsed = float(flags["pgd"].float().mean()) <= 0.10
        assert collapsed == should_collapse


def test_a_later_attack_is_not_called_once_every_point_is_broken() -> None:
    """Regression: a first attack breaking every point used to hand the next one an empty batch (an error)."""
    model, (x, y) = Linear2(), data()
    huge = ThreatModel("linf", 0.5)
    second = Recorder(PGD(model, huge, steps=5))
    attacks = [NamedAttack("all", PGD(model, huge, steps=10), huge, {}), NamedAttack("next", second, huge, {})]
    _, flags, _ = robust_flags(model, x, y, attacks, batch_size=7)
    assert not bool(flags["all"].any()) and not bool(flags["next"].any())
    assert second.seen == 0


class PixelSum(nn.Module):
    """Class 0 while the pixel sum stays above that of the input darkened by 0.45 per pixel, else class 1."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: Tensor) -> Tensor:
        margin = 0.01 * (x.flatten(1).sum(1) - self.threshold)
        return torch.stack([margin, torch.zeros_like(margin)], 1)


def test_large_eps_check_scales_the_step_so_the_attack_can_cross_the_ball() -> None:
    """Regression: BIM-40 with step 0.01 (no random start) moves a pixel 0.4 at most, so at a 'near-total' eps 0.5
    it could not reach a boundary 0.45 away and the sanity check blamed the model. The check keeps the step count
    and scales the step by large_eps / eps."""
    from robustlab.core.config import parse_config
    from robustlab.data import ImageData, dataset_info
    from robustlab.evaluation.config import EvalConfig
    from robustlab.evaluation.protocol import run_protocol

    images = torch.full((4, 1, 28, 28), 128, dtype=torch.uint8)
    data = ImageData(images, torch.zeros(4, dtype=torch.long), dataset_info("mnist"), "test", "synthetic")
    model = PixelSum(threshold=784 * (128 / 255 - 0.45)).eval()
    bim = {"name": "bim", "norm": "linf", "eps": 0.3, "steps": 40, "step_size": 0.01}
    result = run_protocol(model, data, parse_config({"attacks": [bim], "grad_check_n": 0, "large_eps": 0.5},
                                                    EvalConfig))
    assert result.clean_accuracy == 1.0 and next(iter(result.robust_accuracy.values())) == 1.0
    assert result.sanity["large_eps_accuracy"] == 0.0 and result.sanity["large_eps_collapsed"]
