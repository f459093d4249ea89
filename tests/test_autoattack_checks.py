"""The reference's checks inside AutoAttack: each fires on a model built to trip it and stays silent on a plain one."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from robustlab.attacks.autoattack import AutoAttack, AutoAttackResult
from robustlab.attacks.checks import square_check
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel

FLAGS = ("randomised_outputs", "probability_outputs", "state_changing_forward", "autograd_in_forward",
         "too_many_target_classes", "zero_dlr_gradients", "square_beats_white_box")
CHEAP: dict[str, dict[str, Any]] = {"apgd-ce": {"steps": 3, "restarts": 1}, "apgd-dlr": {"steps": 3, "restarts": 1},
                                    "apgd-t": {"steps": 3, "n_target_classes": 9}}


class Linear(nn.Module):
    """A fixed random linear classifier on 1x4x4 inputs."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.fc = nn.Linear(16, classes)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(classes, 16, generator=g))
            self.fc.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1))


class Noisy(Linear):
    """Gaussian noise on the logits: a randomised defence (too weak to change a prediction here)."""

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        return out + 1e-3 * torch.randn_like(out)


class Softmax(Linear):
    """Returns probabilities instead of logits."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x).softmax(dim=1)


class AlwaysTrainBN(Linear):
    """BatchNorm that stays in train mode whatever ``eval()`` asks, so every forward updates its running stats."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(1)  # over the 16 pixels, so that even one point has enough values

    def train(self, mode: bool = True) -> AlwaysTrainBN:
        return super().train(True)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.bn(x.flatten(1)[:, None]).flatten(1))


class Counter(Linear):
    """Writes a buffer in forward (counts its calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return super().forward(x)


class Rounding(Linear):
    """Quantises its input: gradients are exactly zero everywhere."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(torch.round(x * 4) / 4)


def points(model: nn.Module, n: int = 24) -> tuple[Tensor, Tensor]:
    """Inputs labelled by a plain linear model with as many classes, so most points are clean-correct."""
    x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = Linear(model.fc.out_features)(x).argmax(dim=1)
    return x, y


def run(model: nn.Module, attacks: list[str], **kw: Any) -> AutoAttackResult:
    """Custom AutoAttack with cheap settings at L-inf eps 0.01 (small enough that no start point of the plain model
    ranks the true class third, where DLR is constant)."""
    x, y = points(model)
    torch.manual_seed(0)  # the clean pass of a randomised model draws from the global generator
    return AutoAttack(model, ThreatModel("linf", 0.01), version="custom", attacks=attacks,
                      attack_kwargs={a: CHEAP[a] for a in attacks if a in CHEAP}, batch_size=16, **kw).run(x, y)


def fired(result: AutoAttackResult) -> set[str]:
    return {f for f in FLAGS if result.checks[f]}


def test_plain_model_passes_every_check() -> None:
    res = run(Linear(), ["apgd-ce", "apgd-dlr", "apgd-t"])
    assert fired(res) == set() and res.checks["warnings"] == [] and res.checks["n_classes"] == 10
    assert res.checks["zero_dlr_gradient_count"] == 0 and res.to_dict()["checks"] == res.checks


@pytest.mark.parametrize(("model", "flag", "words"), [
    (Noisy(), "randomised_outputs", "version='rand'"),
    (Softmax(), "probability_outputs", "logits"),
    (AlwaysTrainBN(), "state_changing_forward", "bn.running_mean"),
    (Counter(), "state_changing_forward", "calls"),
    (Rounding(), "zero_dlr_gradients", "zero DLR gradient"),
])
def test_each_check_fires_on_a_model_built_to_trip_it(model: nn.Module, flag: str, words: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="robustlab"):
        res = run(model, ["apgd-dlr"])
    assert fired(res) == {flag}, res.checks
    assert any(words in w for w in res.checks["warnings"]), res.checks["warnings"]
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("AutoAttack check: ")]
    assert logged == [f"AutoAttack check: {w}" for w in res.checks["warnings"]]  # a direct user is told


def test_state_check_leaves_the_model_as_it_found_it() -> None:
    from robustlab.attacks.checks import state_changing_forward

    model = AlwaysTrainBN()
    x, _ = points(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = state_changing_forward(model, x)
    assert out["state_changing_forward"] and "bn.running_mean" in out["changed_state"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not state_changing_forward(Linear(), x)["state_changing_forward"]


def test_autograd_in_forward_is_a_dynamic_defence() -> None:
    class Dynamic(Linear):
        def forward(self, x: Tensor) -> Tensor:
            with torch.enable_grad():
                z = x.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(super().forward(z).sum(), z)
            return super().forward(x - 0.01 * g.sign())

    res = run(Dynamic(), ["apgd-ce"])
    assert "autograd_in_forward" in fired(res) and any("dynamic" in w for w in res.checks["warnings"])


def test_randomised_check_is_off_for_rand() -> None:
    x, y = points(Noisy())
    cheap = {"steps": 2, "eot_samples": 2}
    aa = AutoAttack(Noisy(), ThreatModel("linf", 0.05), version="rand", attack_kwargs={"apgd-ce": cheap,
                                                                                       "apgd-dlr": dict(cheap)})
    assert not aa.run(x, y).checks["randomised_outputs"]


def test_number_of_classes() -> None:
    with pytest.raises(InputError, match="2 classes.*DLR"):
        run(Linear(classes=2), ["apgd-dlr"])
    with pytest.raises(InputError, match="3 classes.*targeted DLR"):
        run(Linear(classes=3), ["apgd-t"])
    assert fired(run(Linear(classes=2), ["apgd-ce"])) == set()  # no DLR attack: two classes are fine
    few = run(Linear(classes=5), ["apgd-t"])  # 9 target classes asked, 4 possible
    assert fired(few) == {"too_many_target_classes"} and few.checks["target_classes"] == {"apgd-t": 9}
    assert any("more target classes" in w for w in few.checks["warnings"])


def test_square_check_reference_threshold_and_points() -> None:
    n = 1000
    clean = torch.ones(n, dtype=torch.bool)
    white = clean.clone()
    white[:100] = False

    def after_square(k: int) -> dict[str, Tensor]:
        sq = white.clone()
        sq[100 : 100 + k] = False
        return {"apgd-ce": white, "square": sq}

    assert not square_check(clean, after_square(0))["square_beats_white_box"]
    one = square_check(clean, after_square(1))  # 0.1 points: under the reference's 0.2, but one point all the same
    assert not one["square_beats_white_box"] and one["square_only_count"] == 1
    three = square_check(clean, after_square(3))
    assert three["square_beats_white_box"] and three["square_only_count"] == 3
    assert three["square_accuracy_drop"] == pytest.approx(0.003)
    assert not square_check(clean, {"square": white})["square_beats_white_box"]  # Square alone: nothing to beat


def test_checks_reach_the_evaluation_sanity_section(caplog: pytest.LogCaptureFixture) -> None:
    from robustlab.core.config import parse_config
    from robustlab.data import ImageData, dataset_info
    from robustlab.evaluation.config import EvalConfig
    from robustlab.evaluation.protocol import run_protocol

    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=g)

    class Probabilities(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(x.flatten(1)).softmax(dim=1)

    torch.manual_seed(0)
    model = Probabilities().eval()
    with torch.no_grad():
        labels = model(images.float() / 255).argmax(dim=1)
    data = ImageData(images, labels, dataset_info("mnist"), "test", "synthetic")
    cfg = parse_config({"grad_check_n": 0, "autoattack": {"version": "custom", "eps": 0.01, "attacks": ["apgd-ce"],
                                                          "attack_kwargs": {"apgd-ce": {"steps": 2, "restarts": 1}}}},
                       EvalConfig)
    with caplog.at_level(logging.WARNING, logger="robustlab"):
        result = run_protocol(model, data, cfg)
    assert result.sanity["autoattack_checks"]["probability_outputs"]
    assert not [r for r in caplog.records if "probability" in r.getMessage()]  # said once, in the result's warnings
    assert any(w.startswith("AutoAttack: ") and "probability" in w for w in result.sanity["warnings"])

    from rich.console import Console

    from robustlab.cli import _result_table

    console = Console(width=400, record=True)
    console.print(_result_table("evaluation", result))  # the table `robustlab evaluate` prints
    text = console.export_text()
    assert "sanity warning" in text and "AutoAttack: the outputs look like a probability" in text
