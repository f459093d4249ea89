"""SPSA and Brendel & Bethge: threat-model invariants, gradient-free and seeded SPSA, SPSA on easy linear points, B&B's
trust-region solvers against closed forms, its minimal norms against the closed form on binary and multiclass linear
models and its exact eps cut. Tiny models only."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from robustlab.attacks import create_attack, get_attack_class
from robustlab.attacks.base import Attack
from robustlab.attacks.bb import BrendelBethge
from robustlab.attacks.bb_solvers import trust_region_step
from robustlab.attacks.pgd import PGD
from robustlab.attacks.spsa import SPSA
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel, lp_norm
from tests.test_fab_square import (
    NUM_CLASSES,
    SHAPE,
    NoGradModel,
    _one_thread,  # noqa: F401  (autouse fixture: one intra-op thread)
    boundary_distances,
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
    if kind == "bb":
        return BrendelBethge(model, threat, steps=3, init_eps=2 * threat.eps)  # starts outside the ball: the cut
    return BrendelBethge(model, threat, steps=3, init_steps=50)  # the default blended-noise start


# --------------------------------------------------------------------------------------------- property tests

EPS_RANGE = {"linf": (1e-3, 1.0), "l2": (1e-3, 5.0)}


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("kind", ["spsa", "bb", "bb-noise"])
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
    for bad in ({"momentum": 1.0}, {"overshoot": 0.9}, {"lr": 0.0}, {"radius_batch": 0}):
        with pytest.raises(InputError):
            BrendelBethge(model, ThreatModel("linf", 0.1), **bad)


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


def binary_linear_model(seed: int, shape: tuple[int, int, int] = SHAPE) -> nn.Module:
    """A two-class float64 linear model ``z_1 - z_0 = w . x + b`` whose boundary crosses the box's centre."""
    gen = torch.Generator().manual_seed(seed)
    d = int(torch.tensor(shape).prod())
    lin = nn.Linear(d, 2).double()
    w = torch.randn(d, generator=gen, dtype=torch.float64) * 0.1
    with torch.no_grad():
        lin.weight.copy_(torch.stack([-w / 2, w / 2]))
        lin.bias.copy_(torch.stack([w.sum() / 4, -w.sum() / 4]))
    return nn.Sequential(nn.Flatten(), lin)


def binary_optimum(model: nn.Module, x: Tensor, norm: str) -> Tensor:
    """Closed-form minimal perturbation ``|w . x + b| / ||w||_dual`` (L2: the L2 norm, L-inf: the L1 norm)."""
    lin = model[1]
    w, b = lin.weight[1] - lin.weight[0], lin.bias[1] - lin.bias[0]
    dual = w.abs().sum() if norm == "linf" else w.norm()
    return ((x.flatten(1) @ w + b).abs() / dual).detach()


def float64_linear_batch(model: nn.Module, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Inputs in [0.35, 0.65] (far from the box faces) in float64, labelled by the model."""
    x = (0.35 + 0.3 * torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))).double()
    return x, predicted(model, x)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_bb_reaches_the_binary_closed_form(norm: str) -> None:
    model = binary_linear_model(0)
    x, y = float64_linear_batch(model, 12, seed=1)
    opt = binary_optimum(model, x, norm)
    x_min, found = BrendelBethge(model, ThreatModel(norm, 0.1), steps=100).minimal_perturbation(x, y)
    assert bool(found.all())
    assert bool((predicted(model, x_min) != y).all())
    ratio = lp_norm(x_min - x, norm) / opt
    assert float(ratio.min()) >= 1 - 1e-6, "a perturbation below the analytic optimum: the optimum is wrong"
    assert float(ratio.max()) <= 1.02, ratio


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_bb_multiclass_linear_reaches_the_face_it_ends_on(norm: str) -> None:
    """Multiclass: B&B (a local method) ends on one pairwise face; there it is the closed form, mostly the nearest."""
    model = linear_model(0, mixed_sparsity=True).double()
    x, y = float64_linear_batch(model, 12, seed=1)
    x_min, found = BrendelBethge(model, ThreatModel(norm, 0.1), steps=100).minimal_perturbation(x, y)
    assert bool(found.all())
    pred = predicted(model, x_min)
    assert bool((pred != y).all())
    found_norm = lp_norm(x_min - x, norm)
    face = boundary_distances(model, x, y, norm).gather(1, pred[:, None]).squeeze(1)
    assert float((found_norm / face).min()) >= 1 - 1e-6
    assert float((found_norm / face).max()) <= 1.02, found_norm / face
    ratio = found_norm / optimum(model, x, y, norm)
    assert float(ratio.median()) <= 1.02, ratio


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_bb_fixed_eps_succeeds_exactly_below_optimum(norm: str) -> None:
    model = binary_linear_model(2)
    x, y = float64_linear_batch(model, 24, seed=3)
    opt = binary_optimum(model, x, norm)
    eps = float(opt.median())
    threat = ThreatModel(norm, eps)
    x_adv = create_attack("bb", model, threat, steps=60)(x, y)
    fooled = predicted(model, x_adv) != y
    clear = (opt < 0.99 * eps) | (opt > 1.01 * eps)
    assert bool(clear.sum() >= 18)
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
    for attack in (BrendelBethge(model, threat, steps=20), BrendelBethge(model, threat, steps=20, init_eps=threat.eps)):
        x_min, found = attack.minimal_perturbation(x, y)
        assert bool(found[:2].all()) and torch.equal(x_min[:2], x[:2])
        assert bool((predicted(model, x_min[found]) != y[found]).all())
        assert torch.equal(x_min[~found], x[~found])
        assert float(x_min.min()) >= 0.0 and float(x_min.max()) <= 1.0
    assert bool((lp_norm(x_min[found] - x[found], norm) <= threat.eps * (1 + 1e-4)).all()), "beyond the PGD start"
    x_adv = BrendelBethge(model, ThreatModel(norm, 10 * threat.eps), steps=20)(x, y)
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


# --------------------------------------------------------------------------------------------- B&B's solvers


def solver_problem(n: int, d: int, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Clean points and current points inside the box's middle, a boundary normal and a wanted change ``c``."""
    gen = torch.Generator().manual_seed(seed)
    x0 = 0.4 + 0.2 * torch.rand(n, d, generator=gen, dtype=torch.float64)
    x = 0.4 + 0.2 * torch.rand(n, d, generator=gen, dtype=torch.float64)
    b = torch.randn(n, d, generator=gen, dtype=torch.float64)
    c = 0.05 * torch.randn(n, generator=gen, dtype=torch.float64)
    return x0, x, b, c


def test_bb_l2_step_is_the_projection_onto_the_plane_when_nothing_binds() -> None:
    x0, x, b, c = solver_problem(6, 30, seed=0)
    delta = trust_region_step("l2", x0, x, b, c, torch.full_like(c, 100.0))
    dx = x0 - x
    expected = dx + b * ((c - (b * dx).sum(1)) / (b * b).sum(1))[:, None]  # nearest point to x0 on b . delta = c
    assert torch.allclose(delta, expected, atol=1e-6)


def test_bb_linf_step_reaches_the_plane_at_the_dual_norm_distance() -> None:
    x0, x, b, c = solver_problem(6, 30, seed=1)
    delta = trust_region_step("linf", x0, x, b, c, torch.full_like(c, 100.0))
    assert torch.allclose((b * delta).sum(1), c, rtol=1e-6, atol=1e-9)
    dx = x0 - x
    closed = (c - (b * dx).sum(1)).abs() / b.abs().sum(1)  # L-inf distance from x0 to the plane (box inactive)
    found = (x + delta - x0).abs().amax(1)
    assert torch.allclose(found, closed, rtol=1e-4, atol=2e-6), (found, closed)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_bb_steps_stay_in_the_box_and_the_unreachable_step_in_the_trust_region(norm: str) -> None:
    x0, x, b, c = solver_problem(8, 20, seed=2)
    x = (x - 0.5) * 2.5 + 0.5  # some coordinates near or on the faces
    x = x.clamp(0.0, 1.0)
    r = torch.full_like(c, 0.01)  # too small to reach the plane: the largest step towards it
    delta = trust_region_step(norm, x0, x, b, 10 * c, r)
    assert float((x + delta).min()) >= -1e-12 and float((x + delta).max()) <= 1 + 1e-12
    assert bool((delta.norm(dim=1) <= r * (1 + 1e-6)).all())
    assert bool(((b * delta).sum(1) * c >= 0).all()), "the step must move towards the plane"
    big = trust_region_step(norm, x0, x, b, c, torch.full_like(c, 100.0))
    assert float((x + big).min()) >= -1e-12 and float((x + big).max()) <= 1 + 1e-12


def test_bb_trust_radius_scales_with_the_batch_as_foolbox_unless_fixed() -> None:
    """foolbox's radius is ``lr * N * d``: ``radius_batch=N`` reproduces a call on N samples, and it matters."""
    model = binary_linear_model(4)
    x, y = float64_linear_batch(model, 8, seed=7)
    threat = ThreatModel("l2", 0.3)
    plain, _ = BrendelBethge(model, threat, steps=20).minimal_perturbation(x, y)
    fixed, _ = BrendelBethge(model, threat, steps=20, radius_batch=8).minimal_perturbation(x, y)
    single, _ = BrendelBethge(model, threat, steps=20, radius_batch=1).minimal_perturbation(x, y)
    assert torch.equal(plain, fixed)
    assert not torch.equal(plain, single)
