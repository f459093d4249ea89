"""BPDA and transfer wrappers, and the sanity checks that flag masked or stochastic defences."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from robustlab.attacks import PGD
from robustlab.attacks.wrappers import BPDA, TransferAttack, transfer_matrix
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel
from robustlab.evaluation.sanity import (
    accuracy_not_decreasing_in_eps,
    black_box_beats_white_box,
    gradient_health,
    large_eps_collapse,
    output_randomness,
    run_sanity_checks,
    softmax_as_logits,
)


class MeanLinear(nn.Module):
    """A linear two-class classifier on the mean pixel: class 1 iff mean(x) > 0.5."""

    def forward(self, x: Tensor) -> Tensor:
        m = x.flatten(1).mean(dim=1, keepdim=True) - 0.5
        return torch.cat([-m, m], dim=1) * 10


def quantise(x: Tensor) -> Tensor:
    """Round to the levels 0, 0.2, ..., 1 (never 0.5, so no ties): zero gradient almost everywhere."""
    return torch.round(x * 5) / 5


class _Fn(nn.Module):
    """A plain function as a module."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


class Noisy(MeanLinear):
    """Dropout-like noise that stays on in eval mode: a stochastic defence."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + torch.randn(x.shape[0], 2)


class Softmaxed(MeanLinear):
    """Returns probabilities instead of logits."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x).softmax(dim=1)


def data(n: int = 40) -> tuple[Tensor, Tensor]:
    """Constant images whose level is in [0.12, 0.28] (class 0) or [0.72, 0.88] (class 1): all quantise correctly."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    level = torch.rand(n, generator=g) * 0.16 + 0.12 + 0.6 * y
    return level[:, None, None, None].expand(n, 1, 4, 4).clone(), y


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_bpda_forward_is_the_real_function_and_backward_the_approximation() -> None:
    x = torch.rand(3, 1, 4, 4)
    square = BPDA(quantise, approx=lambda t: t**2)
    out = square(x.requires_grad_(True))
    assert torch.equal(out, quantise(x.detach()))
    w = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * w).sum(), x)
    assert torch.allclose(grad, 2 * x.detach() * w)
    (grad_id,) = torch.autograd.grad((BPDA(quantise)(x) * w).sum(), x)
    assert torch.equal(grad_id, w)  # identity by default
    (grad_raw,) = torch.autograd.grad((quantise(x) * w).sum(), x)
    assert bool((grad_raw == 0).all())  # without BPDA the gradient is masked


def test_bpda_rejects_an_approximation_of_the_wrong_shape() -> None:
    x = torch.rand(2, 4, requires_grad=True)
    with pytest.raises(InputError):
        BPDA(torch.round, approx=lambda t: t.sum(dim=1))(x).sum().backward()


def test_pgd_breaks_a_rounding_defence_only_through_bpda() -> None:
    x, y = data()
    raw = nn.Sequential(_Fn(quantise), MeanLinear())
    bpda = nn.Sequential(BPDA(quantise), MeanLinear())
    assert accuracy(raw, x, y) == 1.0
    threat = ThreatModel("linf", 0.3)
    plain_adv = PGD(raw, threat, steps=10, random_start=False)(x, y)
    bpda_adv = PGD(bpda, threat, steps=10, random_start=False)(x, y)
    assert accuracy(raw, plain_adv, y) == 1.0  # zero gradient: PGD never moves
    broken = accuracy(raw, bpda_adv, y)  # same defended model, attacked through BPDA
    assert broken < 0.75
    assert accuracy(bpda, bpda_adv, y) == broken  # BPDA changes only the backward pass


def test_transfer_matrix_diagonal_is_white_box_accuracy() -> None:
    x, y = data()
    models = {"linear": MeanLinear(), "half": HalfLinear()}
    threat = ThreatModel("linf", 0.3)

    def factory(m: nn.Module) -> PGD:
        return PGD(m, threat, steps=10, random_start=False)

    matrix = transfer_matrix(models, factory, x, y, batch_size=16)
    assert set(matrix) == {(s, t) for s in models for t in models}
    for name, model in models.items():
        assert matrix[(name, name)] == accuracy(model, factory(model)(x, y), y)
    transfer = TransferAttack(factory(models["linear"]))
    assert transfer.source_model is models["linear"]
    assert matrix[("linear", "half")] == accuracy(models["half"], transfer(x, y), y)
    assert matrix[("half", "half")] < 1.0
    assert matrix[("half", "linear")] > matrix[("half", "half")]  # a half-image perturbation transfers weakly


class HalfLinear(MeanLinear):
    """Looks at the first half of the pixels only, so its gradient moves only those: it transfers weakly."""

    def forward(self, x: Tensor) -> Tensor:
        half = x.flatten(1)[:, : x[0].numel() // 2]
        return super().forward(half)


def test_output_randomness_flags_stochastic_models() -> None:
    x, _ = data(8)
    assert output_randomness(Noisy(), x)["stochastic_outputs"] is True
    clean = output_randomness(nn.Sequential(MeanLinear(), nn.Dropout(0.5)), x)  # dropout is off in eval
    assert clean == {"stochastic_outputs": False, "max_logit_diff": 0.0}


def test_softmax_as_logits_flags_probability_outputs() -> None:
    x, _ = data(8)
    assert softmax_as_logits(Softmaxed(), x)["softmax_outputs"] is True
    assert softmax_as_logits(MeanLinear(), x)["softmax_outputs"] is False


def test_gradient_health_flags_a_rounding_defence() -> None:
    x, y = data(8)
    assert gradient_health(nn.Sequential(_Fn(quantise), MeanLinear()), x, y)["unhealthy_gradients"] is True
    healthy = gradient_health(MeanLinear(), x, y)
    assert healthy["unhealthy_gradients"] is False and healthy["zero_grad_fraction"] == 0.0


def test_black_box_beats_white_box_counts_points_only_black_box_broke() -> None:
    t, f = True, False
    pgd = torch.tensor([t, t, f, t, f])  # cumulative robust masks in run order
    apgd = torch.tensor([t, t, f, f, f])
    square = torch.tensor([f, t, f, f, f])  # breaks point 0, which both white-box attacks left robust
    bad = black_box_beats_white_box({"pgd-40 linf eps=0.03": pgd, "apgd-ce": apgd, "square": square})
    assert bad["black_box_beats_white_box"] is True and bad["black_box_only_count"] == 1
    good = black_box_beats_white_box({"apgd-ce": apgd, "square-5000 linf": apgd.clone()})
    assert good["black_box_beats_white_box"] is False and good["black_box_only_count"] == 0
    assert black_box_beats_white_box({"apgd-ce": apgd})["black_box_beats_white_box"] is False


def test_accuracy_curve_and_large_eps_checks() -> None:
    assert accuracy_not_decreasing_in_eps({8 / 255: 0.4, 2 / 255: 0.7, 16 / 255: 0.5})["accuracy_increases_with_eps"]
    good = accuracy_not_decreasing_in_eps({2 / 255: 0.7, 8 / 255: 0.4, 16 / 255: 0.4})
    assert good == {"max_accuracy_increase_in_eps": 0.0, "accuracy_increases_with_eps": False}
    assert large_eps_collapse(0.35)["large_eps_collapsed"] is False
    assert large_eps_collapse(0.0)["large_eps_collapsed"] is True


def test_run_sanity_checks_warns_only_on_a_bad_model() -> None:
    x, y = data(16)
    good = run_sanity_checks(MeanLinear(), x, y, eps_curve={0.1: 0.5, 0.2: 0.1}, large_eps_accuracy=0.0)
    assert good["warnings"] == []
    bad_model = nn.Sequential(_Fn(quantise), Noisy(), nn.Softmax(dim=1))
    flags = {"apgd-ce": torch.ones(16, dtype=torch.bool), "square": torch.zeros(16, dtype=torch.bool)}
    bad = run_sanity_checks(bad_model, x, y, flags_by_attack=flags, eps_curve={0.1: 0.2, 0.2: 0.5},
                            large_eps_accuracy=0.9)
    assert bad["stochastic_outputs"] and bad["softmax_outputs"] and bad["unhealthy_gradients"]
    assert bad["black_box_beats_white_box"] and bad["accuracy_increases_with_eps"] and not bad["large_eps_collapsed"]
    assert len(bad["warnings"]) == 6
