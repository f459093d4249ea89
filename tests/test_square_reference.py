"""Square against AutoAttack's port (pyautoattack 0.2.0): the window schedule, the search step for step in every
norm (RGB images, so L2's per-channel mass move is exercised), robust accuracy, and the L1-box projection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from robustlab.attacks import create_attack
from robustlab.attacks.l1_box import l1_box_projection
from robustlab.attacks.square import Square, p_schedule
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel

pyautoattack = pytest.importorskip("pyautoattack")
from pyautoattack.autopgd_base import L1_projection  # noqa: E402
from pyautoattack.square import SquareAttack  # noqa: E402

REF_NORM = {"linf": "Linf", "l2": "L2", "l1": "L1"}
SHAPE = (3, 32, 32)  # RGB and >= 25 px: the start grid is the reference's 5 x 5 blobs


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def conv_model(seed: int) -> nn.Module:
    """A small seeded conv net (10 classes) in eval mode."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, 10)
    ).eval()


def batch(model: nn.Module, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Uniform images labelled with the model's own prediction (all clean-correct)."""
    x = torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return x, model(x).argmax(1)


def reference(model: nn.Module, norm: str, eps: float, n_queries: int, resc: bool) -> SquareAttack:
    return SquareAttack(model, norm=REF_NORM[norm], n_queries=n_queries, eps=eps, seed=0, resc_schedule=resc,
                        device=torch.device("cpu"))


# --------------------------------------------------------------------------------------------- schedule


@pytest.mark.parametrize("resc", [True, False])
@pytest.mark.parametrize("n_queries", [1, 7, 100, 1000, 5000, 10000, 12345])
def test_p_schedule_is_the_reference_p_selection(resc: bool, n_queries: int) -> None:
    ref = SquareAttack(None, n_queries=n_queries, eps=0.1, p_init=0.8, resc_schedule=resc)
    ours = [p_schedule(it, n_queries, 0.8, resc) for it in range(n_queries)]
    assert ours == [ref.p_selection(it) for it in range(n_queries)]


def test_resc_schedule_false_halves_at_fixed_iterations() -> None:
    # AutoAttack's setting: p halves after iterations 10, 50, ... whatever the budget
    fixed = [p_schedule(it, 100, 0.8, False) for it in (10, 11, 50, 51, 99)]
    assert fixed == [0.8, 0.4, 0.4, 0.2, 0.2]
    rescaled = [p_schedule(it, 100, 0.8, True) for it in (0, 1, 11, 99)]  # 11 of 100 -> 1100 of 10000
    assert rescaled == [0.8, 0.8 / 4, 0.8 / 32, 0.8 / 512]
    threat = ThreatModel("linf", 0.1)
    assert Square(nn.Flatten(), threat).resc_schedule is True
    assert create_attack("square", nn.Flatten(), threat, resc_schedule=False).resc_schedule is False
    with pytest.raises(InputError):
        Square(nn.Flatten(), threat, resc_schedule=1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- the search


@pytest.mark.parametrize(("norm", "eps", "resc"), [("linf", 0.03, False), ("l2", 3.0, False), ("l2", 3.0, True),
                                                   ("l1", 40.0, False)])
def test_search_follows_the_reference_step_for_step(norm: str, eps: float, resc: bool) -> None:
    """Same seed, same batch: every point of the search is the reference's (L1: up to the final box clip)."""
    model = conv_model(0)
    x, y = batch(model, 12, seed=1)
    n_queries = 30
    ref = reference(model, norm, eps, n_queries, resc)
    ref.init_hyperparam(x)
    torch.manual_seed(0)
    _, ref_best = ref.attack_single_run(x, y)
    ours = Square(model, ThreatModel(norm, eps), queries=n_queries, seed=0, resc_schedule=resc)(x, y)
    moved = (ours != x).flatten(1).any(1)  # ours returns x where the search never beat the clean margin
    assert int(moved.sum()) >= 10
    assert torch.allclose(ours[moved], ref_best[moved].clamp(0, 1), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("norm", "eps", "n", "n_queries"), [("linf", 0.03, 100, 100), ("l2", 3.0, 100, 100),
                                                             ("l1", 40.0, 40, 60)])
def test_robust_accuracy_matches_reference(norm: str, eps: float, n: int, n_queries: int) -> None:
    """AutoAttack's Square (resc_schedule=False) and ours: same fooled points, same adversarial examples."""
    model = conv_model(0)
    x, y = batch(model, n, seed=1)
    ref_adv = reference(model, norm, eps, n_queries, resc=False).perturb(x, y)
    ours = Square(model, ThreatModel(norm, eps), queries=n_queries, seed=0, resc_schedule=False)(x, y)
    with torch.no_grad():
        ref_fooled, our_fooled = model(ref_adv).argmax(1) != y, model(ours).argmax(1) != y
    assert 0 < int(ref_fooled.sum()) < n, "the budget must leave both fooled and robust points"
    assert abs(int(ref_fooled.sum()) - int(our_fooled.sum())) <= max(1, n // 100)
    both = ref_fooled & our_fooled
    assert torch.allclose(ours[both], ref_adv[both].clamp(0, 1), rtol=0, atol=1e-6)


def test_l1_outputs_in_ball_and_box_with_binary_images() -> None:
    """Pixels at 0 and 1 make the box active everywhere: the L1 search must still stay in ball and box."""
    model = conv_model(2)
    x = (torch.rand(6, *SHAPE, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    with torch.no_grad():
        y = model(x).argmax(1)
    threat = ThreatModel("l1", 12.0)
    x_adv = Square(model, threat, queries=20, restarts=2)(x, y)
    assert bool(threat.contains(x_adv, x, atol=1e-6).all())
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert bool((x_adv != x).any())


# --------------------------------------------------------------------------------------------- L1-box projection


@pytest.mark.parametrize("scale", [0.05, 0.5, 2.0])
@pytest.mark.parametrize("eps", [0.5, 5.0, 50.0])
def test_l1_box_projection_is_the_reference_l1_projection(scale: float, eps: float) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 8, 8, generator=gen)
    x[:4] = (x[:4] < 0.5).float()  # pixels on the box's faces
    delta = (torch.rand(x.shape, generator=gen) - 0.5) * 2 * scale
    r = l1_box_projection(x, delta, eps)
    assert torch.equal(r, L1_projection(x, delta, eps))
    out = x + delta + r
    # float32 rounding in the cumulative sums (as in the reference) leaves ~1e-7 of the summed |delta| over
    assert bool(((delta + r).flatten(1).abs().sum(1) <= eps + 1e-6 * delta.flatten(1).abs().sum(1)).all())
    assert float(out.min()) >= -1e-6 and float(out.max()) <= 1 + 1e-6
    inside = ((x + delta).flatten(1).amin(1) >= 0) & ((x + delta).flatten(1).amax(1) <= 1)
    inside &= delta.flatten(1).abs().sum(1) <= eps
    assert bool((r[inside] == 0).all()), "a point already in ball and box does not move"


def test_l1_box_projection_is_the_reference_on_mixed_batches() -> None:
    """Batches where some rows already lie in the ball after the box step and others need the search (only those are
    sorted), with tied magnitudes: every row equals the reference's bit for bit."""
    gen = torch.Generator().manual_seed(2)
    for trial in range(20):
        x = torch.rand(12, 1, 6, 6, generator=gen)
        x[:3] = (x[:3] < 0.5).float()
        tied = torch.randint(-4, 5, x.shape, generator=gen).float() / 8  # many equal magnitudes
        delta = torch.where(torch.rand(x.shape, generator=gen) < 0.5, tied, torch.randn(x.shape, generator=gen))
        delta = delta * (torch.rand(x.shape, generator=gen) < 0.6) * torch.linspace(0.05, 1.5, 12).view(12, 1, 1, 1)
        eps = 2.0 + trial / 4
        outside = (delta.flatten(1).abs().sum(1) - (x + delta - (x + delta).clamp(0, 1)).flatten(1).abs().sum(1)) > eps
        assert 0 < int(outside.sum()) < 12, "the batch mixes rows inside and outside the ball"
        assert torch.equal(l1_box_projection(x, delta, eps), L1_projection(x, delta, eps))


def test_l1_box_projection_keeps_float64() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(4, 1, 5, 5, generator=gen, dtype=torch.float64)
    delta = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    r = l1_box_projection(x, delta, 1.0)
    assert r.dtype == torch.float64
    assert bool(((delta + r).flatten(1).abs().sum(1) <= 1.0 + 1e-9).all())
    assert float((x + delta + r).min()) >= -1e-12 and float((x + delta + r).max()) <= 1 + 1e-12


class _WholeImageSquare(Square):
    """Square with the reference's L-inf step: the change added to the whole image, which is then projected."""

    def _step_linf(self, x: Tensor, x_best: Tensor, p: float, draws: Any) -> Tensor:
        _, c, h, w = x.shape
        eps = self.threat.eps
        s = min(max(int(round((p * (h * w)) ** 0.5)), 1), h, w)
        vh, vw = draws.corners(h - s, w - s)
        change = torch.zeros(c, h, w, device=x.device, dtype=x.dtype)
        change[:, vh : vh + s, vw : vw + s] = 2.0 * eps * draws.signs(c, 1, 1)
        return torch.clamp(torch.min(torch.max(x_best + change, x - eps), x + eps), 0.0, 1.0)


@pytest.mark.parametrize("eps", [0.03, 0.3, 0.6])
def test_linf_window_step_is_the_whole_image_step_bit_for_bit(eps: float) -> None:
    """Moving and projecting only the window gives the whole-image step's floats exactly (images with many exact
    0s and 1s, so the box clips, and a budget long enough for the window to shrink)."""
    model = conv_model(0)
    x = torch.rand(16, *SHAPE, generator=torch.Generator().manual_seed(3))
    x = torch.where(x < 0.3, torch.zeros_like(x), torch.where(x > 0.8, torch.ones_like(x), x))
    with torch.no_grad():
        y = model(x).argmax(1)
    threat = ThreatModel("linf", eps)
    ours = Square(model, threat, queries=60, seed=0, resc_schedule=True)(x, y)
    whole = _WholeImageSquare(model, threat, queries=60, seed=0, resc_schedule=True)(x, y)
    assert not torch.equal(ours, x)
    assert torch.equal(ours, whole)
