"""FAB / FAB-T / Square: threat-model invariants, minimal norms against the closed form on linear models, the eps
cut, targeted boundaries, Square's determinism and gradient-free operation. Tiny models only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from robustlab.attacks import create_attack, get_attack_class
from robustlab.attacks import fab as fab_module
from robustlab.attacks.base import Attack
from robustlab.attacks.fab import FAB, FABTargeted, project_hyperplane_box
from robustlab.attacks.square import Square
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel, lp_norm


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread avoids oversubscription on a loaded machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# --------------------------------------------------------------------------------------------- helpers

SHAPE = (3, 8, 8)
NUM_CLASSES = 10


def linear_model(seed: int, shape: tuple[int, int, int] = SHAPE, *, mixed_sparsity: bool = False) -> nn.Module:
    """logits = W x + b, random; ``mixed_sparsity``: rows of different density, centred logits, varied labels."""
    gen = torch.Generator().manual_seed(seed)
    d = int(torch.tensor(shape).prod())
    num_classes = NUM_CLASSES
    lin = nn.Linear(d, num_classes)
    density = torch.linspace(0.05, 1.0, num_classes)[:, None] if mixed_sparsity else torch.ones(num_classes, 1)
    mask = torch.rand(num_classes, d, generator=gen) < density
    with torch.no_grad():
        lin.weight.copy_(torch.randn(num_classes, d, generator=gen) * 0.1 * mask / density.sqrt())
        bias = torch.randn(num_classes, generator=gen) * 0.1
        if mixed_sparsity:  # centre the logits on the inputs' range so that every class gets predicted somewhere
            bias = bias * 0.1 - lin.weight.sum(1) * 0.5
        lin.bias.copy_(bias)
    return nn.Sequential(nn.Flatten(), lin)


def linear_batch(model: nn.Module, n: int, seed: int, shape: tuple[int, int, int] = SHAPE) -> tuple[Tensor, Tensor]:
    """Inputs in [0.35, 0.65] (the box stays inactive) labelled with the model's own prediction."""
    x = 0.35 + 0.3 * torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return x, model(x).argmax(1)


def _weights(model: nn.Module) -> tuple[Tensor, Tensor]:
    lin = model[1]
    return lin.weight.detach(), lin.bias.detach()


def boundary_distances(model: nn.Module, x: Tensor, y: Tensor, norm: str) -> Tensor:
    """Closed-form distance from each x to each hyperplane z_y = z_j, shape (N, K); inf for j = y."""
    w, b = _weights(model)
    z = x.flatten(1) @ w.T + b
    gap = z.gather(1, y[:, None]) - z  # >= 0: y is the prediction
    diff = w[y][:, None, :] - w[None]
    dual = diff.abs().sum(-1) if norm == "linf" else diff.norm(dim=-1)
    dist = gap / dual
    return dist.scatter(1, y[:, None], float("inf"))


def optimum(model: nn.Module, x: Tensor, y: Tensor, norm: str) -> Tensor:
    """The minimal untargeted perturbation of a linear model without the box: the nearest pairwise hyperplane."""
    return boundary_distances(model, x, y, norm).min(1).values


def predicted(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def tiny_model(kind: str, shape: tuple[int, int, int], seed: int, num_classes: int = 5) -> nn.Module:
    """A small random conv or linear classifier."""
    torch.manual_seed(seed)
    c, h, w = shape
    if kind == "conv":
        return nn.Sequential(
            nn.Conv2d(c, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, num_classes)
        )
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))


def make_attack(kind: str, model: nn.Module, threat: ThreatModel) -> Attack:
    """Attacks under test with few steps/queries."""
    if kind == "fab":
        return FAB(model, threat, steps=3, restarts=2, seed=0)
    if kind == "fab-t":
        return FABTargeted(model, threat, steps=3, n_target_classes=2, restarts=2, seed=0)
    return Square(model, threat, queries=15, restarts=2)


# --------------------------------------------------------------------------------------------- property tests

EPS_RANGE = {"linf": (1e-3, 1.0), "l2": (1e-3, 5.0), "l1": (1e-3, 20.0)}


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("kind", ["fab", "fab-t", "square"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_output_in_threat_model(kind: str, norm: str, data: st.DataObject) -> None:
    check_output_in_threat_model(kind, norm, data)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_square_l1_output_in_threat_model(data: st.DataObject) -> None:
    check_output_in_threat_model("square", "l1", data)


def check_output_in_threat_model(kind: str, norm: str, data: st.DataObject) -> None:
    """Random shapes, radii, dtypes and fills (binary pixels sit on the box's faces): output in ball and box."""
    n = data.draw(st.integers(1, 4))
    shape = (data.draw(st.integers(1, 3)), data.draw(st.integers(2, 9)), data.draw(st.integers(2, 9)))
    eps = data.draw(st.floats(*EPS_RANGE[norm]))
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]))
    fill = data.draw(st.sampled_from(["uniform", "binary", "constant"]))
    seed = data.draw(st.integers(0, 2**16))
    model = tiny_model(data.draw(st.sampled_from(["conv", "linear"])), shape, seed).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=gen)
    if fill == "binary":
        x = (x < 0.5).float()
    elif fill == "constant":
        x = torch.full_like(x, data.draw(st.sampled_from([0.0, 0.5, 1.0])))
    x = x.to(dtype)
    y = torch.randint(0, 5, (n,), generator=gen)
    target = (y + 1) % 5 if kind != "fab" and data.draw(st.booleans()) else None
    threat = ThreatModel(norm, eps)
    x_before = x.clone()
    x_adv = make_attack(kind, model, threat)(x, y, target=target)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert torch.equal(x, x_before), "the attack modified its input"
    assert bool(torch.isfinite(x_adv).all())
    assert bool(threat.contains(x_adv, x).all())
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


@pytest.mark.parametrize("newton_steps", [0, 2, 8])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_solves_box_constrained_problem(norm: str, newton_steps: int) -> None:
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(256, 30, generator=gen, dtype=torch.float64)
    w = torch.randn(256, 30, generator=gen, dtype=torch.float64)
    c = torch.randn(256, generator=gen, dtype=torch.float64) * 6
    d = project_hyperplane_box(p, w, c, norm, newton_steps=newton_steps)
    assert float((p + d).min()) >= 0.0 and float((p + d).max()) <= 1.0
    max_reach = (w.abs() * torch.where(w * c[:, None] > 0, 1 - p, p)).sum(1)  # w . d at the far box corner
    feasible = max_reach > c.abs()
    assert bool(feasible.any()) and bool((~feasible).any())
    torch.testing.assert_close((w * d).sum(1)[feasible], c[feasible])
    # minimality: no feasible step of smaller norm, checked against random feasible steps (rescaled onto the plane)
    checked = 0
    for _ in range(20):
        q = torch.rand(256, 30, generator=gen, dtype=torch.float64) - p  # a random step inside the box
        scale = c / (w * q).sum(1)
        ok = feasible & (scale > 0) & (scale <= 1)  # shrinking towards p keeps the step inside the box
        alt = lp_norm(q * scale[:, None], norm)
        assert bool((alt[ok] >= lp_norm(d, norm)[ok] * (1 - 1e-9)).all())
        checked += int(ok.sum())
    assert checked > 100
    # infeasible rows: every coordinate pushed to the box edge on w's side
    far = torch.where(w * c[:, None] > 0, 1 - p, -p)
    torch.testing.assert_close(d[~feasible], far[~feasible])
    # without an active box the closed form holds
    p_mid = 0.5 + 0.0 * p
    d_mid = project_hyperplane_box(p_mid, w, 1e-3 * c, norm)
    dual = w.abs().sum(1) if norm == "linf" else w.norm(dim=1)
    torch.testing.assert_close(lp_norm(d_mid, norm), 1e-3 * c.abs() / dual)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_newton_rows_equal_sorted_rows(norm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Newton's solve and the sorted one give the same step, on image-like rows (ties at 0 and 1, zero weights);
    few Newton steps leave rows to the sort, so both paths run in one call."""
    gen = torch.Generator().manual_seed(1)
    p = torch.rand(400, 196, generator=gen, dtype=torch.float64)
    p = torch.where(p < 0.4, 0.0, torch.where(p > 0.8, 1.0, p))
    w = torch.randn(400, 196, generator=gen, dtype=torch.float64) * (torch.rand(400, 196, generator=gen) > 0.1)
    c = torch.randn(400, generator=gen, dtype=torch.float64) * torch.logspace(-3, 1.5, 400, dtype=torch.float64)
    sorted_rows: list[int] = []
    sort_solve = fab_module._breakpoint_sorted

    def counting_sort(slope: Tensor, brk: Tensor, c: Tensor) -> Tensor:
        sorted_rows.append(len(c))
        return sort_solve(slope, brk, c)

    monkeypatch.setattr(fab_module, "_breakpoint_sorted", counting_sort)
    reference = project_hyperplane_box(p, w, c, norm, newton_steps=0)
    left_to_sort = {}
    for steps in (1, 3, 8, 50):
        sorted_rows.clear()
        step = project_hyperplane_box(p, w, c, norm, newton_steps=steps)
        torch.testing.assert_close(step, reference, rtol=1e-9, atol=1e-12)
        left_to_sort[steps] = sum(sorted_rows)
    assert 0 < left_to_sort[1] < 400 and left_to_sort[50] == 0, left_to_sort


@pytest.mark.parametrize("newton_steps", [0, 8])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_float32_at_the_edge_of_reach(norm: str, newton_steps: int) -> None:
    """In float32, with weights over six decades (L2 breakpoints up to ~1e6), a hyperplane just out of the box's
    reach sends every coordinate to its edge and one just within it is reached, by either solve."""
    gen = torch.Generator().manual_seed(1)
    p = torch.rand(2000, 784, generator=gen)
    w = torch.randn(2000, 784, generator=gen) * torch.logspace(-4, 2, 784)[torch.randperm(784, generator=gen)]
    max_reach = (w.abs() * torch.where(w > 0, 1 - p, p)).sum(1)  # w . d at the far box corner
    far = torch.where(w > 0, 1 - p, torch.where(w < 0, -p, 0.0))
    out_of_reach = project_hyperplane_box(p, w, max_reach * (1 + 1e-4), norm, newton_steps=newton_steps)
    torch.testing.assert_close(out_of_reach, far, rtol=0, atol=1e-6)
    c = max_reach * (1 - 1e-4)
    within = project_hyperplane_box(p, w, c, norm, newton_steps=newton_steps)
    assert float((p + within).min()) >= 0.0 and float((p + within).max()) <= 1.0
    torch.testing.assert_close((w.double() * within.double()).sum(1), c.double(), rtol=1e-5, atol=0)


# --------------------------------------------------------------------------------------------- FAB on linear models


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("cls", [FAB, FABTargeted])
def test_fab_minimal_norm_near_closed_form(cls: type, norm: str) -> None:
    model = linear_model(0, mixed_sparsity=True)
    x, y = linear_batch(model, 24, seed=1)
    opt = optimum(model, x, y, norm)
    attack = cls(model, ThreatModel(norm, float(opt.median())), steps=20)
    x_min, found = attack.minimal_perturbation(x, y)
    assert bool(found.all())
    assert bool((predicted(model, x_min) != y).all())
    ratio = lp_norm(x_min - x, norm) / opt
    assert float(ratio.min()) >= 1 - 1e-4, "a perturbation below the analytic optimum: the optimum is wrong"
    assert float(ratio.max()) <= 1.25, ratio


@pytest.mark.parametrize(("norm", "expected"), [("linf", 8 / 100), ("l2", 1 / 2)])
def test_fab_picks_the_closest_boundary_in_the_attack_norm(norm: str, expected: float) -> None:
    # class 1 differs from the true class 0 on 4 pixels with margin 1, class 2 on 100 pixels with margin 8:
    # L-inf distances 1/4 vs 8/100 (class 2 nearer), L2 distances 1/2 vs 8/10 (class 1 nearer)
    d = int(torch.tensor(SHAPE).prod())
    lin = nn.Linear(d, NUM_CLASSES)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1, :4] = 1.0
        lin.weight[2, 4:104] = 1.0
        lin.bias.copy_(torch.tensor([0.0, -1.0 - 2.0, -8.0 - 50.0] + [-100.0] * (NUM_CLASSES - 3)))
    model = nn.Sequential(nn.Flatten(), lin)
    x = torch.full((2, *SHAPE), 0.5)
    y = torch.zeros(2, dtype=torch.long)
    torch.testing.assert_close(optimum(model, x, y, norm), torch.full((2,), expected))
    x_min, found = FAB(model, ThreatModel(norm, 1.0), steps=20).minimal_perturbation(x, y)
    assert bool(found.all())
    ratio = lp_norm(x_min - x, norm) / expected
    assert bool((ratio >= 1 - 1e-4).all()) and bool((ratio <= 1.25).all()), ratio


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("kind", ["fab", "fab-t"])
def test_fab_fixed_eps_succeeds_exactly_below_optimum(kind: str, norm: str) -> None:
    model = linear_model(2, mixed_sparsity=True)
    x, y = linear_batch(model, 32, seed=3)
    opt = optimum(model, x, y, norm)
    eps = float(opt.median())
    threat = ThreatModel(norm, eps)
    x_adv = create_attack(kind, model, threat, steps=30)(x, y)
    fooled = predicted(model, x_adv) != y
    clear = (opt < 0.99 * eps) | (opt > 1.01 * eps)
    assert bool(clear.sum() >= 24)
    assert torch.equal(fooled[clear], (opt < eps)[clear])
    assert bool(threat.contains(x_adv, x).all())
    assert torch.equal(x_adv[~fooled], x[~fooled]), "failed samples must come back unchanged"


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_t_reaches_the_boundary_of_its_target_class(norm: str) -> None:
    model = linear_model(4, mixed_sparsity=True)
    x, y = linear_batch(model, 24, seed=5)
    dist = boundary_distances(model, x, y, norm)
    with torch.no_grad():
        top_other = model(x).scatter(1, y[:, None], float("-inf")).argmax(1)
    attack = FABTargeted(model, ThreatModel(norm, 1.0), steps=20, n_target_classes=1)
    x_min, found = attack.minimal_perturbation(x, y)
    assert bool(found.all())
    size = lp_norm(x_min - x, norm)
    assert bool((size >= dist.min(1).values * (1 - 1e-4)).all())
    assert bool((size <= 1.25 * dist.gather(1, top_other[:, None]).squeeze(1)).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_t_explicit_target_is_classified_as_target(norm: str) -> None:
    model = linear_model(6)
    x, y = linear_batch(model, 24, seed=7)
    target = (y + 1 + torch.arange(24) % (NUM_CLASSES - 1)) % NUM_CLASSES
    dist_t = boundary_distances(model, x, y, norm).gather(1, target[:, None]).squeeze(1)
    attack = FABTargeted(model, ThreatModel(norm, 1.0), steps=30)
    x_min, found = attack.minimal_perturbation(x, y, target=target)
    assert bool(found.all())
    assert torch.equal(predicted(model, x_min), target)
    size = lp_norm(x_min - x, norm)
    assert bool((size >= dist_t * (1 - 1e-4)).all()), "closer than the z_y = z_t hyperplane: impossible"
    # where the projection onto z_y = z_t already lands in class t, that hyperplane distance is the optimum
    w, _ = _weights(model)
    v = (w[target] - w[y]).reshape(-1, *SHAPE)
    if norm == "linf":
        step = v.sign() * dist_t.reshape(-1, 1, 1, 1)
    else:
        step = v / v.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1) * dist_t.reshape(-1, 1, 1, 1)
    exact = predicted(model, x + step * 1.001) == target
    assert bool(exact.sum() >= 3)
    assert bool((size[exact] <= 1.25 * dist_t[exact]).all())


def test_fab_refuses_targets_and_square_l1() -> None:
    model = linear_model(0)
    x, y = linear_batch(model, 2, seed=0)
    with pytest.raises(InputError):
        FAB(model, ThreatModel("linf", 0.1))(x, y, target=(y + 1) % NUM_CLASSES)
    for cls in (FAB, FABTargeted):  # L1 FAB is tested in test_l1_threat.py
        assert cls(model, ThreatModel("l1", 1.0)).threat.norm == "l1"
    Square(model, ThreatModel("l1", 1.0))  # Square has an L1 version (as AutoAttack's port)
    assert get_attack_class("fab") is FAB and get_attack_class("fab-t") is FABTargeted
    assert get_attack_class("square") is Square


def test_fab_seeded_restarts_are_deterministic() -> None:
    model = tiny_model("conv", SHAPE, seed=3, num_classes=NUM_CLASSES)
    x = torch.rand(6, *SHAPE, generator=torch.Generator().manual_seed(0))
    y = predicted(model, x)
    attack = FAB(model, ThreatModel("l2", 0.5), steps=5, restarts=3, seed=11)
    a, fa = attack.minimal_perturbation(x, y)
    b, fb = attack.minimal_perturbation(x, y)
    assert torch.equal(a, b) and torch.equal(fa, fb)


# --------------------------------------------------------------------------------------------- Square


class _NoBackward(torch.autograd.Function):
    """Identity whose backward fails: proves an attack never differentiates through the model."""

    @staticmethod
    def forward(ctx: object, t: Tensor) -> Tensor:
        return t.clone()

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        raise AssertionError("Square must not call backward")


class NoGradModel(nn.Module):
    """Wraps a model so that any backward pass through it raises, and any graph-recording forward too."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        assert not torch.is_grad_enabled(), "Square must run under torch.no_grad"
        return self.inner(_NoBackward.apply(x))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_breaks_easy_points_of_a_linear_model(norm: str) -> None:
    shape = (1, 8, 8)
    model = linear_model(8, shape)
    x, y = linear_batch(model, 32, seed=9, shape=shape)
    opt = optimum(model, x, y, norm)
    eps = float(opt.median())
    threat = ThreatModel(norm, eps)
    x_adv = Square(NoGradModel(model), threat, queries=400)(x, y)
    fooled = predicted(model, x_adv) != y
    easy = opt < 0.5 * eps
    assert bool(easy.sum() >= 4)
    assert bool(fooled[easy].all()), (opt / eps)[easy & ~fooled]
    assert not bool(fooled[opt > eps].any()), "fooled a point beyond its analytic optimum"
    assert bool(threat.contains(x_adv, x).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_is_deterministic_under_a_seed(norm: str) -> None:
    model = tiny_model("conv", SHAPE, seed=1, num_classes=NUM_CLASSES)
    x = torch.rand(8, *SHAPE, generator=torch.Generator().manual_seed(2))
    y = predicted(model, x)
    threat = ThreatModel(norm, 0.05 if norm == "linf" else 0.5)
    a = Square(NoGradModel(model), threat, queries=30, seed=5)(x, y)
    b = Square(NoGradModel(model), threat, queries=30, seed=5)(x, y)
    c = Square(NoGradModel(model), threat, queries=30, seed=6)(x, y)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_square_targeted_reaches_target_on_linear_model() -> None:
    model = linear_model(10)
    x, y = linear_batch(model, 16, seed=11)
    with torch.no_grad():
        target = model(x).scatter(1, y[:, None], float("-inf")).argmax(1)  # the runner-up: reachable
    x_adv = Square(model, ThreatModel("linf", 0.3), queries=100)(x, y, target=target)
    assert torch.equal(predicted(model, x_adv), target)
