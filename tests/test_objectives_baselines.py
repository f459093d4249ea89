"""Baseline objectives: TRADES, MART (both forms), PGD-AT, AWP, WRM.

Loss values are checked against explicit formulas in plain Python on a fixed linear model; AWP against a manual
computation of one SGD step at the perturbed weights; WRM against the stationarity condition of its inner problem.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from robustlab.attacks.config import AttackConfig
from robustlab.core.errors import ConfigError, InputError
from robustlab.core.rng import derive_seed
from robustlab.training.objectives import create_objective
from robustlab.training.objectives.awp import AWPParams, WeightPerturbation
from robustlab.training.objectives.base import ObjectiveConfig
from robustlab.training.objectives.losses import boosted_cross_entropy
from robustlab.training.objectives.trades import GaussianStartThreat
from robustlab.training.trainer import Trainer
from tests._training_helpers import tiny_config

ATTACK = {"name": "pgd", "norm": "linf", "eps": 0.1, "steps": 3}

# ------------------------------------------------------------------------------------------ hand formulas
W = [[0.5, -1.0, 0.25, 2.0], [-0.75, 0.5, 1.5, -0.5], [1.0, 1.0, -2.0, 0.0]]
B = [0.1, -0.2, 0.3]
X = [[0.1, 0.9, 0.4, 0.3], [0.8, 0.2, 0.6, 0.5], [0.3, 0.3, 0.9, 0.1]]
X_ADV = [[0.2, 0.8, 0.5, 0.2], [0.7, 0.3, 0.5, 0.6], [0.4, 0.2, 0.8, 0.2]]
Y = [0, 2, 1]


def hand_probs(w: list[list[float]], x: list[float]) -> list[float]:
    z = [sum(wk[i] * x[i] for i in range(len(x))) + B[k] for k, wk in enumerate(w)]
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def hand_ce(p: list[float], y: int) -> float:
    return -math.log(p[y])


def hand_kl(p: list[float], q: list[float]) -> float:
    return sum(pk * math.log(pk / qk) for pk, qk in zip(p, q))


def hand_bce(p: list[float], y: int) -> float:
    return -math.log(p[y]) - math.log(1 - max(pk for k, pk in enumerate(p) if k != y))


def hand_loss(method: str, w: list[list[float]] = W, **params: float | str) -> float:
    """Batch mean of each method's loss, straight from the papers' formulas."""
    total = 0.0
    for x, xa, y in zip(X, X_ADV, Y):
        p, q = hand_probs(w, x), hand_probs(w, xa)
        if method == "pgd-at":
            total += hand_ce(q, y) + params["natural_weight"] * hand_ce(p, y)
        elif method == "trades":
            total += hand_ce(p, y) + params["beta"] * hand_kl(p, q)
        elif method == "mart":
            bce = hand_bce(p if params["form"] == "thesis" else q, y)
            total += bce + params["beta"] * (1 - p[y]) * hand_kl(p, q)
    return total / len(Y)


def linear_model() -> nn.Linear:
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(W))
        model.bias.copy_(torch.tensor(B))
    return model


def objective(name: str, attack: dict | None = None, **params: object):
    return create_objective(ObjectiveConfig(name=name, attack=AttackConfig(**(attack or ATTACK)), params=params))


CASES = [
    ("pgd-at", {"natural_weight": 0.0}),
    ("pgd-at", {"natural_weight": 1.5}),
    ("trades", {"beta": 2.0}),
    ("mart", {"beta": 3.0, "form": "thesis"}),
    ("mart", {"beta": 3.0, "form": "original"}),
]


@pytest.mark.parametrize(("name", "params"), CASES)
def test_outer_loss_equals_hand_formula_and_its_gradient(name: str, params: dict) -> None:
    model = linear_model()
    obj = objective(name, **params)
    x, xa, y = torch.tensor(X), torch.tensor(X_ADV), torch.tensor(Y)
    loss, _ = obj.outer_loss(model, x, xa, y)
    assert float(loss.detach()) == pytest.approx(hand_loss(name, **params), rel=1e-5)
    # the gradient with respect to every weight entry matches a central difference of the hand formula, so a
    # stop-gradient in the wrong place (e.g. on the clean side of the KL or the MART weight) is caught
    (grad,) = torch.autograd.grad(loss, model.weight)
    h = 1e-5
    for k in range(3):
        for i in range(4):
            wp = copy.deepcopy(W)
            wm = copy.deepcopy(W)
            wp[k][i] += h
            wm[k][i] -= h
            fd = (hand_loss(name, wp, **params) - hand_loss(name, wm, **params)) / (2 * h)
            assert float(grad[k, i]) == pytest.approx(fd, abs=2e-4), (name, k, i)


def test_boosted_cross_entropy_equals_hand_formula() -> None:
    logits = linear_model()(torch.tensor(X))
    got = boosted_cross_entropy(logits, torch.tensor(Y))
    want = [hand_bce(hand_probs(W, x), y) for x, y in zip(X, Y)]
    assert torch.allclose(got.double(), torch.tensor(want, dtype=torch.float64), atol=1e-5)


# ------------------------------------------------------------------------------------------ inner maximisation
def image_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def image_batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(6, 1, 4, 4, generator=gen) * 0.6 + 0.2, torch.tensor([0, 1, 2, 0, 1, 2])


def test_mart_attacks_kl_in_thesis_form_and_ce_in_original_form() -> None:
    model, (x, y) = image_model(), image_batch()
    thesis, original = objective("mart", form="thesis"), objective("mart", form="original")
    assert original.attack_loss_fn(model, x) == "ce"
    kl = thesis.attack_loss_fn(model, x)
    with torch.no_grad():
        xa = (x + 0.05).clamp(0, 1)
        p, q = F.softmax(model(x), 1), F.softmax(model(xa), 1)
        assert torch.allclose(kl(model(xa), y), (p * (p / q).log()).sum(1), atol=1e-6)
    # end to end: the thesis form crafts what TRADES crafts (KL attack), the original what PGD-AT crafts (CE)
    crafted = {}
    for key, obj in [("mart-thesis", thesis), ("trades", objective("trades")),
                     ("mart-original", original), ("pgd-at", objective("pgd-at"))]:
        torch.manual_seed(5)
        crafted[key] = obj.craft(model, x, y)
    assert torch.equal(crafted["mart-thesis"], crafted["trades"])
    assert torch.equal(crafted["mart-original"], crafted["pgd-at"])
    assert not torch.equal(crafted["mart-thesis"], crafted["mart-original"])


def test_mart_and_udr_mart_default_to_the_original_form() -> None:
    """Wang et al.'s MART (boosted CE on x', CE attack) is the default; the thesis's printed Eq. 7 is form 'thesis'
    (it trained a model with 2.8% APGD-T accuracy where the original form reached 53.2%, docs/results.md)."""
    model, (x, _) = image_model(), image_batch()
    for name in ("mart", "udr-mart"):
        obj = objective(name)
        assert obj.params.form == "original" and obj.attack_loss_fn(model, x) == "ce", name
    x_t, xa_t, y_t = torch.tensor(X), torch.tensor(X_ADV), torch.tensor(Y)
    loss, _ = objective("mart", beta=3.0).outer_loss(linear_model(), x_t, xa_t, y_t)
    assert float(loss.detach()) == pytest.approx(hand_loss("mart", beta=3.0, form="original"), rel=1e-5)


def test_udr_pgd_defaults_to_the_thesis_loss_with_the_clean_term() -> None:
    """UDR-PGD's risk is CE(h(x''), y') + beta CE(h(x'), y') (thesis Sec. 3, beta = 1): the clean term is on by
    default; UDR-AWP-AT (the released WRN code, "*" rows) has none."""
    udr = objective("udr-pgd")
    assert udr.params.natural_weight == 1.0 and objective("udr-awp").params.natural_weight == 0.0
    x_t, xa_t, y_t = torch.tensor(X), torch.tensor(X_ADV), torch.tensor(Y)
    loss, metrics = udr.outer_loss(linear_model(), x_t, xa_t, y_t)
    assert float(loss.detach()) == pytest.approx(hand_loss("pgd-at", natural_weight=1.0), rel=1e-5)
    assert "acc" in metrics


def test_trades_normal_start_is_the_official_one() -> None:
    model, (x, y) = image_model(), image_batch()
    attack = {"name": "pgd", "norm": "linf", "eps": 0.1, "steps": 1, "step_size": 0.03}
    obj = objective("trades", attack, start="normal")
    torch.manual_seed(7)
    got = obj.craft(model, x, y)
    torch.manual_seed(7)
    start = x + 0.001 * torch.randn(x.shape)
    xs = start.clone().requires_grad_(True)
    with torch.no_grad():
        p = F.softmax(model(x), 1)
    kl = (p * (p.log() - F.log_softmax(model(xs), 1))).sum()
    (g,) = torch.autograd.grad(kl, xs)
    want = torch.min(torch.max(start + 0.03 * g.sign(), x - 0.1), x + 0.1).clamp(0, 1)
    assert torch.allclose(got, want, atol=1e-6)
    torch.manual_seed(7)
    uniform = objective("trades", attack).craft(model, x, y)  # default: the uniform start of the thesis
    assert (uniform - got).abs().max() > 0.01
    noise = GaussianStartThreat("linf", 0.1).random_start(torch.full((64, 1, 8, 8), 0.5)) - 0.5
    assert 0.0008 < float(noise.std()) < 0.0012


# ------------------------------------------------------------------------------------------ AWP
def bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))


def ce_of(x: torch.Tensor, y: torch.Tensor):
    return lambda m: F.cross_entropy(m(x), y)


def test_awp_perturbs_each_weight_by_gamma_relative_and_restores() -> None:
    model, (x, y) = bn_model(), image_batch()
    model.train()
    before = copy.deepcopy(model.state_dict())
    awp = WeightPerturbation(AWPParams(gamma=0.05))
    metrics = awp.perturb(model, ce_of(x, y), epochs_done=0.0)
    assert model.training and awp.pending
    assert all(p.grad is None for p in model.parameters())  # the proxy step leaves nothing on the model
    for name, value in model.state_dict().items():
        if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(value, before[name]), name  # only the proxy's BN statistics moved
        elif value.dim() > 1:
            rel = float((value - before[name]).norm() / before[name].norm())
            assert rel == pytest.approx(0.05, rel=1e-4), name
        else:
            assert torch.equal(value, before[name]), name  # biases and BN affine parameters are not perturbed
    assert metrics["awp_rel_norm"] == pytest.approx(0.05, rel=1e-4)
    # direction: the layer-normalised gradient of the loss (one proxy SGD step on -loss)
    ref = copy.deepcopy(bn_model())
    ref.load_state_dict(before)
    grads = torch.autograd.grad(F.cross_entropy(ref(x), y), [ref[0].weight, ref[4].weight])
    for w_name, g in zip(["0.weight", "4.weight"], grads):
        want = before[w_name] + 0.05 * before[w_name].norm() * g / g.norm()
        assert torch.allclose(model.state_dict()[w_name], want, atol=1e-6)
    proxy = awp._proxy
    awp.restore(model)
    assert not awp.pending
    for name, value in model.state_dict().items():
        assert torch.allclose(value, before[name], atol=1e-7, rtol=0), name
    awp.restore(model)  # nothing pending: a no-op
    assert torch.allclose(model[0].weight, before["0.weight"], atol=1e-7, rtol=0)
    awp.perturb(model, ce_of(x, y), epochs_done=0.0)
    assert awp._proxy is proxy  # reused, reloaded from the model
    with pytest.raises(InputError, match="restore"):
        awp.perturb(model, ce_of(x, y), epochs_done=0.0)


def test_awp_waits_for_warmup_and_gamma_zero_is_off() -> None:
    model, (x, y) = bn_model(), image_batch()
    before = copy.deepcopy(model.state_dict())
    warm = WeightPerturbation(AWPParams(gamma=0.01, warmup_epochs=2))
    assert warm.perturb(model, ce_of(x, y), epochs_done=1.9) == {}
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and not warm.pending
    assert warm.perturb(model, ce_of(x, y), epochs_done=2.0)
    assert not torch.equal(model[0].weight, before["0.weight"])
    warm.restore(model)
    off = WeightPerturbation(AWPParams(gamma=0.0))
    assert off.perturb(model, ce_of(x, y), epochs_done=5.0) == {} and off._proxy is None


def sgd_config(objective_cfg: dict, **extra: object):
    return tiny_config(epochs=1, max_steps_per_epoch=1, optimizer={"name": "sgd", "lr": 0.5, "momentum": 0.0},
                       schedule={"name": "constant"}, validation={"n": 32}, objective=objective_cfg, **extra)


def test_awp_trainer_step_is_sgd_at_the_perturbed_weights(tmp_path: Path, mnist_available: None) -> None:
    gamma, lr = 0.05, 0.5
    cfg = sgd_config({"name": "pgd-at", "attack": ATTACK, "params": {"awp": {"gamma": gamma}}})
    ref = Trainer(cfg, tmp_path / "ref", show_progress=False)
    x, y = ref._batch(ref._permutation(0), 0, 0)
    torch.manual_seed(derive_seed(cfg.seed, "step", 0, 0))
    ref.objective.set_progress(0.0)
    ref.model.train()
    x_adv = ref.objective.craft(ref.model, x, y)
    w0 = {k: v.clone() for k, v in ref.model.named_parameters()}
    # manual AWP: w_pert = w + gamma ||w|| g/||g|| for matrices, g = grad CE at w; then w_new = w - lr grad at w_pert
    grads = dict(zip(w0, torch.autograd.grad(F.cross_entropy(ref.model(x_adv), y), list(ref.model.parameters()))))
    pert = copy.deepcopy(ref.model)
    with torch.no_grad():
        for name, p in pert.named_parameters():
            if p.dim() > 1:
                p.add_(gamma * w0[name].norm() * grads[name] / grads[name].norm())
    grads_pert = torch.autograd.grad(F.cross_entropy(pert(x_adv), y), list(pert.parameters()))
    want = {name: w0[name] - lr * g for name, g in zip(w0, grads_pert)}
    plain = {name: w0[name] - lr * grads[name] for name in w0}

    Trainer(cfg, tmp_path / "run", show_progress=False).fit()
    got = load_file(str(tmp_path / "run" / "checkpoints" / "last.safetensors"))
    for name in want:
        assert torch.allclose(got[name], want[name], atol=2e-6, rtol=0), name
    assert max(float((want[n] - plain[n]).detach().abs().max()) for n in want) > 1e-4  # AWP changed the step measurably


def test_awp_with_gamma_zero_is_plain_pgd_at(tmp_path: Path, mnist_available: None) -> None:
    base = {"name": "pgd-at", "attack": ATTACK}
    Trainer(sgd_config(base), tmp_path / "pgd", show_progress=False).fit()
    Trainer(sgd_config({**base, "name": "awp-at", "params": {"awp": {"gamma": 0.0}}}), tmp_path / "awp0",
            show_progress=False).fit()
    a = load_file(str(tmp_path / "pgd" / "checkpoints" / "last.safetensors"))
    b = load_file(str(tmp_path / "awp0" / "checkpoints" / "last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    awp_at = objective("awp-at")
    assert awp_at.awp is not None and awp_at.awp.params.gamma == 0.01 and awp_at.params.natural_weight == 0.0


# ------------------------------------------------------------------------------------------ WRM
def wrm_distance(gamma: float, **params: object) -> tuple[float, torch.Tensor, torch.Tensor]:
    model, (x, y) = image_model(), image_batch()
    x_adv = objective("wrm", gamma=gamma, **params).craft(model, x, y)
    return float((x_adv - x).flatten(1).norm(dim=1).mean()), x_adv, x


def test_wrm_huge_gamma_is_clean_training_and_small_gamma_moves_further() -> None:
    model, (x, y) = image_model(), image_batch()
    obj = objective("wrm", gamma=1e5)
    x_adv = obj.craft(model, x, y)
    assert float((x_adv - x).abs().max()) < 1e-4
    loss, _ = obj.outer_loss(model, x, x_adv, y)
    assert float(loss.detach()) == pytest.approx(float(F.cross_entropy(model(x), y).detach()), abs=1e-4)
    dists = [wrm_distance(g)[0] for g in (10.0, 1.0, 0.1)]
    assert 0 < dists[0] < dists[1] < dists[2]


@pytest.mark.parametrize(("cost", "factor"), [("half_squared", 1.0), ("squared", 2.0)])
def test_wrm_reaches_the_stationary_point_of_its_inner_problem(cost: str, factor: float) -> None:
    model, (x, y) = image_model(), image_batch()
    gamma = 5.0
    obj = objective("wrm", gamma=gamma, steps=60, step_size=0.5 / (factor * gamma), cost=cost)
    x_adv = obj.craft(model, x, y)
    assert float(x_adv.min()) > 0 and float(x_adv.max()) < 1  # interior: the gradient must vanish
    xs = x_adv.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xs), y, reduction="sum"), xs)
    assert torch.allclose(g, factor * gamma * (x_adv - x), atol=1e-5)
    # the reference schedule's first step is Sinha et al.'s x + eps_WRM grad CE, eps_WRM = 0.5 / gamma ("squared")
    one = objective("wrm", gamma=gamma, steps=1, cost="squared")
    xs = x.clone().requires_grad_(True)
    (g0,) = torch.autograd.grad(F.cross_entropy(model(xs), y, reduction="sum"), xs)
    assert torch.allclose(one.craft(model, x, y), (x + one.eps_wrm * g0).clamp(0, 1), atol=1e-6)


def sinha_reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gamma: float, steps: int = 15) -> torch.Tensor:
    """Sinha et al.'s released TF ascent (attacks_tf.wrm), written out: eps = 0.5 / gamma, an initial step
    x + eps grad CE, then ``steps`` steps of 1 / sqrt(t + 2) on eps CE(x') - 1/2 ||x' - x||^2 (per-sample CE)."""
    eps = 0.5 / gamma

    def grad_ce(xa: torch.Tensor) -> torch.Tensor:
        xa = xa.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
        return g

    x_adv = x + eps * grad_ce(x)
    for t in range(steps):
        x_adv = x_adv + (eps * grad_ce(x_adv) - (x_adv - x)) / math.sqrt(t + 2)
    return x_adv


def test_wrm_defaults_are_sinha_et_al_s_ascent_and_the_thesis_gamma() -> None:
    """Default WRM = the reference: cost ||x' - x||^2 (so the thesis's gamma means eps_WRM = 0.5 / gamma) and the
    initial step plus 15 steps. Interior inputs and a moderate gamma keep the [0, 1] clip inactive."""
    model, (x, y) = image_model(), image_batch()
    gamma = 2.0
    obj = objective("wrm", gamma=gamma)
    assert obj.params.cost == "squared" and obj.params.steps == 16 and obj.eps_wrm == 0.25
    x_adv = obj.craft(model, x, y)
    ref = sinha_reference(model, x, y, gamma)
    assert float(ref.min()) > 0 and float(ref.max()) < 1 and float((ref - x).abs().max()) > 1e-3
    assert torch.allclose(x_adv, ref, atol=1e-6)
    # the half-squared cost stays an option: the same problem at twice the gamma
    half = objective("wrm", gamma=2 * gamma, cost="half_squared").craft(model, x, y)
    assert torch.allclose(half, ref, atol=1e-6)


# ------------------------------------------------------------------------------------------ trainer + errors
RUNS = {
    "trades": ({"name": "trades", "params": {"beta": 1.0}}, "train_kl"),
    "trades-normal-start": ({"name": "trades", "params": {"start": "normal"}}, "train_kl"),
    "mart-thesis": ({"name": "mart", "params": {"beta": 1.0, "form": "thesis"}}, "train_weighted_kl"),
    "mart-original": ({"name": "mart", "params": {"form": "original", "start": "normal"}}, "train_bce"),
    "pgd-at-natural": ({"name": "pgd-at", "params": {"natural_weight": 1.0}}, "train_acc"),
    "awp-at": ({"name": "awp-at"}, "train_awp_rel_norm"),
    "trades-awp": ({"name": "trades", "params": {"awp": {"gamma": 0.005}}}, "train_awp_rel_norm"),
    "wrm": ({"name": "wrm", "params": {"gamma": 1.0}}, "train_wrm_l2"),
}


@pytest.mark.parametrize("key", sorted(RUNS))
def test_each_objective_trains_one_step(key: str, tmp_path: Path, mnist_available: None) -> None:
    overrides, metric = RUNS[key]
    cfg = tiny_config(epochs=1, max_steps_per_epoch=1, validation={"n": 32}, objective={**overrides, "attack": ATTACK})
    trainer = Trainer(cfg, tmp_path / key, show_progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    summary = trainer.fit()
    row = summary.last_metrics
    assert metric in row and math.isfinite(row[metric]) and math.isfinite(row["train_loss"])
    if "awp" in key:
        assert row[metric] == pytest.approx(0.01 if key == "awp-at" else 0.005, rel=1e-3)
    after = trainer.model.state_dict()
    assert any(not torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("trades", {"beta": -1.0}, "greater than or equal to 0"),
        ("mart", {"beta": -0.5}, "greater than or equal to 0"),
        ("mart", {"form": "paper"}, "'thesis' or 'original'"),
        ("trades", {"start": "gauss"}, "'uniform' or 'normal'"),
        ("pgd-at", {"awp": {"gamma": -0.01}}, "gamma"),
        ("awp-at", {"awp": {"proxy_lr": 0.0}}, "proxy_lr"),
        ("wrm", {"gamma": 0.0}, "greater than 0"),
        ("wrm", {"gamma": -1.0}, "greater than 0"),
        ("wrm", {}, "gamma"),
        ("wrm", {"gamma": 1.0, "step_size": 2.0}, "must be < 2"),
        ("wrm", {"gamma": 1.0, "cost": "l1"}, "'half_squared' or 'squared'"),
        ("trades", {"beta": 1.0, "betta": 2.0}, "betta"),
    ],
)
def test_bad_parameters_raise_config_errors(name: str, params: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        objective(name, **params)
