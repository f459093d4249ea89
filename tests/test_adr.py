"""ADR objective: each term against hand-computed values, stop-gradients, the PGD-AT / TRADES special cases,
one forward per view, bad parameters, trainer steps; and the latent PCA plot helper."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from robustlab.analysis.latent import collect_latents, pca_2d, plot_latent_pca
from robustlab.core.errors import ConfigError
from robustlab.models import create_model
from robustlab.models.base import ClassifierNet
from robustlab.models.latent import latent_and_logits
from robustlab.training.objectives import create_objective
from robustlab.training.objectives.adr import ADRParams, adr_terms, pair_weights
from robustlab.training.objectives.base import ObjectiveConfig
from tests._training_helpers import tiny_config

ATTACK = {"name": "pgd", "norm": "linf", "eps": 0.1, "steps": 3}

# A constructed batch: 4 samples, 3-d latents, 3 classes, labels with a repeated class.
Z = [[0.0, 1.0, 2.0], [1.0, 1.0, 0.0], [3.0, -1.0, 0.5], [0.0, 0.0, -2.0]]
ZA = [[0.5, 1.0, 1.0], [1.0, 2.5, 0.0], [2.0, -1.0, 0.5], [1.0, 0.0, -4.0]]
LG = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 1.0, 3.0], [1.0, -1.0, 0.0]]
LGA = [[1.0, 0.5, -1.0], [0.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, -1.0, 1.0]]
Y = [0, 0, 1, 2]


# ---------------------------------------------------------------------------------------- hand formulas (plain Python)
def dist(a: list[float], b: list[float], p: str) -> float:
    d = [abs(u - v) for u, v in zip(a, b, strict=True)]
    return {"l1": sum(d), "mean-abs": sum(d) / len(d), "linf": max(d), "l2": math.sqrt(sum(t * t for t in d))}[p]


def softmax(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def ent(row: list[float]) -> float:
    return -sum(q * math.log(q) for q in softmax(row))


def kl(ref: list[float], row: list[float]) -> float:
    p, q = softmax(ref), softmax(row)
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def ce(row: list[float], y: int) -> float:
    return -math.log(softmax(row)[y])


def w(i: int, j: int, alpha: float) -> float:
    return (alpha - (1.0 if Y[i] != Y[j] else 0.0)) / alpha


def mean(v: list[float]) -> float:
    return sum(v) / len(v)


def hand_terms(z, za, lg, lga, p: str, alpha: float, pairs: str, conf_on: str) -> dict[str, float]:
    n = len(Y)
    left = za if pairs == "clean-adv" else z
    return {
        "ce_clean": mean([ce(lg[i], Y[i]) for i in range(n)]),
        "ce_adv": mean([ce(lga[i], Y[i]) for i in range(n)]),
        "lc": mean([dist(z[i], za[i], p) for i in range(n)]),
        "gb": sum(w(i, j, alpha) * dist(left[i], z[j], p) for i in range(n) for j in range(n)) / n**2,
        "conf": mean([ent(lga[i]) + (ent(lg[i]) if conf_on == "both" else 0.0) for i in range(n)]),
        "smt": mean([kl(lg[i], lga[i]) for i in range(n)]),
        "gb_smt": sum(w(i, j, alpha) * kl(lg[j], lga[i]) for i in range(n) for j in range(n)) / n**2,
    }


def t(v: list) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float32)


def objective(params: dict | None = None, name: str = "adr", attack: dict | None = ATTACK):
    return create_objective(ObjectiveConfig(name=name, attack=attack, params=params or {}))


# ---------------------------------------------------------------------------------------- terms
def test_pair_weights_follow_the_thesis_formula() -> None:
    wt = pair_weights(torch.tensor(Y), 0.99)
    assert wt.shape == (4, 4)
    assert wt[0, 1] == 1.0 and wt[2, 2] == 1.0
    assert wt[0, 2].item() == pytest.approx(-1 / 99, rel=1e-6)  # (0.99 - 1) / 0.99 = -0.0101
    single_class = pair_weights(torch.zeros(3, dtype=torch.long), 0.5)  # the code's d/max(d) would give NaN here
    assert torch.equal(single_class, torch.ones(3, 3))


@pytest.mark.parametrize("p", ["l1", "l2", "linf", "mean-abs"])
@pytest.mark.parametrize("pairs", ["clean-clean", "clean-adv"])
@pytest.mark.parametrize("conf_on", ["both", "adv"])
def test_each_term_matches_hand_computed_value(p: str, pairs: str, conf_on: str) -> None:
    prm = ADRParams(p=p, alpha=0.9, global_pairs=pairs, conf_on=conf_on)
    got = adr_terms(t(Z), t(ZA), t(LG), t(LGA), torch.tensor(Y), prm)
    want = hand_terms(Z, ZA, LG, LGA, p, 0.9, pairs, conf_on)
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].item() == pytest.approx(v, rel=1e-5, abs=1e-6), k
    # the negative cross-class weight matters: gb differs from the unweighted mean distance
    plain = mean([dist((ZA if pairs == "clean-adv" else Z)[i], Z[j], p) for i in range(4) for j in range(4)])
    assert abs(got["gb"].item() - plain) > 1e-3


@pytest.mark.parametrize("pairs", ["clean-clean", "clean-adv"])
def test_gb_scale_max_is_the_code_normalisation_and_scale_free(pairs: str) -> None:
    prm = ADRParams(p="l2", alpha=0.9, global_pairs=pairs, gb_scale="max")
    left = ZA if pairs == "clean-adv" else Z
    d_max = max(dist(left[i], Z[j], "l2") for i in range(4) for j in range(4))
    want = hand_terms(Z, ZA, LG, LGA, "l2", 0.9, pairs, "both")["gb"] / d_max
    got = adr_terms(t(Z), t(ZA), t(LG), t(LGA), torch.tensor(Y), prm)["gb"]
    assert got.item() == pytest.approx(want, rel=1e-5)
    # inflating every latent leaves it unchanged (the unscaled term would grow 10x: the divergence it prevents)
    big = adr_terms(10 * t(Z), 10 * t(ZA), t(LG), t(LGA), torch.tensor(Y), prm)["gb"]
    assert big.item() == pytest.approx(got.item(), rel=1e-5)
    same = adr_terms(t([Z[0]] * 4), t([Z[0]] * 4), t(LG), t(LGA), torch.tensor(Y), prm)["gb"]
    assert torch.isfinite(same) and same.item() == 0.0


def test_trades_kl_robust_term_and_total_loss_with_every_weight() -> None:
    """Total loss of outer_loss on a model whose latents/logits are known: L_c + sum of weighted terms."""

    class Fixed(ClassifierNet):  # encode = identity on (N, 3) "images"; classify = fixed linear map
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(3, 3, bias=False)
            with torch.no_grad():
                self.head.weight.copy_(t([[1.0, 0.0, 0.5], [-1.0, 2.0, 0.0], [0.0, 0.5, -1.0]]))

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return x

        def classify(self, z: torch.Tensor) -> torch.Tensor:
            return self.head(z)

    def logits_of(z: list[list[float]]) -> list[list[float]]:
        wm = [[1.0, 0.0, 0.5], [-1.0, 2.0, 0.0], [0.0, 0.5, -1.0]]
        return [[sum(wm[k][d] * row[d] for d in range(3)) for k in range(3)] for row in z]

    lam = {"lambda_lc": 0.5, "lambda_gb": 2.0, "lambda_conf": 0.3, "lambda_smt": 1.5, "lambda_gb_smt": 0.7}
    lg, lga = logits_of(Z), logits_of(ZA)
    h = hand_terms(Z, ZA, lg, lga, "l2", 0.99, "clean-clean", "both")
    weighted = sum(lam["lambda_" + k] * h[k] for k in ("lc", "gb", "conf", "smt", "gb_smt"))

    obj = objective({**lam, "p": "l2"})
    loss, metrics = obj.outer_loss(Fixed(), t(Z), t(ZA), torch.tensor(Y))
    assert loss.item() == pytest.approx(h["ce_adv"] + h["ce_clean"] + weighted, rel=1e-5)
    assert metrics["lc"] == pytest.approx(h["lc"], rel=1e-5)

    beta = 3.0
    obj = objective({**lam, "p": "l2", "base": "trades", "trades_robust_term": "kl", "beta": beta})
    loss, metrics = obj.outer_loss(Fixed(), t(Z), t(ZA), torch.tensor(Y))
    robust_kl = mean([kl(lg[i], lga[i]) for i in range(4)])
    assert metrics["robust_kl"] == pytest.approx(robust_kl, rel=1e-5) and "ce_adv" not in metrics
    assert loss.item() == pytest.approx(h["ce_clean"] + beta * robust_kl + weighted, rel=1e-5)
    want_acc = mean([float(max(range(3), key=lambda k, r=r: r[k]) == y) for r, y in zip(lg, Y, strict=True)])
    assert metrics["acc"] == pytest.approx(want_acc)


def test_lambda_warmup_ramps_every_adr_term_from_zero() -> None:
    """With ``lambda_warmup_epochs`` w, the ADR terms weigh epochs_done / w of their λ (capped at 1); L_c does not."""
    torch.manual_seed(3)
    model = create_model("adr-cnn", "mnist", dropout=0.0)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    lam = {"lambda_lc": 0.5, "lambda_gb": 2.0, "lambda_conf": 0.3, "lambda_smt": 1.5}
    obj = objective({**lam, "lambda_warmup_epochs": 2.0})
    for done, ramp in ((0.0, 0.0), (0.5, 0.25), (1.0, 0.5), (3.0, 1.0)):
        obj.set_progress(done)
        loss, m = obj.outer_loss(model, x, x_adv, y)
        extra = sum(lam["lambda_" + k] * m[k] for k in ("lc", "gb", "conf", "smt"))
        assert m["lambda_ramp"] == pytest.approx(ramp)
        assert loss.item() == pytest.approx(m["ce_clean"] + m["ce_adv"] + ramp * extra, rel=1e-5)
    full, _ = objective(lam).outer_loss(model, x, x_adv, y)
    assert loss.item() == pytest.approx(full.item(), rel=1e-6)


# ---------------------------------------------------------------------------------------- gradients
def _latents(model: nn.Module) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    x = torch.rand(6, 1, 28, 28)
    x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    z, lg = latent_and_logits(model, x)
    za, lga = latent_and_logits(model, x_adv)
    return z, za, lg, lga, torch.tensor([0, 0, 1, 1, 2, 2])


def _grads(out: torch.Tensor, *inputs: torch.Tensor) -> list[torch.Tensor | None]:
    return list(torch.autograd.grad(out, inputs, retain_graph=True, allow_unused=True))


def test_stop_grad_clean_blocks_the_clean_latent_in_local_and_clean_adv_global_terms() -> None:
    model = create_model("mlp", "mnist", hidden=[16])
    z, za, lg, lga, y = _latents(model)
    on = adr_terms(z, za, lg, lga, y, ADRParams(stop_grad_clean=True, global_pairs="clean-adv"))
    g_z, g_za = _grads(on["lc"], z, za)
    assert g_z is None and g_za is not None and g_za.abs().sum() > 0
    g_z, g_za = _grads(on["gb"], z, za)
    assert g_z is None and g_za.abs().sum() > 0

    off = adr_terms(z, za, lg, lga, y, ADRParams(stop_grad_clean=False, global_pairs="clean-adv"))
    g_z, g_za = _grads(off["lc"], z, za)
    assert torch.allclose(g_z, -g_za)  # |z - z_a| is symmetric: both sides are pulled together
    g_z, _ = _grads(off["gb"], z, za)
    assert g_z is not None and g_z.abs().sum() > 0

    # the default is the text's Eq. 1 (no stop-gradient): with the code's detached clean target, L_lc alone blew the
    # latent up from mean |z| 0.3 to 320 over 60 Adam steps (benchmarks/campaigns/adr_mnist_latent_growth.py)
    default = adr_terms(z, za, lg, lga, y, ADRParams())
    assert torch.allclose(_grads(default["lc"], z, za)[0], -g_za)

    # clean-clean pairs keep the gradient on the clean latent even with stop_grad_clean
    cc = adr_terms(z, za, lg, lga, y, ADRParams(stop_grad_clean=True, global_pairs="clean-clean", p="l2"))
    g_z, g_za = _grads(cc["gb"], z, za)
    assert g_z.abs().sum() > 0 and torch.isfinite(g_z).all() and g_za is None  # L2 at i=j: finite gradient


def test_smoothness_detaches_the_clean_prediction_by_default() -> None:
    model = create_model("mlp", "mnist", hidden=[16])
    z, za, lg, lga, y = _latents(model)
    terms = adr_terms(z, za, lg, lga, y, ADRParams())
    assert _grads(terms["smt"], lg, lga)[0] is None
    assert _grads(terms["gb_smt"], lg, lga)[0] is None
    live = adr_terms(z, za, lg, lga, y, ADRParams(smt_stop_grad_clean=False))
    assert _grads(live["smt"], lg, lga)[0].abs().sum() > 0


# ---------------------------------------------------------------------------------------- special cases
ZERO = {"lambda_lc": 0, "lambda_gb": 0, "lambda_conf": 0, "lambda_smt": 0}


def _param_grads(model: nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(model.parameters())))


def test_all_weights_zero_equals_pgd_at_with_natural_weight_one() -> None:
    torch.manual_seed(1)
    model = create_model("adr-cnn", "mnist", dropout=0.0)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    adr, pgd = objective(ZERO), objective({"natural_weight": 1.0}, name="pgd-at")
    x_adv = adr.craft(model, x, y)
    assert not torch.equal(x_adv, x)
    la, ma = adr.outer_loss(model, x, x_adv, y)
    lp, mp = pgd.outer_loss(model, x, x_adv, y)
    assert la.item() == pytest.approx(lp.item(), rel=1e-6)
    assert ma["adv_acc"] == mp["adv_acc"] and ma["acc"] == mp["acc"]
    for ga, gp in zip(_param_grads(model, la), _param_grads(model, lp), strict=True):
        assert torch.allclose(ga, gp, atol=1e-6)
    # whole step, same seed -> same adversary -> same loss
    torch.manual_seed(5)
    full_a = adr(model, x, y)[0]
    torch.manual_seed(5)
    full_p = pgd(model, x, y)[0]
    assert full_a.item() == pytest.approx(full_p.item(), rel=1e-6)
    # and the terms do change the loss once switched on
    assert objective().outer_loss(model, x, x_adv, y)[0].item() > la.item()


def test_trades_base_uses_the_kl_adversary_and_matches_trades_when_weights_are_zero() -> None:
    torch.manual_seed(2)
    model = create_model("mlp", "mnist", hidden=[16])
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    assert objective().attack_loss_fn(model, x) == "ce"
    kl_adr = objective({"base": "trades"})
    assert callable(kl_adr.attack_loss_fn(model, x))
    trades_like = objective({**ZERO, "base": "trades", "trades_robust_term": "kl", "beta": 2.5})
    x_adv = trades_like.craft(model, x, y)
    la, _ = trades_like.outer_loss(model, x, x_adv, y)
    lt, _ = objective({"beta": 2.5}, name="trades").outer_loss(model, x, x_adv, y)
    assert la.item() == pytest.approx(lt.item(), rel=1e-6)
    # the text's form (default): CE on x_adv, whatever adversary made it
    lc, mc = objective({**ZERO, "base": "trades"}).outer_loss(model, x, x_adv, y)
    assert lc.item() == pytest.approx(mc["ce_clean"] + mc["ce_adv"], rel=1e-6)


# ---------------------------------------------------------------------------------------- latent layer, one forward
def test_one_forward_per_view_and_named_latent_layer() -> None:
    torch.manual_seed(3)
    model = create_model("mlp", "mnist", hidden=[16])
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    x_adv = (x + 0.05).clamp(0, 1)
    calls = []
    handle = model.net.hidden.fc1.register_forward_hook(lambda *_: calls.append(1))
    try:
        default = objective().outer_loss(model, x, x_adv, y)
        assert len(calls) == 2
        calls.clear()
        named = objective({"latent_layer": "net.hidden"}).outer_loss(model, x, x_adv, y)  # = the encode output
        assert len(calls) == 2
    finally:
        handle.remove()
    assert named[0].item() == pytest.approx(default[0].item(), rel=1e-6)
    assert named[1] == pytest.approx(default[1], rel=1e-6)
    pre_relu = objective({"latent_layer": "net.hidden.fc1"}).outer_loss(model, x, x_adv, y)
    assert pre_relu[1]["lc"] != pytest.approx(default[1]["lc"], rel=1e-3)
    # a conv feature map as latent (flattened): LC equals the hand mean-abs distance of the tapped maps
    cnn = create_model("adr-cnn", "mnist")
    cnn.eval()
    _, m = objective({"latent_layer": "net.features.pool1"}).outer_loss(cnn, x, x_adv, y)
    with torch.no_grad():
        f = cnn.net.features[:5]  # conv1, relu1, conv2, relu2, pool1
        want = (f(cnn.normalize(x)) - f(cnn.normalize(x_adv))).abs().flatten(1).mean(1).mean()
    assert m["lc"] == pytest.approx(want.item(), rel=1e-5)


# ---------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"alpha": 0.0}, "(0, 1)"),
        ({"alpha": 1.0}, "(0, 1)"),
        ({"alpha": 1.5}, "(0, 1)"),
        ({"lambda_lc": -1}, "lambda_lc"),
        ({"lambda_gb": -0.1}, "lambda_gb"),
        ({"lambda_conf": -1}, "lambda_conf"),
        ({"lambda_smt": -1}, "lambda_smt"),
        ({"p": "l3"}, "'mean-abs'"),
        ({"base": "mart"}, "'trades'"),
        ({"global_pairs": "adv-adv"}, "'clean-adv'"),
        ({"beta": 6.0}, "beta"),
        ({"base": "trades", "beta": 6.0}, "trades_robust_term='kl'"),
        ({"trades_robust_term": "kl"}, "base='trades'"),
        ({"lamda_lc": 1.0}, "lamda_lc"),
    ],
)
def test_bad_parameters_are_config_errors(params: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match="adr") as err:
        objective(params)
    assert needle in str(err.value)


def test_unknown_latent_layer_lists_valid_names_and_a_model_without_split_is_refused() -> None:
    model = create_model("mlp", "mnist", hidden=[16])
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(ConfigError, match="latent_layer") as err:
        objective({"latent_layer": "net.hiden"}).outer_loss(model, x, x, torch.zeros(4, dtype=torch.long))
    assert "'net.hidden.fc1'" in str(err.value) and "Did you mean 'net.hidden'" in str(err.value)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.ReLU(), nn.Linear(8, 10))
    with pytest.raises(ConfigError, match="encode/classify") as err:
        objective().outer_loss(plain, x, x, torch.zeros(4, dtype=torch.long))
    assert "'2'" in str(err.value)
    loss, _ = objective({"latent_layer": "2"}).outer_loss(plain, x, x, torch.zeros(4, dtype=torch.long))
    assert torch.isfinite(loss)
    with pytest.raises(ConfigError, match="attack"):
        objective(attack=None)


# ---------------------------------------------------------------------------------------- trainer
pytestmark_mnist = pytest.mark.usefixtures("mnist_available")


@pytestmark_mnist
@pytest.mark.parametrize(
    ("model", "params"),
    [
        ({"name": "mlp", "kwargs": {"hidden": [32]}}, {}),
        ({"name": "adr-cnn", "kwargs": {}}, {"lambda_conf": 1.0, "global_pairs": "clean-adv", "conf_on": "adv"}),
        ({"name": "mlp", "kwargs": {"hidden": [32]}},
         {"base": "trades", "trades_robust_term": "kl", "beta": 1.0, "latent_layer": "net.hidden.fc1", "p": "l2"}),
    ],
)
def test_trainer_steps_with_adr(tmp_path: Path, model: dict, params: dict) -> None:
    from robustlab.training.trainer import Trainer

    cfg = tiny_config(epochs=1, max_steps_per_epoch=2, model=model, objective={"name": "adr", "params": params},
                      validation={"n": 16})
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    text = (tmp_path / "run" / "metrics.jsonl").read_text()
    row = json.loads(text.splitlines()[-1])
    for key in ("loss", "ce_clean", "lc", "gb", "conf", "smt", "gb_smt", "acc", "adv_acc"):
        assert math.isfinite(row[f"train_{key}"]), (key, row)
    if not params:  # MNIST defaults: L = CE(adv) + CE(clean) + lc + gb + smt (lambda_conf = 0), averaged per epoch
        parts = ("ce_adv", "ce_clean", "lc", "gb", "smt")
        assert row["train_loss"] == pytest.approx(sum(row[f"train_{k}"] for k in parts), rel=1e-5)


# ---------------------------------------------------------------------------------------- latent PCA plot
def test_pca_2d_recovers_the_two_main_directions() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = 5.0 * torch.randn(200, generator=g), 1.0 * torch.randn(200, generator=g)
    a, b = a - a.mean(), b - b.mean()
    b = b - (a @ b) / (a @ a) * a  # sample-uncorrelated, so the principal axes are exactly u and v
    u = torch.tensor([0.6, 0.8, 0.0, 0.0])
    v = torch.tensor([0.0, 0.0, 1.0, 0.0])
    z = a[:, None] * u + b[:, None] * v + torch.tensor([1.0, -2.0, 3.0, 4.0])
    pts = pca_2d(z)
    assert pts.shape == (200, 2)
    assert torch.allclose(pts[:, 0].abs(), a.abs(), atol=1e-4)
    assert torch.allclose(pts[:, 1].abs(), b.abs(), atol=1e-4)
    assert torch.allclose(pca_2d(-z + 7.0).abs(), pts.abs(), atol=1e-4)
    assert pca_2d(torch.ones(5, 1)).abs().max() == 0  # rank 0 and D < 2: zero coordinates, no NaN


def test_plot_latent_pca_writes_a_png(tmp_path: Path) -> None:
    model = create_model("adr-cnn", "mnist")
    x, y = torch.rand(24, 1, 28, 28), torch.arange(24) % 3
    z, logits = collect_latents(model, x, batch_size=10)
    assert z.shape == (24, 512) and logits.shape == (24, 10) and model.training
    z_adv, _ = collect_latents(model, (x + 0.1).clamp(0, 1), "net.flatten")
    out = plot_latent_pca(z, y, tmp_path / "plots" / "latent.png", z_adv=z_adv, title="ADR latent")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_bf16_autocast_keeps_the_terms_in_float32() -> None:
    torch.manual_seed(4)
    model = create_model("adr-cnn", "mnist", dropout=0.0)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    x_adv = (x + 0.05).clamp(0, 1)
    obj = objective({"lambda_conf": 1.0, "lambda_gb_smt": 1.0, "p": "l2"})
    full, _ = obj.outer_loss(model, x, x_adv, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = obj.outer_loss(model, x, x_adv, y)
    assert low.dtype == torch.float32 and low.item() == pytest.approx(full.item(), rel=1e-2)
