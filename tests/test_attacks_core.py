"""FGSM / FGSM-RS / PGD / BIM: threat-model invariants, analytic optima on linear models, mode restoration,
targeted mode, input errors, determinism, EoT and restarts. Tiny models only; no data, no weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from robustlab.attacks import (
    BIM,
    FGSM,
    FGSMRS,
    PGD,
    Attack,
    create_attack,
    get_attack_class,
    input_gradient,
    list_attacks,
    register_attack,
)
from robustlab.attacks.losses import get_loss
from robustlab.core.errors import InputError, UnknownNameError
from robustlab.core.threat import ThreatModel

# --------------------------------------------------------------------------------------------- helpers


def tiny_model(kind: str, shape: tuple[int, int, int], num_classes: int = 5, seed: int = 0) -> nn.Module:
    """A small random conv or linear classifier for (C, H, W) inputs."""
    torch.manual_seed(seed)
    c, h, w = shape
    if kind == "conv":
        return nn.Sequential(
            nn.Conv2d(c, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, num_classes)
        )
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))


def linear_binary(w: Tensor, c: float) -> nn.Module:
    """Two-class linear model whose logit difference (class 1 minus class 0) is ``w . x + c``."""
    lin = nn.Linear(w.numel(), 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1] = w
        lin.bias.copy_(torch.tensor([0.0, c]))
    return nn.Sequential(nn.Flatten(), lin)


def margin(w: Tensor, c: float, x: Tensor) -> Tensor:
    """Logit difference of :func:`linear_binary` per sample."""
    return x.flatten(1) @ w + c


def success(model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
    """Per-sample misclassification."""
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


def make_attack(kind: str, model: nn.Module, threat: ThreatModel) -> Attack:
    """Attacks under test, with few steps so property tests stay fast."""
    if kind == "fgsm":
        return FGSM(model, threat)
    if kind == "fgsm-rs":
        return FGSM(model, threat, random_start=True)
    if kind == "pgd":
        return PGD(model, threat, steps=3)
    if kind == "pgd-es-restarts":
        return PGD(model, threat, steps=3, restarts=2, early_stop=True)
    return BIM(model, threat, steps=3)


EPS_RANGE = {"linf": (1e-3, 1.0), "l2": (1e-3, 5.0), "l1": (1e-3, 30.0)}

# --------------------------------------------------------------------------------------------- property tests


@st.composite
def attack_inputs(draw: st.DrawFn, norm: str) -> tuple:
    """A random tiny model, batch, labels, eps and dtype."""
    n = draw(st.integers(1, 4))
    shape = (draw(st.integers(1, 3)), draw(st.integers(4, 12)), draw(st.integers(4, 12)))
    lo, hi = EPS_RANGE[norm]
    eps = draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    fill = draw(st.sampled_from(["uniform", "binary", "constant"]))
    seed = draw(st.integers(0, 2**16))
    model_kind = draw(st.sampled_from(["conv", "linear"]))
    targeted = draw(st.booleans())
    gen = torch.Generator().manual_seed(seed)
    if fill == "uniform":
        x = torch.rand(n, *shape, generator=gen)
    elif fill == "binary":
        x = (torch.rand(n, *shape, generator=gen) < 0.5).float()
    else:
        x = torch.full((n, *shape), draw(st.sampled_from([0.0, 0.5, 1.0])))
    y = torch.randint(0, 5, (n,), generator=gen)
    model = tiny_model(model_kind, shape, seed=seed).to(dtype)
    return model, x.to(dtype), y, eps, targeted, seed


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@pytest.mark.parametrize("kind", ["fgsm", "fgsm-rs", "pgd", "pgd-es-restarts", "bim"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_output_in_threat_model(kind: str, norm: str, data: st.DataObject) -> None:
    model, x, y, eps, targeted, seed = data.draw(attack_inputs(norm))
    threat = ThreatModel(norm, eps)
    x_before = x.clone()
    torch.manual_seed(seed)
    target = (y + 1) % 5 if targeted else None
    x_adv = make_attack(kind, model, threat)(x, y, target=target)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert torch.equal(x, x_before), "the attack modified its input"
    assert bool(torch.isfinite(x_adv).all())
    assert bool(threat.contains(x_adv, x).all())
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


# --------------------------------------------------------------------------------------------- analytic optima

D_SHAPE = (3, 6, 6)


def _linear_case(seed: int, shape: tuple[int, int, int] = D_SHAPE) -> tuple[Tensor, float]:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(int(torch.tensor(shape).prod()), generator=gen) * 0.2
    w = torch.where(w.abs() < 1e-3, torch.full_like(w, 1e-2), w)  # no zero weights: sign(w) well defined
    return w, float(-(w * 0.5).sum())


def test_pgd_linf_reaches_analytic_optimum_box_inactive() -> None:
    w, c = _linear_case(0)
    model = linear_binary(w, c)
    x = 0.3 + 0.4 * torch.rand(8, *D_SHAPE, generator=torch.Generator().manual_seed(1))
    y = torch.ones(8, dtype=torch.long)
    eps = 0.1
    torch.manual_seed(0)
    x_adv = PGD(model, ThreatModel("linf", eps))(x, y)  # defaults: 40 steps, 2.5 eps / 40, random start
    expected = margin(w, c, x) - eps * w.abs().sum()
    assert torch.allclose(margin(w, c, x_adv), expected, atol=1e-4, rtol=0)
    assert torch.allclose((x_adv - x).flatten(1), (-eps * w.sign()).expand(8, -1), atol=1e-6)


def test_pgd_linf_reaches_box_clipped_optimum() -> None:
    w, c = _linear_case(1)
    model = linear_binary(w, c)
    x = torch.rand(6, *D_SHAPE, generator=torch.Generator().manual_seed(2))
    y = torch.ones(6, dtype=torch.long)
    eps = 0.3
    torch.manual_seed(0)
    x_adv = PGD(model, ThreatModel("linf", eps))(x, y)
    optimum = (x.flatten(1) - eps * w.sign()).clamp(0, 1).view_as(x)
    assert torch.allclose(x_adv, optimum, atol=1e-6)
    assert torch.allclose(margin(w, c, x_adv), margin(w, c, optimum), atol=1e-4)


def test_pgd_l2_reaches_analytic_optimum() -> None:
    w, c = _linear_case(2)
    model = linear_binary(w, c)
    x = 0.3 + 0.4 * torch.rand(8, *D_SHAPE, generator=torch.Generator().manual_seed(3))
    y = torch.ones(8, dtype=torch.long)
    eps = 0.15  # |delta_i| <= eps keeps x + delta inside [0.15, 0.85]: the box is inactive
    torch.manual_seed(0)
    x_adv = PGD(model, ThreatModel("l2", eps), steps=60, step_size=eps / 4)(x, y)
    expected = margin(w, c, x) - eps * w.norm()
    assert torch.allclose(margin(w, c, x_adv), expected, atol=1e-4, rtol=0)
    assert torch.allclose((x_adv - x).flatten(1), (-eps * w / w.norm()).expand(8, -1), atol=1e-4)


def test_pgd_l1_reaches_analytic_optimum_small_input() -> None:
    # 16 inputs: the SLIDE direction keeps round(0.05 * 16) = 1 coordinate, the exact L1 steepest direction
    shape = (1, 4, 4)
    w, c = _linear_case(3, shape)
    model = linear_binary(w, c)
    x = 0.3 + 0.4 * torch.rand(5, *shape, generator=torch.Generator().manual_seed(4))
    y = torch.ones(5, dtype=torch.long)
    eps = 0.3
    torch.manual_seed(0)
    x_adv = PGD(model, ThreatModel("l1", eps), steps=60, step_size=eps / 4)(x, y)
    expected = margin(w, c, x) - eps * w.abs().max()
    assert torch.allclose(margin(w, c, x_adv), expected, atol=1e-4, rtol=0)


def test_pgd_l1_skips_coordinates_pinned_at_the_box() -> None:
    # the steepest coordinate cannot move (it sits on the box edge the attack pushes towards): use the next one
    shape = (1, 4, 4)
    w, c = _linear_case(4, shape)
    model = linear_binary(w, c)
    order = w.abs().argsort(descending=True)
    x = torch.full((1, 16), 0.5)
    x[0, order[0]] = 0.0 if w[order[0]] > 0 else 1.0
    x = x.view(1, *shape)
    y = torch.ones(1, dtype=torch.long)
    eps = 0.3
    torch.manual_seed(0)
    x_adv = PGD(model, ThreatModel("l1", eps), steps=60, step_size=eps / 4, random_start=False)(x, y)
    expected = margin(w, c, x) - eps * w[order[1]].abs()
    assert torch.allclose(margin(w, c, x_adv), expected, atol=1e-4, rtol=0)


def test_fgsm_is_exact_on_linear_model() -> None:
    w, c = _linear_case(5)
    model = linear_binary(w, c)
    x = 0.3 + 0.4 * torch.rand(4, *D_SHAPE, generator=torch.Generator().manual_seed(5))
    y = torch.ones(4, dtype=torch.long)
    x_inf = FGSM(model, ThreatModel("linf", 0.1))(x, y)
    assert torch.allclose((x_inf - x).flatten(1), (-0.1 * w.sign()).expand(4, -1), atol=1e-6)
    x_l2 = FGSM(model, ThreatModel("l2", 0.15))(x, y)
    assert torch.allclose((x_l2 - x).flatten(1), (-0.15 * w / w.norm()).expand(4, -1), atol=1e-6)
    assert FGSM(model, ThreatModel("linf", 0.1), random_start=True).step_size == pytest.approx(0.125)


def _direction(w: Tensor, norm: str) -> Tensor:
    """Unit vector in ``norm`` along which the margin grows by ||w||_dual."""
    if norm == "linf":
        return w.sign()
    if norm == "l2":
        return w / w.norm()
    v = torch.zeros_like(w)
    j = int(w.abs().argmax())
    v[j] = w[j].sign()
    return v


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@pytest.mark.parametrize("early_stop", [False, True])
def test_fooled_iff_minimal_distance_below_eps(norm: str, early_stop: bool) -> None:
    shape = (1, 4, 4) if norm == "l1" else D_SHAPE
    w, c = _linear_case(6, shape)
    model = linear_binary(w, c)
    beta = torch.tensor([0.1, 0.5, 0.9, 0.97, 1.03, 1.1, 1.5, 1.9])
    v = _direction(w, norm)
    x = (0.5 + 0.1 * beta[:, None] * v).view(len(beta), *shape)  # minimal distance 0.1 * beta, box inactive
    y = torch.ones(len(beta), dtype=torch.long)
    dual = {"linf": w.abs().sum(), "l2": w.norm(), "l1": w.abs().max()}[norm]
    dist = margin(w, c, x) / dual
    assert torch.allclose(dist, 0.1 * beta, atol=1e-5)
    torch.manual_seed(0)
    attack = PGD(model, ThreatModel(norm, 0.1), steps=50, step_size=0.025, early_stop=early_stop)
    fooled = success(model, attack(x, y), y)
    assert fooled.tolist() == (beta < 1).tolist()


# --------------------------------------------------------------------------------------------- model state


class ModeNet(nn.Module):
    """Conv, BatchNorm and Dropout; records the training flags it sees in forward."""

    def __init__(self, explode_after: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4 * 6 * 6, 3)
        self.explode_after = explode_after
        self.calls = 0
        self.seen_training: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self.explode_after is not None and self.calls > self.explode_after:
            raise RuntimeError("boom")
        self.seen_training.append(any(m.training for m in self.modules()))
        return self.head(self.drop(F.relu(self.bn(self.conv(x)))).flatten(1))


def _set_mixed_state(model: ModeNet) -> tuple[list[bool], list[bool]]:
    model.train()
    model.drop.eval()  # a mixed state must survive exactly, not become all-train or all-eval
    model.conv.weight.requires_grad_(False)
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


@pytest.mark.parametrize("kind", ["fgsm", "pgd"])
def test_mode_and_requires_grad_restored(kind: str) -> None:
    model = ModeNet()
    modes, flags = _set_mixed_state(model)
    running = model.bn.running_mean.clone()
    x, y = torch.rand(4, 1, 6, 6), torch.tensor([0, 1, 2, 0])
    make_attack(kind, model, ThreatModel("linf", 0.1))(x, y)
    assert model.seen_training and not any(model.seen_training), "the model must run in eval mode during the attack"
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert torch.equal(model.bn.running_mean, running), "BatchNorm statistics changed during the attack"


def test_mode_restored_after_exception_in_model() -> None:
    model = ModeNet(explode_after=3)
    modes, flags = _set_mixed_state(model)
    with pytest.raises(RuntimeError, match="boom"):
        PGD(model, ThreatModel("linf", 0.1), steps=5)(torch.rand(2, 1, 6, 6), torch.tensor([0, 1]))
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags


# --------------------------------------------------------------------------------------------- targeted


class NearestCentroid(nn.Module):
    """Logits = -squared distance to class centroids: the target's centroid is always a point of its class."""

    def __init__(self, centroids: Tensor) -> None:
        super().__init__()
        self.centroids = nn.Parameter(centroids)

    def forward(self, x: Tensor) -> Tensor:
        return -10.0 * torch.cdist(x.flatten(1), self.centroids.flatten(1)) ** 2


def test_no_target_means_untargeted() -> None:
    model = tiny_model("conv", (1, 8, 8))
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    attack = PGD(model, ThreatModel("linf", 0.1), steps=4)
    torch.manual_seed(3)
    a = attack(x, y)
    torch.manual_seed(3)
    b = attack(x, y, target=None)
    assert torch.equal(a, b)


def test_target_equal_to_label_raises() -> None:
    model = tiny_model("conv", (1, 8, 8))
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.raises(InputError, match="target"):
        PGD(model, ThreatModel("linf", 0.1), steps=2)(x, y, target=torch.tensor([1, 1]))


@pytest.mark.parametrize("norm,eps", [("linf", 0.5), ("l2", 3.0)])
def test_targeted_pgd_reaches_target(norm: str, eps: float) -> None:
    gen = torch.Generator().manual_seed(0)
    k = 6
    centroids = 0.3 + 0.4 * torch.rand(k, 1, 4, 4, generator=gen)  # pairwise L-inf < 0.4, L2 < 1.6
    model = NearestCentroid(centroids)
    y = torch.arange(k).repeat(2)
    x = (centroids[y] + 0.05 * (2 * torch.rand(len(y), 1, 4, 4, generator=gen) - 1)).clamp(0, 1)
    target = (y + 1 + torch.randint(0, k - 1, y.shape, generator=gen)) % k
    assert bool((model(x).argmax(1) == y).all()) and not bool((target == y).any())
    torch.manual_seed(0)
    x_adv = PGD(model, ThreatModel(norm, eps), steps=50)(x, y, target=target)
    assert bool((model(x_adv).argmax(1) == target).all())


def test_targeted_on_linear_model_matches_analytic_reachability() -> None:
    w, c = _linear_case(7)
    model = linear_binary(w, c)
    beta = torch.tensor([0.5, 0.9, 1.1, 1.5])
    x = (0.5 + 0.1 * beta[:, None] * w.sign()).view(4, *D_SHAPE)
    y = torch.ones(4, dtype=torch.long)
    torch.manual_seed(0)
    x_adv = PGD(model, ThreatModel("linf", 0.1))(x, y, target=torch.zeros(4, dtype=torch.long))
    assert (model(x_adv).argmax(1) == 0).tolist() == [True, True, False, False]


# --------------------------------------------------------------------------------------------- bad input


class TupleModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.lin(x.flatten(1))
        return z, z


class NoParams(nn.Module):
    """Parameter-free classifier: logits are fixed linear functions of the pixel means of image quadrants."""

    def forward(self, x: Tensor) -> Tensor:
        q = F.adaptive_avg_pool2d(x, 2).flatten(1)  # (N, 4 * C)
        return 20.0 * torch.stack([q[:, 0] - q[:, 3], q[:, 1] - q[:, 2], q[:, 3] - q[:, 0]], dim=1)


@pytest.mark.parametrize(
    "make_x",
    [
        lambda: torch.full((2, 1, 4, 4), float("nan")),
        lambda: torch.rand(2, 1, 4, 4) + 1.0,
        lambda: -torch.rand(2, 1, 4, 4) - 0.1,
        lambda: (torch.rand(2, 1, 4, 4) * 255).to(torch.uint8),
        lambda: torch.rand(2, 16, 1),
    ],
    ids=["nan", "above-1", "below-0", "uint8", "3d"],
)
def test_bad_images_raise(make_x) -> None:
    model = tiny_model("linear", (1, 4, 4), num_classes=3)
    with pytest.raises(InputError):
        PGD(model, ThreatModel("linf", 0.1), steps=2)(make_x(), torch.tensor([0, 1]))


@pytest.mark.parametrize(
    "y",
    [torch.tensor([0, 3]), torch.tensor([-1, 0]), torch.tensor([0.0, 1.0]), torch.tensor([0, 1, 2])],
    ids=["too-large", "negative", "float", "wrong-length"],
)
def test_bad_labels_raise(y: Tensor) -> None:
    model = tiny_model("linear", (1, 4, 4), num_classes=3)
    with pytest.raises(InputError):
        FGSM(model, ThreatModel("linf", 0.1))(torch.rand(2, 1, 4, 4), y)


def test_target_out_of_range_raises() -> None:
    model = tiny_model("linear", (1, 4, 4), num_classes=3)
    with pytest.raises(InputError):
        PGD(model, ThreatModel("linf", 0.1), steps=2)(
            torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), torch.tensor([1, 5])
        )


def test_bad_threat_models_raise() -> None:
    with pytest.raises(InputError, match="eps"):
        ThreatModel("linf", -0.1)
    with pytest.raises(InputError, match="eps"):
        ThreatModel("l2", 0.0)
    with pytest.raises(InputError, match="norm"):
        ThreatModel("l3", 0.1)
    with pytest.raises(InputError, match="ThreatModel"):
        PGD(tiny_model("linear", (1, 4, 4)), 0.1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": 0},
        {"steps": 2.5},
        {"restarts": 0},
        {"step_size": -0.1},
        {"step_size": float("nan")},
        {"eot_samples": 0},
        {"restarts": 2, "random_start": False},
    ],
)
def test_bad_pgd_hyperparameters_raise(kwargs: dict) -> None:
    with pytest.raises(InputError):
        PGD(tiny_model("linear", (1, 4, 4)), ThreatModel("linf", 0.1), **kwargs)


def test_unknown_loss_raises() -> None:
    with pytest.raises(UnknownNameError, match="ce"):
        PGD(tiny_model("linear", (1, 4, 4)), ThreatModel("linf", 0.1), loss="hinge")


def test_model_returning_tuple_raises() -> None:
    with pytest.raises(InputError, match="tuple"):
        PGD(TupleModel(), ThreatModel("linf", 0.1), steps=2)(torch.rand(2, 1, 4, 4), torch.tensor([0, 1]))


@pytest.mark.parametrize("kind", ["fgsm", "fgsm-rs", "pgd", "pgd-es-restarts", "bim"])
def test_parameter_free_model_works(kind: str) -> None:
    model = NoParams()
    x = torch.rand(6, 1, 8, 8)
    y = model(x).argmax(1)
    threat = ThreatModel("linf", 0.3)
    torch.manual_seed(0)
    x_adv = make_attack(kind, model, threat)(x, y)
    assert bool(threat.contains(x_adv, x).all())
    assert int(success(model, x_adv, y).sum()) > 0


# --------------------------------------------------------------------------------------------- registry


def test_registry() -> None:
    assert {"fgsm", "fgsm-rs", "pgd", "bim"} <= set(list_attacks())
    model, threat = tiny_model("linear", (1, 4, 4)), ThreatModel("linf", 0.1)
    rs = create_attack("FGSM_RS", model, threat)
    assert isinstance(rs, FGSM) and rs.random_start and rs.step_size == pytest.approx(0.125)
    pgd = create_attack("pgd", model, threat, steps=7)
    assert isinstance(pgd, PGD) and pgd.steps == 7 and pgd.step_size == pytest.approx(2.5 * 0.1 / 7)
    bim = create_attack("bim", model, threat, steps=3)
    assert isinstance(bim, BIM) and not bim.random_start
    with pytest.raises(UnknownNameError, match="fgsm-rs") as err:
        create_attack("pgdd", model, threat)
    assert "pgd" in str(err.value) and "bim" in str(err.value)
    with pytest.raises(InputError, match="already registered"):
        register_attack("pgd", BIM)
    assert register_attack("pgd", PGD) is PGD  # re-registering the same class is harmless (module reloads)
    assert get_attack_class("fgsm-rs") is FGSMRS and "random_start" not in FGSMRS.__init__.__code__.co_varnames
    with pytest.raises(InputError, match="Attack subclass"):
        register_attack("not-an-attack", dict)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        create_attack("fgsm", model, threat, steps=3)  # FGSM takes no steps: never silently ignored


def test_bim_is_pgd_without_random_start() -> None:
    model = tiny_model("conv", (1, 8, 8))
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    threat = ThreatModel("l2", 0.5)
    a = BIM(model, threat, steps=5)(x, y)
    b = PGD(model, threat, steps=5, random_start=False)(x, y)
    assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_same_seed_same_output(norm: str) -> None:
    model = tiny_model("conv", (2, 8, 8))
    x, y = torch.rand(5, 2, 8, 8), torch.tensor([0, 1, 2, 3, 4])
    attack = PGD(model, ThreatModel(norm, {"linf": 0.05, "l2": 0.3, "l1": 2.0}[norm]), steps=5, restarts=2)
    torch.manual_seed(11)
    a = attack(x, y)
    torch.manual_seed(11)
    b = attack(x, y)
    torch.manual_seed(12)
    c = attack(x, y)
    assert torch.equal(a, b)
    assert not torch.equal(a, c), "a different seed must change the random start"


# --------------------------------------------------------------------------------------------- EoT


class NoisyLogits(nn.Module):
    """A deterministic net plus input-independent Gaussian noise on the logits (a randomised defence)."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 10))
        self.sigma = sigma
        self.noisy = True

    def forward(self, x: Tensor) -> Tensor:
        z = self.net(x)
        return z + self.sigma * torch.randn_like(z) if self.noisy else z


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


def test_eot_gradient_approaches_noise_free_gradient() -> None:
    model = NoisyLogits(sigma=2.0)
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 10, (8,))
    model.noisy = False
    clean, _, _ = input_gradient(model, x, y, get_loss("ce"))
    model.noisy = True
    torch.manual_seed(0)
    single = PGD(model, ThreatModel("linf", 0.1)).gradient(x, y)[0]
    many = PGD(model, ThreatModel("linf", 0.1), eot_samples=500).gradient(x, y)[0]
    cos_many, cos_single = _cosine(many, clean), _cosine(single, clean)
    assert float(cos_many.min()) > 0.99
    assert float(cos_single.mean()) < 0.95
    assert float((1 - cos_single).mean()) > 10 * float((1 - cos_many).mean())


def test_eot_attack_calls_model_per_sample() -> None:
    model = ModeNet()
    model.eval()
    x, y = torch.rand(3, 1, 6, 6), torch.tensor([0, 1, 2])
    PGD(model, ThreatModel("linf", 0.1), steps=4, eot_samples=3)(x, y)
    assert model.calls == 1 + 4 * 3  # one probe for the number of classes, then 3 passes per step


# --------------------------------------------------------------------------------------------- restarts / early stop


class SizeRecorder(nn.Module):
    """Wraps a model and records the batch size of every forward pass."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.sizes: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.sizes.append(x.shape[0])
        return self.net(x)


def _restart_case(seed: int) -> tuple[nn.Module, Tensor, Tensor, ThreatModel]:
    """A small random MLP with varied predictions; labels are its own predictions (all clean points correct)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 5))
    x = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y, ThreatModel("linf", 0.05)


def _single_and_multi(seed: int, restarts: int) -> tuple[Tensor, Tensor, nn.Module, Tensor]:
    """One short PGD run and a multi-restart run whose first restart uses the same seed (random start matters)."""
    model, x, y, threat = _restart_case(seed)
    torch.manual_seed(seed)
    single = PGD(model, threat, steps=1, step_size=threat.eps / 4)(x, y)
    torch.manual_seed(seed)
    multi = PGD(model, threat, steps=1, step_size=threat.eps / 4, restarts=restarts)(x, y)
    return single, multi, model, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_restarts_never_worse_than_first_run(seed: int) -> None:
    single, multi, model, y = _single_and_multi(seed, restarts=4)
    s_single, s_multi = success(model, single, y), success(model, multi, y)
    assert 0 < int(s_single.sum()) < len(y), "the case must leave room for restarts to help"
    assert int(s_multi.sum()) >= int(s_single.sum())
    assert bool(s_multi[s_single].all())
    assert torch.equal(multi[s_single], single[s_single]), "samples fooled by the first run must keep that point"


def test_restarts_help_when_random_start_matters() -> None:
    single, multi, model, y = _single_and_multi(1, restarts=4)
    assert int(success(model, multi, y).sum()) > int(success(model, single, y).sum())


def test_restarts_keep_highest_loss_when_nothing_is_fooled() -> None:
    model, x, y, _ = _restart_case(0)
    threat = ThreatModel("linf", 1e-3)  # too small to fool anything: selection falls back to the loss
    torch.manual_seed(0)
    single = PGD(model, threat, steps=1, step_size=2.5e-4)(x, y)
    torch.manual_seed(0)
    multi = PGD(model, threat, steps=1, step_size=2.5e-4, restarts=4)(x, y)
    assert not bool(success(model, multi, y).any())
    with torch.no_grad():
        loss_single = F.cross_entropy(model(single), y, reduction="none")
        loss_multi = F.cross_entropy(model(multi), y, reduction="none")
    assert bool((loss_multi >= loss_single - 1e-6).all())
    assert bool((loss_multi > loss_single + 1e-6).any())


def test_later_restarts_only_attack_unfooled_samples() -> None:
    net, x, y, threat = _restart_case(1)
    model = SizeRecorder(net)
    torch.manual_seed(0)
    n_fooled = int(success(net, PGD(net, threat, steps=3)(x, y), y).sum())
    assert 0 < n_fooled < len(y)
    torch.manual_seed(0)
    PGD(model, threat, steps=3, restarts=2)(x, y)
    sizes = model.sizes[1:]  # drop the probe for the number of classes
    first = [s for s in sizes if s == len(y)]
    later = sizes[len(first) :]
    assert sizes[: len(first)] == first and len(first) >= 3
    assert later and set(later) == {len(y) - n_fooled}


def test_early_stop_shrinks_batch_and_keeps_successes() -> None:
    net, x, y, threat = _restart_case(1)
    model = SizeRecorder(net)
    torch.manual_seed(0)
    plain = PGD(net, threat, steps=10)(x, y)
    torch.manual_seed(0)
    early = PGD(model, threat, steps=10, early_stop=True)(x, y)
    assert min(model.sizes[1:]) < len(y)
    assert int(success(net, early, y).sum()) >= int(success(net, plain, y).sum())


def test_pgd_beats_or_matches_fgsm_on_tiny_model() -> None:
    model, x, y, threat = _restart_case(2)
    torch.manual_seed(0)
    s_fgsm = int(success(model, FGSM(model, threat)(x, y), y).sum())
    s_pgd = int(success(model, PGD(model, threat, steps=20, early_stop=True)(x, y), y).sum())
    assert s_pgd >= s_fgsm and s_pgd > 0
