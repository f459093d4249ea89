"""SPSA and simplified Brendel & Bethge: threat-model invariants, gradient-free and seeded SPSA, SPSA on easy linear
points, B&B minimal norms against the closed form on linear models and its exact eps cut. Tiny models only."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from robustlab.attacks import create_attack, get_attack_class
from robustlab.attacks.base import Attack
from robustlab.attacks.bb import BrendelBethge
from robustlab.attacks.pgd import PGD
from robustlab.attacks.spsa import SPSA
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel, lp_norm
from tests.test_fab_square import (
    NUM_CLASSES,
    SHAPE,
    NoGradModel,
    _one_thread,  # noqa: F401  (autouse fixture: one intra-op thread)
    linear_batch,
    linear_model,
    optimum,
    predicted,
    tiny_model,
)


def make_attack(kind: str, model: nn.Module, threat: ThreatModel) -> Attack:
    """Attacks under test with few steps/queries."""
    if kind == "spsa":
        return SPSA(model, threat, steps=3, n_samples=8, chunk_size=3)
    return BrendelBethge(model, threat, steps=3, init_eps=2 * threat.eps)  # starts outside the ball: exercises the cut


# --------------------------------------------------------------------------------------------- property tests

EPS_RANGE = {"linf": (1e-3, 1.0), "l2": (1e-3, 5.0)}


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("kind", ["spsa", "bb"])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_output_in_threat_model(kind: str, norm: str, data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 3))
    shape = (data.draw(st.integers(1, 2)), data.draw(st.integers(2, 5)), data.draw(st.integers(2, 5)))
    eps = data.draw(st.floats(*EPS_RANGE[norm]))
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]))
    seed = data.draw(st.integers(0, 2**16))
    model = tiny_model(data.draw(st.sampled_from(["conv", "linear"])), shape, seed).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=gen)
    if data.draw(st.booleans()):
        x = (x < 0.5).float()  # pixels on the box edges
    x = x.to(dtype)
    y = torch.randint(0, 5, (n,), generator=gen)
    target = (y + 1) % 5 if data.draw(st.booleans()) else None
    threat = ThreatModel(norm, eps)
    x_before = x.clone()
    x_adv = make_attack(kind, model, threat)(x, y, target=target)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert torch.equal(x, x_before), "the attack modified its input"
    assert bool(torch.isfinite(x_adv).all())
    assert bool(threat.contains(x_adv, x).all())
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def test_registered_and_refusals() -> None:
    model = linear_model(0)
    assert get_attack_class("spsa") is SPSA and get_attack_class("bb") is BrendelBethge
    with pytest.raises(InputError):
        BrendelBethge(model, ThreatModel("l1", 1.0))
    with pytest.raises(InputError):
        SPSA(model, ThreatModel("linf", 0.1), delta=0.0)
    with pytest.raises(InputError):
        BrendelBethge(model, ThreatModel("linf", 0.1), init_eps=0.2, init_attack=PGD(model, ThreatModel("linf", 0.1)))


# --------------------------------------------------------------------------------------------- SPSA


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_spsa_is_gradient_free_and_deterministic_under_a_seed(norm: str) -> None:
    model = tiny_model("conv", SHAPE, seed=1, num_classes=NUM_CLASSES)
    x = torch.rand(6, *SHAPE, generator=torch.Generator().manual_seed(2))
    y = predicted(model, x)
    threat = ThreatModel(norm, 0.05 if norm == "linf" else 0.5)
    a = SPSA(NoGradModel(model), threat, steps=4, n_samples=16, seed=5)(x, y)
    b = SPSA(NoGradModel(model), threat, steps=4, n_samples=16, seed=5)(x, y)
    c = SPSA(NoGradModel(model), threat, steps=4, n_samples=16, seed=6)(x, y)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_spsa_breaks_easy_points_of_a_linear_model(norm: str) -> None:
    shape = (1, 8, 8)
    model = linear_model(8, shape)
    x, y = linear_batch(model, 32, seed=9, shape=shape)
    opt = optimum(model, x, y, norm)
    eps = float(opt.median())
    threat = ThreatModel(norm, eps)
    x_adv = create_attack("spsa", NoGradModel(model), threat, steps=30)(x, y)
    fooled = predicted(model, x_adv) != y
    easy = opt < 0.5 * eps
    assert bool(easy.sum() >= 4)
    assert bool(fooled[easy].all()), (opt / eps)[easy & ~fooled]
    assert not bool(fooled[opt > eps].any()), "fooled a point beyond its analytic optimum"
    assert bool(threat.contains(x_adv, x).all())


# --------------------------------------------------------------------------------------------- B&B


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_bb_minimal_norm_near_closed_form(norm: str) -> None:
    torch.manual_seed(1)  # the PGD start draws from the global generator
    model = linear_model(0, mixed_sparsity=True)
    x, y = linear_batch(model, 24, seed=1)
    opt = optimum(model, x, y, norm)
    start_eps = 2 * float(opt.max())  # PGD-20 at this radius fools every sample: a PGD start for all
    attack = BrendelBethge(model, ThreatModel(norm, min(start_eps, 1.0)), steps=100)
    x_min, found = attack.minimal_perturbation(x, y)
    assert bool(found.all())
    assert bool((predicted(model, x_min) != y).all())
    ratio = lp_norm(x_min - x, norm) / opt
    assert float(ratio.min()) >= 1 - 1e-3, "a perturbation below the analytic optimum: the optimum is wrong"
    assert float(ratio.max()) <= 1.25, ratio


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_bb_fixed_eps_succeeds_exactly_below_optimum(norm: str) -> None:
    torch.manual_seed(3)
    model = linear_model(2, mixed_sparsity=True)
    x, y = linear_batch(model, 32, seed=3)
    opt = optimum(model, x, y, norm)
    eps = float(opt.median())
    threat = ThreatModel(norm, eps)
    x_adv = create_attack("bb", model, threat, steps=60, init_eps=2 * eps)(x, y)  # the CCE "wPGD2" start
    fooled = predicted(model, x_adv) != y
    clear = (opt < 0.99 * eps) | (opt > 1.01 * eps)
    assert bool(clear.sum() >= 24)
    assert torch.equal(fooled[clear], (opt < eps)[clear])
    assert bool(threat.contains(x_adv, x).all())
    assert torch.equal(x_adv[~fooled], x[~fooled]), "failed samples must come back unchanged"


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_bb_never_reports_a_non_adversarial_point(norm: str) -> None:
    model = tiny_model("conv", SHAPE, seed=4, num_classes=NUM_CLASSES)
    x = torch.rand(16, *SHAPE, generator=torch.Generator().manual_seed(5))
    y = predicted(model, x)
    y[:2] = (y[:2] + 1) % NUM_CLASSES  # already misclassified: success with a zero perturbation
    threat = ThreatModel(norm, 0.03 if norm == "linf" else 0.3)
    attack = BrendelBethge(model, threat, steps=20)
    x_min, found = attack.minimal_perturbation(x, y)
    assert bool(found[:2].all()) and torch.equal(x_min[:2], x[:2])
    assert bool((predicted(model, x_min[found]) != y[found]).all())
    assert torch.equal(x_min[~found], x[~found])
    assert bool((lp_norm(x_min[found] - x[found], norm) <= threat.eps * (1 + 1e-4)).all()), "beyond the PGD start"
    x_adv = attack(x, y)
    moved = (x_adv != x).flatten(1).any(1)
    assert bool(moved.any())
    assert bool((predicted(model, x_adv[moved]) != y[moved]).all())


def test_bb_targeted_reaches_target_on_linear_model() -> None:
    model = linear_model(10)
    x, y = linear_batch(model, 12, seed=11)
    with torch.no_grad():
        target = model(x).scatter(1, y[:, None], float("-inf")).argmax(1)  # the runner-up: reachable
    x_min, found = BrendelBethge(model, ThreatModel("linf", 0.3), steps=20).minimal_perturbation(x, y, target=target)
    assert bool(found.all())
    assert torch.equal(predicted(model, x_min), target)
