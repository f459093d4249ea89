"""MIM, R+FGSM, multi-targeted PGD, CW-PGD, CW-L2 and DeepFool: threat-model invariants, exact update rules, and
analytic minimal perturbations on linear multi-class models. Tiny models only; no data, no weights."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_attacks_core import attack_inputs, linear_binary, margin, success, tiny_model
from torch import Tensor, nn

from robustlab.attacks import BIM, PGD, Attack, create_attack, list_attacks
from robustlab.attacks.cw import CWL2, CWL2Fast
from robustlab.attacks.deepfool import DeepFool
from robustlab.attacks.mim import MIM
from robustlab.attacks.multitarget import CWPGD, MultiTargetPGD
from robustlab.attacks.rfgsm import RFGSM
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel

# --------------------------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: with two intra-op threads on a busy 2-core machine each CW step took ~10x longer (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SHAPE = (3, 4, 4)
K = 5


def linear_multiclass(seed: int, n: int = 48, scale: float = 0.1) -> tuple[nn.Module, Tensor, Tensor, Tensor, Tensor]:
    """A random linear K-class model ``W x + b`` and inputs in [0.4, 0.6] (box never active) with their labels."""
    gen = torch.Generator().manual_seed(seed)
    d = SHAPE[0] * SHAPE[1] * SHAPE[2]
    W = torch.randn(K, d, generator=gen) * scale
    x = 0.4 + 0.2 * torch.rand(n, *SHAPE, generator=gen)
    b = -(W @ x.flatten(1).mean(0)) + scale * torch.randn(K, generator=gen)
    lin = nn.Linear(d, K)
    with torch.no_grad():
        lin.weight.copy_(W)
        lin.bias.copy_(b)
    model = nn.Sequential(nn.Flatten(), lin)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, W, b, x, y


def pairwise_optimum(W: Tensor, b: Tensor, x: Tensor, y: Tensor, dual: float) -> Tensor:  # noqa: N803
    """Per-pair minimal perturbation ``(z_y - z_j) / ||w_y - w_j||_dual``, shape (N, K), inf at j = y."""
    z = x.flatten(1) @ W.T + b
    gap = z.gather(1, y[:, None]) - z
    dist = gap / (W[y][:, None, :] - W[None, :, :]).norm(p=dual, dim=2).clamp_min(1e-12)
    return dist.scatter(1, y[:, None], float("inf"))


def optimum(W: Tensor, b: Tensor, x: Tensor, y: Tensor, norm: str) -> Tensor:  # noqa: N803
    """Closed-form minimal perturbation of a linear model (box inactive): min over j of the pairwise optimum."""
    return pairwise_optimum(W, b, x, y, 1.0 if norm == "linf" else 2.0).min(1).values


def norms(x_adv: Tensor, x: Tensor, norm: str) -> Tensor:
    """Per-sample perturbation norm."""
    return ThreatModel(norm, 1.0).norm_of(x_adv - x)


def outside_band(opt: Tensor, eps: float, band: float = 0.01) -> Tensor:
    """Samples whose optimum is not within ``band`` (relative) of eps: their fate at eps is unambiguous."""
    return (opt < (1 - band) * eps) | (opt > (1 + band) * eps)


def make_extra(kind: str, model: nn.Module, threat: ThreatModel) -> Attack:
    """Attacks under test, with few steps so property tests stay fast."""
    if kind == "mim":
        return MIM(model, threat, steps=3)
    if kind == "rfgsm":
        return RFGSM(model, threat)
    if kind == "mt-pgd":
        return MultiTargetPGD(model, threat, steps=2, n_targets=2)
    if kind == "cw-pgd":
        return CWPGD(model, threat, steps=3)
    if kind == "cw-l2":
        return CWL2(model, threat, steps=5, binary_search_steps=2)
    return DeepFool(model, threat, steps=3)


# --------------------------------------------------------------------------------------------- property tests

CASES = [
    ("mim", "linf"),
    ("mim", "l2"),
    ("mim", "l1"),
    ("rfgsm", "linf"),
    ("mt-pgd", "linf"),
    ("mt-pgd", "l2"),
    ("cw-pgd", "linf"),
    ("cw-l2", "l2"),
    ("deepfool", "l2"),
    ("deepfool", "linf"),
]


@pytest.mark.parametrize("kind,norm", CASES)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_output_in_threat_model(kind: str, norm: str, data: st.DataObject) -> None:
    model, x, y, eps, targeted, seed = data.draw(attack_inputs(norm))
    threat = ThreatModel(norm, eps)
    attack = make_extra(kind, model, threat)
    x_before = x.clone()
    torch.manual_seed(seed)
    target = (y + 1) % 5 if targeted and attack.supports_targeted else None
    x_adv = attack(x, y, target=target)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert torch.equal(x, x_before), "the attack modified its input"
    assert bool(torch.isfinite(x_adv).all())
    assert bool(threat.contains(x_adv, x).all())
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


@pytest.mark.parametrize("kind,norm", [("cw-l2", "l2"), ("deepfool", "l2"), ("deepfool", "linf")])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_minimal_perturbation_in_box_and_adversarial(kind: str, norm: str, data: st.DataObject) -> None:
    model, x, y, _, _, _ = data.draw(attack_inputs(norm))
    attack = make_extra(kind, model, ThreatModel(norm, 1e-3))
    x_adv, ok = attack.minimal_perturbation(x, y)
    assert x_adv.shape == x.shape and ok.shape == y.shape and ok.dtype == torch.bool
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert torch.equal(ok, success(model, x_adv, y)), "the success flag must be the model's verdict on x_adv"
    assert torch.equal(x_adv[~ok], x[~ok]), "failed samples come back unchanged"


# --------------------------------------------------------------------------------------------- minimal perturbations


@pytest.mark.parametrize("kind,norm", [("cw-l2", "l2"), ("deepfool", "l2"), ("deepfool", "linf")])
def test_minimal_perturbation_near_analytic_optimum(kind: str, norm: str) -> None:
    model, W, b, x, y = linear_multiclass(0)
    opt = optimum(W, b, x, y, norm)
    keep = opt > (0.05 if norm == "l2" else 0.005)  # Adam's lr 0.01 cannot resolve much smaller CW perturbations
    model_x, x, y, opt = model, x[keep], y[keep], opt[keep]
    assert len(y) >= 20
    threat = ThreatModel(norm, 0.1)
    attack = CWL2Fast(model_x, threat) if kind == "cw-l2" else DeepFool(model_x, threat)  # 1000 steps: 10x faster
    x_adv, ok = attack.minimal_perturbation(x, y)
    assert bool(ok.all())
    ratio = norms(x_adv, x, norm) / opt
    assert float(ratio.min()) >= 1 - 1e-4, "no attack can beat the closed-form optimum"
    assert float(ratio.max()) <= 1.25


def test_deepfool_linear_model_is_one_step_with_overshoot() -> None:
    model, W, b, x, y = linear_multiclass(1)
    opt = optimum(W, b, x, y, "l2")
    keep = opt > 0.05
    x, y, opt = x[keep], y[keep], opt[keep]
    x_adv, ok = DeepFool(model, ThreatModel("l2", 0.1), overshoot=0.02).minimal_perturbation(x, y)
    assert bool(ok.all())
    assert torch.allclose(norms(x_adv, x, "l2"), 1.02 * opt, rtol=3e-3)


def test_cw_binary_search_beats_fixed_constant() -> None:
    model, W, b, x, y = linear_multiclass(0)
    opt = optimum(W, b, x, y, "l2")
    keep = opt > 0.05
    x, y, opt = x[keep], y[keep], opt[keep]
    threat = ThreatModel("l2", 0.1)
    searched, ok = CWL2(model, threat, steps=300).minimal_perturbation(x, y)
    fixed = {c: CWL2(model, threat, steps=300, binary_search_steps=1, initial_const=c) for c in (1e-3, 100.0)}
    large_c, ok_large = fixed[100.0].minimal_perturbation(x, y)
    _, ok_small = fixed[1e-3].minimal_perturbation(x, y)
    assert bool(ok.all()) and bool(ok_large.all())
    assert int(ok_small.sum()) < len(y) // 2, "a small fixed c fails on most points"
    ratio_search = (norms(searched, x, "l2") / opt).median()
    ratio_large = (norms(large_c, x, "l2") / opt).median()
    assert float(ratio_search) < float(ratio_large) - 0.01


# --------------------------------------------------------------------------------------------- fixed-eps exactness


@pytest.mark.parametrize(
    "kind,norm",
    [("cw-l2", "l2"), ("deepfool", "l2"), ("deepfool", "linf"), ("mt-pgd", "linf"), ("mt-pgd", "l2")],
)
def test_fixed_eps_succeeds_exactly_below_optimum(kind: str, norm: str) -> None:
    model, W, b, x, y = linear_multiclass(2)
    opt = optimum(W, b, x, y, norm)
    eps = float(opt.median())
    keep = outside_band(opt, eps) & (opt > (0.05 if norm == "l2" else 0.005))
    x, y, opt = x[keep], y[keep], opt[keep]
    threat = ThreatModel(norm, eps)
    kwargs = {"steps": 300} if kind == "cw-l2" else {}
    torch.manual_seed(0)
    x_adv = create_attack(kind, model, threat, **kwargs)(x, y)
    assert bool(threat.contains(x_adv, x).all())
    assert success(model, x_adv, y).tolist() == (opt < eps).tolist()


@pytest.mark.parametrize("kind", ["mim", "cw-pgd", "bim"])
def test_fixed_eps_exact_on_binary_linear_model(kind: str) -> None:
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(48, generator=gen) * 0.2
    c = float(-(w * 0.5).sum())
    beta = torch.tensor([0.5, 0.9, 0.98, 1.02, 1.1, 1.5])  # optimum / eps per point
    eps = 0.05
    x = (0.5 + eps * beta[:, None] * w.sign()).view(6, *SHAPE)
    model = linear_binary(w, c)
    y = torch.ones(6, dtype=torch.long)
    attack = (
        MIM(model, ThreatModel("linf", eps)) if kind == "mim" else create_attack(kind, model, ThreatModel("linf", eps))
    )
    torch.manual_seed(0)
    x_adv = attack(x, y)
    assert success(model, x_adv, y).tolist() == [True, True, True, False, False, False]
    assert torch.allclose(margin(w, c, x_adv[:3]), margin(w, c, x[:3]) - eps * w.abs().sum(), atol=1e-4)


# --------------------------------------------------------------------------------------------- multi-targeted PGD


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_mt_pgd_breaks_iff_some_target_reachable(norm: str) -> None:
    model, W, b, x, y = linear_multiclass(4, n=64)
    pair = pairwise_optimum(W, b, x, y, 1.0 if norm == "linf" else 2.0)
    eps = float(pair.min(1).values.median())
    keep = ((pair - eps).abs() > 0.01 * eps).all(1)  # every target is clearly reachable or clearly not
    x, y, pair = x[keep], y[keep], pair[keep]
    reachable = (pair < eps).any(1)
    assert 0 < int(reachable.sum()) < len(y)
    threat = ThreatModel(norm, eps)
    torch.manual_seed(0)
    broken = success(model, MultiTargetPGD(model, threat)(x, y), y)
    assert broken.tolist() == reachable.tolist()


@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_mt_pgd_never_worse_than_untargeted(loss: str) -> None:
    model, W, b, x, y = linear_multiclass(5, n=64)
    threat = ThreatModel("linf", float(optimum(W, b, x, y, "linf").median()))
    torch.manual_seed(0)
    s_pgd = success(model, PGD(model, threat, steps=10, loss=loss)(x, y), y)
    torch.manual_seed(0)
    s_mt = success(model, MultiTargetPGD(model, threat, steps=10, loss=loss)(x, y), y)
    assert int(s_mt.sum()) >= int(s_pgd.sum())
    assert bool(s_mt[s_pgd].all())


def test_mt_pgd_top_k_targets_and_no_targeted_mode() -> None:
    model, W, b, x, y = linear_multiclass(6)
    threat = ThreatModel("linf", 0.05)
    calls: list[Tensor] = []
    attack = MultiTargetPGD(model, threat, steps=2, n_targets=2)
    inner = attack.pgd.perturb
    attack.pgd.perturb = lambda xs, ys, t: calls.append(t) or inner(xs, ys, t)  # type: ignore[method-assign]
    attack(x, y)
    assert 1 <= len(calls) <= 2
    with torch.no_grad():
        z = model(x)
    second = z.scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)[:, 0]
    assert torch.equal(calls[0], second), "the first target is the highest-scoring wrong class"
    with pytest.raises(InputError, match="targeted"):
        attack(x, y, target=(y + 1) % K)
    with pytest.raises(InputError):
        MultiTargetPGD(model, threat, n_targets=0)


# --------------------------------------------------------------------------------------------- MIM / R+FGSM rules


def test_mim_without_decay_is_bim() -> None:
    model = tiny_model("conv", (1, 8, 8))
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    threat = ThreatModel("linf", 0.1)
    a = MIM(model, threat, steps=5, decay=0.0)(x, y)
    b = BIM(model, threat, steps=5, step_size=0.1 / 5)(x, y)
    assert torch.equal(a, b)
    assert not torch.equal(MIM(model, threat, steps=5, decay=1.0)(x, y), b), "momentum must change the path"


def test_mim_matches_reference_update_rule() -> None:
    model = tiny_model("conv", (1, 8, 8))
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    eps, steps, mu = 0.1, 4, 0.7
    x_adv, g = x.clone(), torch.zeros_like(x)
    for _ in range(steps):
        x_req = x_adv.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(x_req), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_req)
        g = mu * g + grad / grad.abs().sum(dim=(1, 2, 3), keepdim=True)
        x_adv = torch.min(torch.max(x_adv + eps / steps * g.sign(), x - eps), x + eps).clamp(0, 1)
    out = MIM(model, ThreatModel("linf", eps), steps=steps, decay=mu)(x, y)
    assert torch.allclose(out, x_adv, atol=1e-6)


def test_rfgsm_first_step_and_update_rule() -> None:
    model = tiny_model("conv", (2, 6, 6))
    x, y = 0.2 + 0.6 * torch.rand(5, 2, 6, 6), torch.tensor([0, 1, 2, 3, 4])
    eps = 0.1
    attack = RFGSM(model, ThreatModel("linf", eps))
    assert attack.alpha == pytest.approx(eps / 2)
    torch.manual_seed(3)
    x1 = attack.random_step(x)
    assert torch.allclose((x1 - x).abs(), torch.full_like(x, eps / 2), atol=1e-6)
    x_req = x1.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x_req), y, reduction="sum"), x_req)
    expected = (x1 + (eps - eps / 2) * grad.sign()).clamp(x - eps, x + eps).clamp(0, 1)
    torch.manual_seed(3)
    assert torch.allclose(attack(x, y), expected, atol=1e-6)


# --------------------------------------------------------------------------------------------- registry, errors


def test_registry_and_bad_arguments() -> None:
    assert {"mim", "rfgsm", "mt-pgd", "cw-pgd", "cw-l2", "deepfool"} <= set(list_attacks())
    model, linf, l2 = tiny_model("linear", (1, 4, 4)), ThreatModel("linf", 0.1), ThreatModel("l2", 0.5)
    assert create_attack("cw-pgd", model, linf).loss_name == "cw"
    assert isinstance(create_attack("mt_pgd", model, linf, n_targets=3), MultiTargetPGD)
    assert create_attack("mim", model, linf, steps=5).step_size == pytest.approx(0.02)
    for make in (
        lambda: RFGSM(model, l2),
        lambda: RFGSM(model, linf, alpha=0.1),
        lambda: CWL2(model, linf),
        lambda: CWL2(model, l2, binary_search_steps=0),
        lambda: DeepFool(model, ThreatModel("l1", 1.0)),
        lambda: MIM(model, linf, decay=-1.0),
    ):
        with pytest.raises(InputError):
            make()
    with pytest.raises(InputError, match="targeted"):
        DeepFool(model, l2)(torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), target=torch.tensor([1, 0]))


def test_cw_targeted_reaches_target() -> None:
    model, W, b, x, y = linear_multiclass(7, n=12)
    target = (y + 1) % K
    x_adv, ok = CWL2(model, ThreatModel("l2", 0.1), steps=200, binary_search_steps=5).minimal_perturbation(x, y, target)
    assert bool(ok.all())
    with torch.no_grad():
        assert torch.equal(model(x_adv).argmax(1), target)


def test_mt_pgd_finds_a_target_that_is_not_the_runner_up() -> None:
    gen = torch.Generator().manual_seed(8)
    d = 48
    signs = torch.where(torch.rand(2, d, generator=gen) < 0.5, -1.0, 1.0)
    weight = torch.stack([torch.zeros(d), 0.02 * signs[0], 0.4 * signs[1]])  # class 2 is far but steep
    x = 0.5 + 0.02 * (2 * torch.rand(4, *SHAPE, generator=gen) - 1)
    centre = torch.full((d,), 0.5)
    bias = torch.tensor([0.0, -0.1, -0.5]) - weight @ centre  # at the centre: gaps 0.1 (class 1) and 0.5 (class 2)
    lin = nn.Linear(d, 3)
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.bias.copy_(bias)
    model = nn.Sequential(nn.Flatten(), lin)
    y = torch.zeros(4, dtype=torch.long)
    pair = pairwise_optimum(weight, bias, x, y, 1.0)
    eps = 0.03
    assert bool((pair[:, 1] > eps).all()) and bool(
        (pair[:, 2] < eps).all()
    )  # only the lower-scoring class is reachable
    threat = ThreatModel("linf", eps)
    torch.manual_seed(0)
    assert not bool(success(model, CWPGD(model, threat)(x, y), y).any())
    assert not bool(success(model, MultiTargetPGD(model, threat, n_targets=1)(x, y), y).any())
    assert bool(success(model, MultiTargetPGD(model, threat)(x, y), y).all())
