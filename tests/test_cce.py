"""CCE, ADV-EN, ADP: the promote/demote rule table, the stop-gradient indicator, hand values, trainer steps, errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from robustlab.attacks import PGD
from robustlab.attacks.config import AttackConfig
from robustlab.core.errors import ConfigError
from robustlab.core.threat import ThreatModel
from robustlab.models import create_model, member_models
from robustlab.runs.loading import load_trained_model
from robustlab.training.objectives import create_objective
from robustlab.training.objectives.adp import adp_regularizer, ensemble_entropy, log_ensemble_diversity
from robustlab.training.objectives.base import ObjectiveConfig
from robustlab.training.objectives.cce import cce_member_losses
from robustlab.training.trainer import Trainer
from tests._training_helpers import tiny_config

ATTACK = {"name": "pgd", "norm": "linf", "eps": 0.1, "steps": 3}
ENSEMBLE = {"name": "ensemble", "kwargs": {"member": "mlp", "k": 2, "member_kwargs": {"hidden": [16]}}}


def objective(name: str, **params: object):
    return create_objective(ObjectiveConfig(name=name, attack=AttackConfig(**ATTACK), params=params))


def ce_grad(z: list[float], y: int) -> torch.Tensor:
    t = torch.tensor(z, requires_grad=True)
    F.cross_entropy(t[None], torch.tensor([y])).backward()
    return t.grad


def neg_entropy_grad(z: list[float]) -> torch.Tensor:
    t = torch.tensor(z, requires_grad=True)
    p = F.softmax(t, 0)
    (p * p.log()).sum().backward()  # -H
    return t.grad


def entropy_of(z: list[float]) -> float:
    p = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
    return -sum(q * math.log(q) for q in p)


def ce_of(z: list[float], y: int) -> float:
    return -z[y] + math.log(sum(math.exp(u) for u in z))


# Constructed 2-member batch, label 0 for both samples. adv[i][n][b] = logits of member n on x_a^i, sample b.
RIGHT, WRONG = [3.0, 0.0, 0.5], [0.0, 3.0, 0.5]
OWN = [[0.5, 1.0, 0.0], [0.2, 0.1, 0.9]]
CLEAN = [[[2.0, 0.0, 0.0], [1.0, 0.5, 0.0]], [[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]]
ADV = [
    [OWN, [WRONG, RIGHT]],  # x_a^1: member 2 is wrong on sample 0 (S00) and right on sample 1 (S01)
    [[RIGHT, WRONG], OWN],  # x_a^2: member 1 is right on sample 0 (S10) and wrong on sample 1 (S00)
]
Y = torch.tensor([0, 0])


def _losses(**kw: object) -> tuple[torch.Tensor, torch.Tensor]:
    adv = torch.tensor(ADV, requires_grad=True)
    losses, _ = cce_member_losses(torch.tensor(CLEAN), adv, Y, **{"lambda_pm": 1.0, "lambda_dm": 1.0, **kw})
    losses.sum().backward()
    return losses.detach(), adv.grad


def test_rule_table_hard_indicator_promotes_right_members_and_demotes_wrong_ones() -> None:
    losses, grad = _losses(indicator="hard")
    half = 0.5  # batch mean over 2 samples; 1/(N-1) = 1
    # dPO: each member gets cross-entropy on its own adversarial example, whatever happens
    for n in range(2):
        for b in range(2):
            assert torch.allclose(grad[n, n, b], half * ce_grad(OWN[b], 0), atol=1e-6)
    # f^2 on x_a^1: sample 0 in S00 -> DO (entropy ascent), sample 1 in S01 -> cPO (cross-entropy)
    assert torch.allclose(grad[0, 1, 0], half * neg_entropy_grad(WRONG), atol=1e-6)
    assert torch.allclose(grad[0, 1, 1], half * ce_grad(RIGHT, 0), atol=1e-6)
    # f^1 on x_a^2: sample 0 in S10 -> cPO, sample 1 in S00 -> DO
    assert torch.allclose(grad[1, 0, 0], half * ce_grad(RIGHT, 0), atol=1e-6)
    assert torch.allclose(grad[1, 0, 1], half * neg_entropy_grad(WRONG), atol=1e-6)
    # loss value of member 1 by hand (Eq. 1)
    want = (ce_of(CLEAN[0][0], 0) + ce_of(CLEAN[0][1], 0)) / 2 + (ce_of(OWN[0], 0) + ce_of(OWN[1], 0)) / 2
    want += (ce_of(RIGHT, 0) - entropy_of(WRONG)) / 2
    assert losses[0].item() == pytest.approx(want, rel=1e-6)


def _soft_expected(z: list[float]) -> torch.Tensor:
    s = F.softmax(torch.tensor(z), 0)[0].item()
    return 0.5 * (s * ce_grad(z, 0) + (1 - s) * neg_entropy_grad(z))


def test_soft_indicator_is_a_constant_weight_under_stop_gradient() -> None:
    _, grad = _losses()
    assert torch.allclose(grad[0, 1, 0], _soft_expected(WRONG), atol=1e-6)
    assert torch.allclose(grad[1, 0, 0], _soft_expected(RIGHT), atol=1e-6)
    # without the stop-gradient (released code), the indicator's own gradient enters and changes the update
    _, grad_through = _losses(stop_gradient=False)
    assert not torch.allclose(grad_through[0, 1, 0], _soft_expected(WRONG), atol=1e-4)
    assert torch.allclose(grad_through[0, 0], grad[0, 0])  # dPO is unaffected


def test_variants_set_lambdas_and_base_has_no_cross_terms() -> None:
    assert (objective("cce", variant="dm").params.lambda_pm, objective("cce", variant="dm").params.lambda_dm) == (0, 5)
    assert objective("cce").params.lambda_pm == objective("cce").params.lambda_dm == 1.0
    _, grad = _losses(lambda_pm=0.0, lambda_dm=0.0)
    assert grad[0, 1].abs().max() == 0 and grad[1, 0].abs().max() == 0
    # DM: no cPO, strong DO -> right members on the other's example get no gradient, wrong ones 5x entropy ascent
    _, grad = _losses(lambda_pm=0.0, lambda_dm=5.0, indicator="hard")
    assert grad[0, 1, 1].abs().max() == 0
    assert torch.allclose(grad[0, 1, 0], 2.5 * neg_entropy_grad(WRONG), atol=1e-6)


def test_cce_crafts_a_white_box_example_per_member() -> None:
    torch.manual_seed(0)
    model = create_model("ensemble", "mnist", **ENSEMBLE["kwargs"])
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    obj = objective("cce")
    torch.manual_seed(1)
    x_adv = obj.craft(model, x, y)
    assert x_adv.shape == (2, *x.shape)
    torch.manual_seed(1)
    views = member_models(model)
    for n, view in enumerate(views):
        want = PGD(view, ThreatModel("linf", 0.1), steps=3)(x, y)
        assert torch.equal(x_adv[n], want)
    assert not torch.equal(x_adv[0], x_adv[1])
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6


def test_adp_regularizer_by_hand() -> None:
    z = torch.tensor([[[1.0, 0.0, -1.0]], [[0.0, 2.0, 0.5]]])  # K=2, N=1, C=3, label 0
    y = torch.tensor([0])
    p1 = [math.exp(v) / sum(math.exp(u) for u in z[0, 0].tolist()) for v in z[0, 0].tolist()]
    p2 = [math.exp(v) / sum(math.exp(u) for u in z[1, 0].tolist()) for v in z[1, 0].tolist()]
    mean = [(a + b) / 2 for a, b in zip(p1, p2)]
    h = -sum(q * math.log(q) for q in mean)
    u, v = p1[1:], p2[1:]
    cos = sum(a * b for a, b in zip(u, v)) / math.hypot(*u) / math.hypot(*v)
    log_ed = math.log((1 + 1e-6) ** 2 - cos**2)
    assert ensemble_entropy(z).item() == pytest.approx(h, rel=1e-6)
    assert log_ensemble_diversity(z, y).item() == pytest.approx(log_ed, rel=1e-5)
    assert adp_regularizer(z, y, alpha=2.0, beta=0.5).item() == pytest.approx(2 * h + 0.5 * log_ed, abs=2e-5)
    # identical members span no volume: log ED collapses to about log(det_offset)
    same = torch.stack([z[0], z[0]])
    assert log_ensemble_diversity(same, y).item() < -13


def test_adv_en_loss_is_ce_on_the_ensemble_output_or_member_sum() -> None:
    torch.manual_seed(0)
    model = create_model("ensemble", "mnist", **ENSEMBLE["kwargs"])
    x, x_adv, y = torch.rand(3, 1, 28, 28), torch.rand(3, 1, 28, 28), torch.tensor([1, 2, 3])
    loss, _ = objective("adv-en").outer_loss(model, x, x_adv, y)
    assert loss.item() == pytest.approx((F.cross_entropy(model(x_adv), y) + F.cross_entropy(model(x), y)).item())
    loss, _ = objective("adv-en", loss_on="members").outer_loss(model, x, x_adv, y)
    views = member_models(model)
    want = sum(F.cross_entropy(v(x_adv), y) + F.cross_entropy(v(x), y) for v in views)
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)


@pytest.mark.parametrize(
    ("name", "params", "metric"),
    [("cce", {}, "promote_weight"), ("cce", {"variant": "base"}, "adv_acc"), ("adv-en", {}, "adv_acc"),
     ("adp", {}, "log_ed")],
)
def test_each_objective_trains_one_step_on_a_two_member_ensemble(
    name: str, params: dict, metric: str, tmp_path: Path, mnist_available: None
) -> None:
    cfg = tiny_config(epochs=1, max_steps_per_epoch=1, validation={"n": 32}, model=ENSEMBLE,
                      objective={"name": name, "params": params, "attack": ATTACK})
    trainer = Trainer(cfg, tmp_path / name, show_progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    row = trainer.fit().last_metrics
    assert math.isfinite(row[f"train_{metric}"]) and math.isfinite(row["train_loss"])
    after = trainer.model.state_dict()
    for m in range(2):  # every member is trained
        assert any(not torch.equal(after[k], before[k]) for k in before if f"members.{m}." in k)
    loaded, _ = load_trained_model(tmp_path / name, which="last")
    x = torch.rand(2, 1, 28, 28)
    trainer.model.eval()
    assert torch.allclose(loaded(x), trainer.model(x), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("cce", {"variant": "dm", "lambda_dm": 1.0}, "variant 'dm' sets lambda_dm"),
        ("cce", {"variant": "robust"}, "'rm', 'dm' or 'base'"),
        ("cce", {"lambda_pm": -1.0}, "greater than or equal to 0"),
        ("cce", {"indicator": "sigmoid"}, "'soft' or 'hard'"),
        ("cce", {"udr": {}}, "udr soft ball is not supported"),
        ("adv-en", {"loss_on": "member"}, "'ensemble' or 'members'"),
        ("adp", {"det_offset": 0.0}, "greater than 0"),
        ("adp", {"gamma": 1.0}, "gamma"),
    ],
)
def test_bad_parameters(name: str, params: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        objective(name, **params)


@pytest.mark.parametrize("name", ["cce", "adv-en", "adp"])
def test_ensemble_objectives_refuse_a_single_model(name: str) -> None:
    model = create_model("mlp", "mnist", hidden=[8])
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([0, 1])
    with pytest.raises(ConfigError, match="needs an ensemble"):
        objective(name)(model, x, y)


def test_cce_presets_resolve_with_the_paper_budget() -> None:
    from robustlab.presets import list_presets, load_preset

    names = [n for n in list_presets() if n.startswith(("cce-mnist-", "cce-fashion-mnist-", "cce-cifar10-"))]
    assert len(names) == 6 + 6 + 11
    for name in names:
        for scale in ("quick", "paper"):
            p = load_preset(name, scale)
            create_objective(p.train.objective)
            single = name.endswith("-adv")
            assert (p.train.model.name == "cw-cnn") if single else (p.train.model.kwargs["member"] == "cw-cnn")
            assert [a.name for a in p.eval.attacks] == ["pgd", "mim"]
    p = load_preset("cce-cifar10-rm2", "paper")
    t, a = p.train, p.train.objective.attack
    assert (t.epochs, t.batch_size, t.optimizer.name, t.optimizer.lr) == (180, 64, "adam", 0.001)
    assert (a.eps, a.steps, a.step_size) == pytest.approx((8 / 255, 10, 2 / 255))
    assert p.train.objective.params == {"variant": "rm"} and p.train.model.kwargs == {"member": "cw-cnn", "k": 2}
    assert (p.published["pgd"], p.published["autoattack"]) == (44.7, 29.9)
    q = load_preset("cce-mnist-dm", "quick")
    assert (q.train.epochs, q.train.objective.attack.steps, q.eval.autoattack.n) == (5, 10, 500)
    assert create_objective(q.train.objective).params.lambda_dm == 5.0
