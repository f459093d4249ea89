"""ASCL: SupCon loss values by hand, selection masks of each strategy, gradient flow, errors, trainer integration."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from robustlab.attacks.config import AttackConfig
from robustlab.core.errors import ConfigError
from robustlab.models import create_model
from robustlab.training.objectives import create_objective
from robustlab.training.objectives.ascl import ASCL, scl_loss, selection_masks, similarity_matrix, supcon_terms
from robustlab.training.objectives.base import ObjectiveConfig
from robustlab.training.trainer import Trainer
from tests._training_helpers import tiny_config

ATTACK = {"name": "pgd", "norm": "linf", "eps": 0.1, "steps": 2}


def make(**params: object) -> ASCL:
    cfg = ObjectiveConfig(name="ascl", attack=AttackConfig(**ATTACK), params=params)
    obj = create_objective(cfg)
    assert isinstance(obj, ASCL)
    return obj


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("mlp", "mnist", hidden=[32])


def batch(n: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3][:n])


def bools(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in r] for r in rows])


# ----------------------------------------------------------------------------------------------- loss values
def test_supcon_matches_hand_computed_value_on_four_views() -> None:
    # N=2 samples (labels 0, 1) -> 4 views [c0, c1, a0, a1]; cosine similarity, tau = 0.5.
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])  # c0 unnormalised on purpose
    # cos: c0.c1=0, c0.a0=.6, c0.a1=.8, c1.a0=.8, c1.a1=.6, a0.a1=.96. Global: each anchor's only positive is its
    # counterpart (sim .6); negatives are the two views of the other sample.
    # clean anchors: -log(e^{1.2} / (e^{1.2} + e^0 + e^{1.6})); adversarial anchors: -log(e^{1.2} / (e^{1.2} + e^{1.6}
    # + e^{1.92})). Eq. 3: L = 1/N * (2 l_c + 2 l_a) = l_c + l_a.
    l_c = math.log(math.exp(1.2) + 1.0 + math.exp(1.6)) - 1.2
    l_a = math.log(math.exp(1.2) + math.exp(1.6) + math.exp(1.92)) - 1.2
    y2, pred = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1, 0, 1])
    pos, neg = selection_masks(y2, pred, "global")
    per_anchor, valid = supcon_terms(similarity_matrix(z, "cosine"), pos, neg, 0.5)
    assert valid.all()
    assert torch.allclose(per_anchor, torch.tensor([l_c, l_c, l_a, l_a]), atol=1e-6)
    assert scl_loss(per_anchor, valid, "pairs").item() == pytest.approx(l_c + l_a, abs=1e-6)
    assert scl_loss(per_anchor, valid, "anchors").item() == pytest.approx((l_c + l_a) / 2, abs=1e-6)


def test_global_loss_equals_eq1_written_as_loops() -> None:
    # 4 samples (labels 0, 0, 1, 2) -> 8 views; Eq. 1/2 literally: sets built over j, the anchor's counterpart apart.
    torch.manual_seed(3)
    n, tau = 4, 0.3
    y = [0, 0, 1, 2]
    z = torch.randn(2 * n, 5)
    s = similarity_matrix(z, "cosine")
    total = 0.0
    for i in range(n):
        for anchor, other in ((i, i + n), (i + n, i)):  # benign anchor (Eq. 1), adversarial anchor (Eq. 2)
            plus = [j for j in range(n) if j != i and y[j] == y[i]]
            minus = [j for j in range(n) if j != i and y[j] != y[i]]
            P = [j for j in plus] + [j + n for j in plus] + [other]
            Q = [j for j in minus] + [j + n for j in minus]
            den = sum(math.exp(s[anchor, k].item() / tau) for k in P + Q)
            total += -sum(math.log(math.exp(s[anchor, p].item() / tau) / den) for p in P) / len(P)
    expected = total / n  # Eq. 3
    y2 = torch.tensor(y + y)
    pos, neg = selection_masks(y2, y2.clone(), "global")
    got = scl_loss(*supcon_terms(s, pos, neg, tau), "pairs")
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_neg_linf_similarity_by_hand() -> None:
    z = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # normalised: (.6, .8) and (1, 0): |diff|_inf = max(.4, .8) = .8
    s = similarity_matrix(z, "neg-linf")
    assert torch.allclose(s, torch.tensor([[0.0, -0.8], [-0.8, 0.0]]), atol=1e-6)
    raw = similarity_matrix(z, "neg-linf", linf_normalize=False)  # |(2, 4)|_inf = 4
    assert torch.allclose(raw, torch.tensor([[0.0, -4.0], [-4.0, 0.0]]))


def test_objective_loss_composes_ce_scl_and_vat_terms() -> None:
    model = tiny_model()
    x, y = batch()
    x_adv = batch(seed=2)[0]  # far from x, so the KL term is not negligible
    obj = make(strategy="leaked-ls", temperature=0.2)
    loss, m = obj.outer_loss(model, x, x_adv, y)
    with torch.no_grad():
        z, za = model.encode(x), model.encode(x_adv)
        o, oa = model.classify(z), model.classify(za)
        pos, neg = selection_masks(torch.cat([y, y]), torch.cat([o, oa]).argmax(1), "leaked-ls")
        scl = scl_loss(*supcon_terms(similarity_matrix(torch.cat([z, za]), "cosine"), pos, neg, 0.2))
        p, q = F.softmax(o, 1), F.softmax(oa, 1)
        kl = (p * (p.log() - q.log())).sum(1).mean()
        expected = F.cross_entropy(o, y) + F.cross_entropy(oa, y) + scl + 2.0 * kl  # defaults: 1, 1, 1, 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert kl.item() > 1e-3
    assert m["vat"] == pytest.approx(kl.item(), rel=1e-4) and m["scl"] == pytest.approx(scl.item(), rel=1e-5)
    # RobustBench variant ("Ours *"): CE(adv) + SCL only; the code's element-wise KL mean divides by the classes.
    rb, _ = make(strategy="leaked-ls", temperature=0.2, variant="robustbench").outer_loss(model, x, x_adv, y)
    assert rb.item() == pytest.approx((F.cross_entropy(oa, y) + scl).item(), rel=1e-5)
    em, m2 = make(strategy="leaked-ls", temperature=0.2, vat_reduction="elementwise-mean").outer_loss(
        model, x, x_adv, y)
    assert m2["vat"] == pytest.approx(kl.item() / 10, rel=1e-4)
    assert em.item() == pytest.approx((expected - 2.0 * kl + 0.2 * kl).item(), rel=1e-5)
    # joint forward = separate forward for a model without BatchNorm
    joint, _ = make(strategy="leaked-ls", temperature=0.2, forward="joint").outer_loss(model, x, x_adv, y)
    assert joint.item() == pytest.approx(loss.item(), rel=1e-6)


# ------------------------------------------------------------------------------------------- selection masks
# 3 samples -> views [c0, c1, c2, a0, a1, a2]; labels 0 0 1 | 0 0 1; predictions 0 1 1 | 1 1 0.
Y6 = torch.tensor([0, 0, 1, 0, 0, 1])
P6 = torch.tensor([0, 1, 1, 1, 1, 0])
POS_SAME_LABEL = bools(["010110", "100110", "000001", "110010", "110100", "001000"])
NEG_GLOBAL = bools(["001001", "001001", "110110", "001001", "001001", "110110"])
NEG_HARD = bools(["000001", "000001", "010110", "000001", "000001", "010110"])  # predicted as the anchor's label
NEG_SOFT = bools(["000001", "001000", "010110", "001000", "001000", "100000"])  # predicted as the anchor's prediction
POS_LEAKED_CODE = bools(["000000", "000110", "000000", "010010", "010100", "000000"])  # same label and prediction
POS_LEAKED_TEXT = bools(["000100", "000110", "000001", "110010", "010100", "001000"])  # ... plus the counterpart


@pytest.mark.parametrize(("strategy", "counterpart", "pos", "neg"), [
    ("global", "always", POS_SAME_LABEL, NEG_GLOBAL),
    ("hard-ls", "always", POS_SAME_LABEL, NEG_HARD),
    ("soft-ls", "always", POS_SAME_LABEL, NEG_SOFT),
    ("leaked-ls", "always", POS_LEAKED_TEXT, NEG_SOFT),
    ("leaked-ls", "same-prediction", POS_LEAKED_CODE, NEG_SOFT),
])
def test_selection_masks_exact(strategy: str, counterpart: str, pos: torch.Tensor, neg: torch.Tensor) -> None:
    got_pos, got_neg = selection_masks(Y6, P6, strategy, leaked_counterpart=counterpart)
    assert torch.equal(got_pos, pos), got_pos.int()
    assert torch.equal(got_neg, neg), got_neg.int()


def test_unselected_samples_get_no_gradient_and_anchors_without_positive_are_excluded() -> None:
    torch.manual_seed(0)
    sim = similarity_matrix(torch.randn(6, 4), "cosine").detach().requires_grad_(True)
    pos, neg = selection_masks(Y6, P6, "leaked-ls", leaked_counterpart="same-prediction")
    per_anchor, valid = supcon_terms(sim, pos, neg, 0.1)
    assert valid.tolist() == [False, True, False, True, True, False]
    loss = scl_loss(per_anchor, valid, "anchors")
    assert loss.item() == pytest.approx(per_anchor[valid].mean().item())
    loss.backward()
    assert torch.all(sim.grad[~(pos | neg)] == 0)  # ignored samples: neither numerator nor denominator
    assert torch.all(sim.grad[~valid] == 0)
    assert torch.all(sim.grad[neg & valid[:, None]] > 0) and torch.all(sim.grad[pos] != 0)
    # l_a is unchanged by adding a constant to anchor a's row, so each row's gradient sums to zero
    assert torch.allclose(sim.grad.sum(dim=1), torch.zeros(6), atol=1e-6)


# -------------------------------------------------------------------------------------------- gradient flow
def test_gradient_flow_through_encoder_views_and_head() -> None:
    model = tiny_model()
    x, y = batch()
    x_adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    scl_only = {"natural_weight": 0.0, "adv_weight": 0.0, "vat_weight": 0.0}
    # SCL alone at the latent (identity head): the encoder and both views get gradient, the logits layer none.
    loss, _ = make(**scl_only).outer_loss(model, x.requires_grad_(True), x_adv, y)
    loss.backward()
    assert model.net.fc.weight.grad is None or torch.all(model.net.fc.weight.grad == 0)
    assert model.net.hidden.fc1.weight.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0 and x_adv.grad.abs().sum() > 0  # no stop-gradient on either view
    # With a head, SCL trains the head; CE alone does not touch it.
    obj = make(projection_head="two-layer", **scl_only)
    head = obj.modules(model, x[:2])
    model.zero_grad()
    obj.outer_loss(model, x.detach(), x_adv.detach(), y)[0].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    head.zero_grad(set_to_none=True)
    make(projection_head="two-layer", scl_weight=0.0).outer_loss(model, x.detach(), x_adv.detach(), y)[0].backward()
    assert all(p.grad is None for p in head.parameters())
    # The adversarial examples come out of the inner maximisation detached.
    assert make().craft(model, x.detach(), y).requires_grad is False


def test_heads_shapes_and_named_latent_layer() -> None:
    model = tiny_model()
    x, _ = batch()
    lin = make(projection_head="linear").modules(model, x[:2])
    assert [tuple(p.shape) for p in lin.parameters()] == [(128, 32)]
    two = make(projection_head="two-layer", projection_dim=16, projection_hidden=20).modules(model, x[:2])
    assert [tuple(p.shape) for p in two.parameters()] == [(20, 32), (16, 20)]
    assert make().modules(model, x[:2]) is None
    # A named layer is sized by a dry run that leaves the model in train mode.
    model.train()
    obj = make(projection_head="linear", latent_layer="net.flatten")
    assert [tuple(p.shape) for p in obj.modules(model, x[:2]).parameters()] == [(128, 784)]
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert obj.modules(model, x[:2]) is obj.head  # built once


# ------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("params", "match"), [
    ({"temperature": 0.0}, "temperature"),
    ({"temperature": -1.0}, "temperature"),
    ({"strategy": "hard"}, "leaked-ls"),
    ({"similarity": "l2"}, "neg-linf"),
    ({"projection_head": "mlp"}, "two-layer"),
    ({"variant": "robustbench", "natural_weight": 1.0}, "robustbench"),
    ({"tau": 0.1}, "tau"),
])
def test_bad_params_are_config_errors(params: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make(**params)


def test_unknown_latent_layer_lists_valid_names() -> None:
    model = tiny_model()
    x, y = batch()
    with pytest.raises(ConfigError, match=r"net\.hidden\.fc1"):
        make(latent_layer="net.hiden").outer_loss(model, x, x, y)


# ------------------------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("strategy", ["global", "hard-ls", "soft-ls", "leaked-ls"])
@pytest.mark.parametrize("counterpart", ["always", "same-prediction"])
def test_single_sample_class_stays_finite(strategy: str, counterpart: str) -> None:
    model = tiny_model()
    x, _ = batch(5)
    y = torch.tensor([0, 0, 1, 1, 7])  # class 7 has one sample
    x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    loss, m = make(strategy=strategy, leaked_counterpart=counterpart, similarity="neg-linf").outer_loss(
        model, x, x_adv, y)
    loss.backward()
    assert torch.isfinite(loss) and math.isfinite(m["scl"])
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_no_anchor_with_a_positive_gives_zero_scl() -> None:
    sim = torch.zeros(2, 2, requires_grad=True)
    pos, neg = selection_masks(torch.tensor([0, 0]), torch.tensor([0, 1]), "leaked-ls",
                               leaked_counterpart="same-prediction")
    loss = scl_loss(*supcon_terms(sim, pos, neg, 0.07))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(sim.grad == 0)


# ---------------------------------------------------------------------------------------------- trainer
def ascl_config(head: str, **overrides: object):
    obj = {"name": "ascl", "attack": ATTACK, "params": {"projection_head": head, "strategy": "leaked-ls"}}
    return tiny_config(objective=obj, **{"max_steps_per_epoch": 2, "epochs": 1, **overrides})


@pytest.mark.usefixtures("mnist_available")
@pytest.mark.parametrize(("head", "shapes"), [("identity", []), ("linear", [(128, 32)]),
                                              ("two-layer", [(200, 32), (128, 200)])])
def test_one_trainer_step_with_each_head(tmp_path: Path, head: str, shapes: list) -> None:
    cfg = ascl_config(head, max_steps_per_epoch=1, validation={"n": 16})
    trainer = Trainer(cfg, tmp_path / head, show_progress=False)
    assert len(trainer.optimizer.param_groups) == (1 if head == "identity" else 2)
    before = {k: v.clone() for k, v in (trainer.objective_module.state_dict().items() if shapes else [])}
    trainer.fit()
    optim = load_file(str(next((tmp_path / head / "checkpoints").glob("optim-*.safetensors"))))
    saved = {k.removeprefix("objective_module."): v for k, v in optim.items() if k.startswith("objective_module.")}
    assert [tuple(v.shape) for v in saved.values()] == shapes
    for k, v in saved.items():
        assert torch.equal(v, trainer.objective_module.state_dict()[k]) and not torch.equal(v, before[k])
    rows = (tmp_path / head / "metrics.jsonl").read_text()
    assert "train_scl" in rows and "train_scl_neg_adv" in rows


@pytest.mark.usefixtures("mnist_available")
def test_resume_restores_head_exactly(tmp_path: Path) -> None:
    cfg = {"validation": {"n": 16}, "schedule": {"name": "constant"}}  # LR independent of the epoch count
    Trainer(ascl_config("linear", epochs=2, **cfg), tmp_path / "ref", show_progress=False).fit()
    Trainer(ascl_config("linear", epochs=1, **cfg), tmp_path / "res", show_progress=False).fit()
    Trainer(ascl_config("linear", epochs=2, **cfg), tmp_path / "res", show_progress=False).fit()

    def files(run: Path) -> tuple[dict, dict]:
        ck = run / "checkpoints"
        return load_file(str(ck / "last.safetensors")), load_file(str(next(ck.glob("optim-*.safetensors"))))

    (w_ref, o_ref), (w_res, o_res) = files(tmp_path / "ref"), files(tmp_path / "res")
    assert w_ref.keys() == w_res.keys() and o_ref.keys() == o_res.keys()
    assert any(k.startswith("objective_module.") for k in o_ref)
    for a, b in ((w_ref, w_res), (o_ref, o_res)):
        for k in a:
            assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------------- the thesis's latent and pass
@pytest.mark.parametrize("name", ["cw-cnn", "adr-cnn"])
def test_default_latent_is_the_input_of_the_last_fc_layer(name: str) -> None:
    """§4.1 / App. A: SupCon at the penultimate layer l_y^{-1}, the input of the last FC layer. On the conv stacks
    that is the last hidden FC activation (200-d on MNIST), not the flattened conv output (``latent: encoder``)."""
    torch.manual_seed(0)
    model = create_model(name, "mnist").eval()
    x, _ = batch(4)
    z, logits = make().latent_and_logits(model, x)
    with torch.no_grad():
        head = model.net.classifier
        hidden = head[:-1](model.net.encode(model.normalize(x)))  # everything before the logits layer
    assert z.shape == (4, 200) and torch.allclose(z, hidden, atol=1e-6)
    assert torch.allclose(logits, head[-1](hidden), atol=1e-6)
    z_enc, _ = make(latent="encoder").latent_and_logits(model, x)
    assert z_enc.shape == (4, model.latent_dim) and model.latent_dim != 200
    lin = make(projection_head="linear").modules(model, x[:2])
    assert [tuple(p.shape) for p in lin.parameters()] == [(128, 200)]  # the head is sized from the same latent


class BNNet(torch.nn.Module):
    """A net with BatchNorm: a joint pass over [x; x_adv] normalises with statistics of both views."""

    penultimate_layer = "act"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.flat, self.fc1 = torch.nn.Flatten(), torch.nn.Linear(784, 16)
        self.bn, self.act, self.fc2 = torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.bn(self.fc1(self.flat(x)))))


def test_default_forward_is_one_joint_pass_over_both_views() -> None:
    """Pseudo-code §5.6 step 2: X = cat[x, x_a]; z = f(X): one pass, so BatchNorm sees both views together; the
    per-view passes of the other objectives stay an option (``forward: separate``)."""
    model = BNNet().train()
    x, y = batch()
    x_adv = batch(seed=2)[0]
    ce_only = {"scl_weight": 0.0, "vat_weight": 0.0}
    default = make(**ce_only).outer_loss(model, x, x_adv, y)[0]
    logits = model(torch.cat([x, x_adv]))
    joint = F.cross_entropy(logits[:6], y) + F.cross_entropy(logits[6:], y)
    assert default.item() == pytest.approx(joint.item(), rel=1e-6)
    separate = make(forward="separate", **ce_only).outer_loss(model, x, x_adv, y)[0]
    by_view = F.cross_entropy(model(x), y) + F.cross_entropy(model(x_adv), y)
    assert separate.item() == pytest.approx(by_view.item(), rel=1e-6)
    assert abs(separate.item() - default.item()) > 1e-3


def test_model_without_a_penultimate_layer_asks_for_one() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 4))
    x, y = batch()
    with pytest.raises(ConfigError, match="penultimate_layer.*set latent_layer"):
        make().outer_loss(model, x, x, y)
