"""CARSO: block shapes for 28x28x1 and 32x32x3, aggregation rules against hand values (PeeL finite at logit scale
50), beta schedule, batch mixing, frozen classifier, end-to-end gradients, Lookahead, LR schedule, a Trainer step on
a tiny trained classifier, the evaluation path (AutoAttack rand, PGD-EoT, surrogate, repeated passes), bad input."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch

from robustlab.attacks.autoattack import AutoAttack
from robustlab.attacks.config import AttackConfig
from robustlab.core.config import parse_config
from robustlab.core.errors import ConfigError, InputError, UnknownNameError
from robustlab.core.threat import ThreatModel
from robustlab.models import create_model
from robustlab.purification.carso import RepresentationExtractor, aggregate, carso_of
from robustlab.purification.carso.aggregation import peel
from robustlab.purification.carso.blocks import Decoder, InputPreEncoder, LayerCompressor
from robustlab.purification.carso.evaluation import AggregationView
from robustlab.purification.carso.model import CARSO
from robustlab.purification.common import repeated_accuracy
from robustlab.training.config import ScheduleConfig
from robustlab.training.lookahead import Lookahead
from robustlab.training.objectives.carso import beta_schedule, mix_batch, split_sizes, vae_loss
from robustlab.training.schedules import lr_factor
from robustlab.training.trainer import Trainer
from tests._training_helpers import tiny_config

MNIST_LAYERS = "net.features.conv2,net.features.conv4,net.classifier.fc2"


def _carso(dataset: str = "mnist", model: str = "cw-cnn", layers: str = MNIST_LAYERS, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("carso", dataset, classifier_model=model, classifier_dataset=dataset, layers=layers,
                        latent_dim=8, cond_dim=16, joint_dim=12, **kw)


# ------------------------------------------------------------------------------------------------- shapes
def test_block_shapes_mnist_and_cifar() -> None:
    assert LayerCompressor((160, 32, 32)).out_features == 20 * 26 * 26  # the released code's numbers (spec §1.5)
    assert LayerCompressor((320, 16, 16)).out_features == 40 * 10 * 10
    assert LayerCompressor((640, 8, 8)).out_features == 80 * 2 * 2
    assert LayerCompressor((64, 4, 4)).out_features == 8 * 2 * 2  # small maps: padding kicks in, never vanish
    assert LayerCompressor((84,)).out_features == 84
    assert InputPreEncoder(3, (32, 32)).out_features == 768 and InputPreEncoder(1, (28, 28)).out_features == 588
    for c, hw in ((1, (28, 28)), (3, (32, 32)), (3, (64, 64))):
        assert Decoder(20, c, hw)(torch.randn(2, 20)).shape == (2, c, *hw)
    for dataset, model, layers in (("mnist", "cw-cnn", MNIST_LAYERS),
                                   ("cifar10", "resnet20", "net.layer1.0.conv1,net.fc")):
        m = _carso(dataset, model, layers, ensemble_size=3)
        net, wrapper = carso_of(m)
        x = torch.rand(4, *net.image_shape)
        xn = wrapper.normalize(x)
        rec, mu, logvar = net.reconstruct(xn)
        assert rec.shape == x.shape and mu.shape == logvar.shape == (4, 8)
        assert float(rec.detach().min()) >= 0 and float(rec.detach().max()) <= 1
        assert net.condition(xn).shape == (4, 16)
        assert net.sample_reconstructions(xn).shape == (4, 3, *net.image_shape)
        assert net.sample_logits(xn).shape == (4, 3, 10)
        m.eval()
        assert m(x).shape == (4, 10)


def test_representation_extractor_graph_and_unknown_layer() -> None:
    clf = create_model("mlp", "mnist", hidden=[32])
    ext = RepresentationExtractor(clf, ["net.hidden.fc1"])
    x = torch.rand(3, 1, 28, 28, requires_grad=True)
    (a,), out = ext.extract(x, keep_graph=True)
    assert a.shape == (3, 32) and a.requires_grad and out.shape == (3, 10)
    (b,), _ = ext.extract(x, keep_graph=False)
    assert not b.requires_grad and torch.allclose(a, b)
    with pytest.raises(UnknownNameError, match="net.hidden.fc1"):  # the valid names are listed
        RepresentationExtractor(clf, ["net.hidden.fc9"])
    with pytest.raises(UnknownNameError, match="net.features.conv2"):
        _carso(layers="net.features.conv9")


# --------------------------------------------------------------------------------------------- aggregation
def test_aggregation_rules_against_hand_values() -> None:
    lg = torch.tensor([[[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]]])  # (B=1, E=2, C=3)
    s = torch.tensor([math.e + 1, 1 + math.e**2, math.exp(-1) + 1])
    p = torch.softmax(s.double(), 0)
    assert torch.allclose(aggregate(lg, "peel")[0].double(), torch.log(p / (1 - p)), atol=1e-5)
    assert torch.allclose(aggregate(lg, "logit")[0], torch.tensor([0.5, 1.0, -0.5]))
    r = torch.sigmoid(lg).mean(1)[0]
    assert torch.allclose(aggregate(lg, "prob")[0], torch.log(r / (1 - r)), atol=1e-6)
    mean_softmax = torch.softmax(lg, dim=-1).mean(1)[0]  # v1's sum of softmaxes, up to the factor E
    assert torch.allclose(torch.softmax(aggregate(lg, "softmax")[0], 0), mean_softmax, atol=1e-6)
    assert torch.allclose(aggregate(lg, "softmax")[0].exp(), mean_softmax, atol=1e-6)
    assert aggregate(lg, "count")[0].tolist() == [1.0, 1.0, 0.0]
    assert aggregate(lg, "count-floor")[0].tolist() == [1.0 + 0.0, 0.0 + 1.0, -1.0 + 0.0]
    with pytest.raises(UnknownNameError, match="peel"):
        aggregate(lg, "vote")


def test_peel_finite_for_logits_of_scale_50() -> None:
    torch.manual_seed(0)
    logits = (50 * torch.randn(16, 8, 10)).requires_grad_(True)
    out = peel(logits)
    naive_s = torch.exp(logits.detach()).sum(1)
    naive_p = torch.softmax(naive_s, -1)
    assert not torch.isfinite(torch.log(naive_p / (1 - naive_p))).all()  # the naive formula saturates
    assert torch.isfinite(out).all()
    assert torch.equal(out.argmax(1), torch.logsumexp(logits.detach().double(), 1).argmax(1))  # argmax_c S_c
    torch.nn.functional.cross_entropy(out, torch.zeros(16, dtype=torch.long)).backward()
    assert torch.isfinite(logits.grad).all()


# ------------------------------------------------------------------------------------------------ training
def test_beta_schedule_values() -> None:
    vals = [beta_schedule(e, lag=25, ramp=9) for e in range(40)]  # E=200 in the code: lag 25, ramp 9
    assert vals[:26] == [0.0] * 26 and vals[26] == pytest.approx(1 / 9) and vals[33] == pytest.approx(8 / 9)
    assert vals[34:] == [1.0] * 6
    assert beta_schedule(25.99, lag=25, ramp=9) == 0.0  # stepped per epoch
    assert beta_schedule(25.5, lag=25, ramp=9, per_epoch=False) == pytest.approx(0.5 / 9)
    assert beta_schedule(3, lag=2, ramp=0, beta_max=0.5) == 0.5


def test_batch_mixing_fractions() -> None:
    assert split_sizes(5120, 0.5, 4) == (2560, 640)  # CIFAR-10: 12.5 % per attack
    assert split_sizes(1536, 0.4, 4) == (1536 - 4 * 153, 153)
    assert split_sizes(100, 0.01, 4) == (100, 0)  # the Tiny-ImageNet pitfall: no adversarial sample at all
    x, y = torch.zeros(10, 1, 2, 2), torch.zeros(10, dtype=torch.long)
    attacks = [lambda a, b, k=k: a + k + 1 for k in range(3)]
    mixed, source = mix_batch(x, y, attacks, 0.6)  # atom = 2: 4 clean, then 2 per attack in order
    assert source.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 3, 3]
    assert mixed[:, 0, 0, 0].tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 3, 3]


def test_vae_loss_is_sum_bce_plus_beta_kl() -> None:
    rec, tgt = torch.full((2, 1, 2, 2), 0.5), torch.ones(2, 1, 2, 2)
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    loss, bce, kl = vae_loss(rec, tgt, mu, logvar, beta=0.5)
    assert bce.item() == pytest.approx(8 * math.log(2))
    assert kl.item() == pytest.approx(0.5 * (1 + (2 - math.log(2) - 1)))
    assert loss.item() == pytest.approx(bce.item() + 0.5 * kl.item())


def test_vae_loss_from_logits_equals_probabilities_and_keeps_gradient() -> None:
    z = torch.tensor([[[[-3.0, 0.5], [2.0, -200.0]]]], requires_grad=True)  # the last pixel is saturated
    tgt = torch.tensor([[[[0.0, 1.0], [0.3, 1.0]]]])
    mu, logvar = torch.zeros(1, 2), torch.zeros(1, 2)
    _, bce_logits, _ = vae_loss(z, tgt, mu, logvar, beta=1.0, logits=True)
    _, bce_prob, _ = vae_loss(torch.sigmoid(z[..., :1, :]), tgt[..., :1, :], mu, logvar, beta=1.0)
    _, bce_first_row, _ = vae_loss(z[..., :1, :], tgt[..., :1, :], mu, logvar, beta=1.0, logits=True)
    assert bce_first_row.item() == pytest.approx(bce_prob.item(), rel=1e-6)
    second_row = (math.log1p(math.exp(2.0)) - 0.3 * 2.0) + 200.0  # softplus(l) - t l per pixel; exact at l = -200
    assert bce_logits.item() == pytest.approx(bce_first_row.item() + second_row, rel=1e-6)
    bce_logits.backward()
    assert z.grad is not None and z.grad[0, 0, 1, 1].item() == pytest.approx(-1.0)  # sigmoid - target, not 0


def test_radam_training_from_the_first_step_stays_finite() -> None:
    """Regression: the summed loss under RAdam's first (SGD-like) steps sent the decoder to NaN; the default mean
    reduction on the logits BCE trains from step one."""
    from robustlab.training.objectives.base import ObjectiveConfig
    from robustlab.training.objectives.carso import CARSOObjective

    m = _carso()
    objective = CARSOObjective(ObjectiveConfig(name="carso", attack=AttackConfig(name="fgsm", norm="linf", eps=0.3),
                                               params={"adv_fraction": 0.0}))
    opt = torch.optim.RAdam([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    x, y = torch.rand(32, 1, 28, 28).round(), torch.randint(0, 10, (32,))
    m.train()
    first = None
    for _ in range(12):
        loss, metrics = objective.loss(m, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert math.isfinite(metrics["bce_per_image"])
        first = metrics["bce_per_image"] if first is None else first
    assert metrics["bce_per_image"] < first


def test_lookahead_matches_hand_update_and_resumes() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = Lookahead(torch.optim.SGD([w], lr=0.1), k=2, alpha=0.5)
    for _ in range(2):
        opt.zero_grad()
        (w * 1.0).sum().backward()  # gradient 1: fast 1 -> 0.9 -> 0.8; slow 1 + 0.5 (0.8 - 1) = 0.9
        opt.step()
    assert w.item() == pytest.approx(0.9)
    sd = opt.state_dict()
    w2 = torch.nn.Parameter(w.detach().clone())
    opt2 = Lookahead(torch.optim.SGD([w2], lr=0.1), k=2, alpha=0.5)
    opt2.load_state_dict(sd)
    for o, p in ((opt, w), (opt2, w2)):
        o.zero_grad()
        p.sum().backward()
        o.step()
        o.zero_grad()
        p.sum().backward()
        o.step()
    assert w.item() == pytest.approx(w2.item()) == pytest.approx(0.9 + 0.5 * (0.7 - 0.9))


def test_warmup_flat_anneal_schedule() -> None:
    cfg = ScheduleConfig(name="warmup-flat-anneal", warmup_epochs=25, flat_epochs=25, final_lr_fraction=0.0)
    assert lr_factor(cfg, 12.5, 200) == pytest.approx(0.5, abs=1e-6)
    assert lr_factor(cfg, 30, 200) == 1.0 and lr_factor(cfg, 125, 200) == pytest.approx(0.5)
    assert lr_factor(cfg, 200, 200) == pytest.approx(0.0)


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("clf") / "clf"
    cfg = tiny_config(epochs=1, max_steps_per_epoch=3, validation={"n": 32, "attack": None})
    Trainer(cfg, run, show_progress=False).fit()
    return run


def _carso_config(classifier: Path) -> object:
    return tiny_config(
        epochs=1, max_steps_per_epoch=1, batch_size=16,
        model={"name": "carso", "kwargs": {"classifier": str(classifier), "layers": ["net.hidden.fc1", "net.fc"],
                                           "latent_dim": 8, "cond_dim": 16, "joint_dim": 12, "ensemble_size": 2}},
        optimizer={"name": "radam", "lr": 0.001, "lookahead": {"k": 6, "alpha": 0.8}},
        schedule={"name": "warmup-flat-anneal", "warmup_epochs": 0.5, "flat_epochs": 0.2},
        objective={"name": "carso", "attack": {"name": "pgd", "norm": "linf", "eps": 0.3, "steps": 2},
                   "params": {"adv_fraction": 0.5}},
        validation={"n": 16, "attack": None},
    )


def test_trainer_step_keeps_classifier_frozen(classifier_run: Path, tmp_path: Path) -> None:
    trainer = Trainer(_carso_config(classifier_run), tmp_path / "carso", show_progress=False)
    net, _ = carso_of(trainer.model)
    before = {k: v.clone() for k, v in net.classifier.state_dict().items()}
    purifier = {k: v.clone() for k, v in net.decoder.state_dict().items()}
    summary = trainer.fit()
    assert all(torch.equal(before[k], v) for k, v in net.classifier.state_dict().items())
    assert any(not torch.equal(purifier[k], v) for k, v in net.decoder.state_dict().items())
    assert not net.classifier.training and not any(p.requires_grad for p in net.classifier.parameters())
    assert math.isfinite(summary.last_metrics["train_loss"]) and summary.last_metrics["train_adv_fraction"] == 0.5
    from robustlab.runs.loading import load_trained_model

    loaded, meta = load_trained_model(tmp_path / "carso", which="last")  # checkpoint round trip
    assert meta["model"] == "carso" and carso_of(loaded)[0].ensemble_size == 2


def test_self_attacks_put_end_to_end_examples_in_the_configured_share(classifier_run: Path, tmp_path: Path) -> None:
    """``self_attacks`` (beyond the paper): attacks crafted on CARSO itself, through its smooth view, each taking one
    chunk of the adversarial share after the 4 classifier attacks."""
    from robustlab.purification.carso.evaluation import AggregationView

    cfg = _carso_config(classifier_run)
    pgd = {"name": "pgd", "norm": "linf", "eps": 0.3, "steps": 1}
    cfg.objective.params.update(self_attacks=[pgd], adv_fraction=0.625)  # atom = floor(16 * 0.625 / 5) = 2
    trainer = Trainer(cfg, tmp_path / "carso-self", show_progress=False)
    attacks = trainer.objective.batch_attacks(trainer.model)
    net, _ = carso_of(trainer.model)
    assert len(attacks) == 5 and all(a.model is net.classifier for a in attacks[:4])
    assert isinstance(attacks[4].model, AggregationView) and attacks[4].model.model is trainer.model
    assert attacks[4].model.aggregation == "logit"
    summary = trainer.fit()
    metrics = summary.last_metrics
    assert metrics["train_self_fraction"] == 2 / 16 and metrics["train_adv_fraction"] == 10 / 16
    cfg.objective.params.update(self_aggregation="nope")
    with pytest.raises(UnknownNameError, match="nope"):
        Trainer(cfg, tmp_path / "bad", show_progress=False)


def test_checkpoint_loads_after_the_classifier_run_moved(classifier_run: Path, tmp_path: Path) -> None:
    """The CARSO checkpoint holds the classifier's weights: with the architecture named, it loads without the
    classifier's run folder and computes the same outputs."""
    import shutil

    from robustlab.runs.loading import load_trained_model

    moved = tmp_path / "clf-copy"
    shutil.copytree(classifier_run, moved)
    cfg = _carso_config(moved)
    cfg.model.kwargs.update(classifier_model="mlp", classifier_dataset="mnist",
                            classifier_kwargs=dict(cfg.model.kwargs.get("classifier_kwargs") or {"hidden": [32]}))
    Trainer(cfg, tmp_path / "carso", show_progress=False).fit()
    model, _ = load_trained_model(tmp_path / "carso", which="last")
    carso_of(model)[0].sampling = "mean"
    x = torch.rand(3, 1, 28, 28)
    want = model(x)
    shutil.rmtree(moved)
    with pytest.warns(UserWarning, match="not found"):
        again, _ = load_trained_model(tmp_path / "carso", which="last")
    carso_of(again)[0].sampling = "mean"
    assert torch.allclose(again(x), want, atol=1e-6)


def test_training_refuses_untrained_or_foreign_classifier(classifier_run: Path, tmp_path: Path) -> None:
    cfg = _carso_config(classifier_run)
    cfg.model.kwargs = {"classifier_model": "mlp", "classifier_dataset": "mnist", "layers": "net.fc"}
    with pytest.raises(ConfigError, match="trained classifier"):
        Trainer(cfg, tmp_path / "a", show_progress=False)
    with pytest.raises(ConfigError, match="mnist"):  # a classifier of another dataset (wrong size)
        create_model("carso", "cifar10", classifier=str(classifier_run), layers="net.fc")


# ---------------------------------------------------------------------------------------------- inference
def test_forward_differentiable_end_to_end_and_vectorised() -> None:
    m = _carso(model="mlp", layers="net.hidden.fc1,net.fc", ensemble_size=4).eval()
    x = torch.rand(3, 1, 28, 28, requires_grad=True)
    torch.nn.functional.cross_entropy(m(x), torch.tensor([0, 1, 2])).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    net, _ = carso_of(m)
    calls = []
    hook = net.classifier.register_forward_hook(lambda mod, i, o: calls.append(i[0].shape[0]))
    with torch.no_grad():
        m(x)
    hook.remove()
    assert calls == [3 * 4]  # one batched pass over all B*E reconstructions (the extraction calls the bare net)
    net.differentiable = False
    x.grad = None
    m(x).sum().backward() if m(x).requires_grad else None
    assert x.grad is None or float(x.grad.abs().sum()) == 0


def test_frozen_classifier_warns_and_stays_in_eval() -> None:
    clf = create_model("mlp", "mnist", hidden=[16])  # train mode, gradients on
    with pytest.warns(UserWarning, match="frozen"):
        net = CARSO(clf, ["net.hidden.fc1"], image_shape=(1, 28, 28), latent_dim=4, cond_dim=8, joint_dim=8)
    net.train()
    assert net.decoder.training and not clf.training and not any(p.requires_grad for p in clf.parameters())


def test_bad_inputs() -> None:
    m = _carso()
    net, _ = carso_of(m)
    with pytest.raises(InputError, match="ensemble_size"):
        net.ensemble_size = 0
    with pytest.raises(InputError, match="1x28x28"):  # images of a size the decoder was not built for
        m.eval()(torch.rand(2, 1, 32, 32))
    with pytest.raises(InputError, match="28x28, 32x32"):
        Decoder(8, 3, (48, 48))
    with pytest.raises(ConfigError, match="classifier"):
        create_model("carso", "mnist", layers="net.fc")


def test_protocol_attacks_can_craft_on_a_surrogate_aggregation() -> None:
    """``surrogate: logit`` in an evaluation attack: crafted on the logit view, judged on the (peel) model; the view
    is what the gradient sees (peel's saturates), the label says so, and elsewhere the setting is refused."""
    from robustlab.attacks.config import build_attack
    from robustlab.data import ImageData, dataset_info
    from robustlab.evaluation.config import EvalConfig
    from robustlab.evaluation.protocol import run_protocol

    m = _carso(model="mlp", layers="net.hidden.fc1,net.fc", ensemble_size=2).eval()
    carso_of(m)[0].sampling = "mean"  # deterministic, so the judged accuracy is reproducible here
    g = torch.Generator().manual_seed(0)
    data = ImageData((torch.rand(6, 1, 28, 28, generator=g) * 255).to(torch.uint8),
                     torch.randint(0, 10, (6,), generator=g), dataset_info("mnist"), "test", "synthetic")
    pgd = {"name": "pgd", "norm": "linf", "eps": 0.3, "steps": 3, "random_start": False}
    cfg = parse_config({"attacks": [{**pgd, "surrogate": "logit"}], "grad_check_n": 0, "large_eps": 0.9}, EvalConfig)
    result = run_protocol(m, data, cfg)
    assert list(result.robust_accuracy) == ["pgd-3 random_start=False linf eps=0.3 via logit"]
    assert result.protocol[0]["surrogate"] == "logit"
    with pytest.raises(ConfigError, match="evaluation setting"):
        build_attack(AttackConfig(name="pgd", eps=0.3, surrogate="logit"), m)
    with pytest.raises(ConfigError, match="no surrogate views"):
        run_protocol(create_model("mlp", "mnist", hidden=[8]), data, cfg)
    with pytest.raises(UnknownNameError, match="aggregation"):
        run_protocol(m, data, parse_config({"attacks": [{**pgd, "surrogate": "mean"}], "grad_check_n": 0}, EvalConfig))


def test_evaluation_path_autoattack_rand_pgd_eot_surrogate_repeated() -> None:
    m = _carso(model="mlp", layers="net.hidden.fc1,net.fc", ensemble_size=2).eval()
    torch.manual_seed(1)
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    threat = ThreatModel("linf", 0.3)
    aa = AutoAttack(m, threat, version="rand", attack_kwargs={"apgd-ce": {"steps": 2, "eot_samples": 2},
                                                              "apgd-dlr": {"steps": 2, "eot_samples": 2}})
    res = aa.run(x, y)
    assert set(res.robust) == {"apgd-ce", "apgd-dlr"} and bool(threat.contains(res.x_adv, x).all())
    cfg = AttackConfig(name="pgd", norm="linf", eps=0.3, steps=3, eot_samples=2, random_start=False)
    from robustlab.attacks.config import build_attack

    assert build_attack(cfg, m).eot_samples == 2
    from robustlab.evaluation.named import named_attacks

    x_sur = named_attacks(m, [cfg.model_copy(update={"surrogate": "logit"})])[0].attack(x, y)
    assert bool(threat.contains(x_sur, x).all())
    torch.manual_seed(0)
    a = AggregationView(m, "prob")(x)
    torch.manual_seed(0)
    b = carso_of(m)[0](m.normalize(x), aggregation="prob")
    assert torch.allclose(a, b)
    rep = repeated_accuracy(m, x, y, passes=3)
    assert len(rep.per_pass) == 3 and rep.worst <= rep.mean and rep.pointwise_worst <= rep.worst
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse_config({"eot_samples": 20, "eps": 0.3}, AttackConfig)
