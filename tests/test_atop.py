"""AToP: random transforms, purifiers, the AToP loss, frozen classifier, the pipeline's gradients (end to end and
BPDA), exact resume of purifier training, the protocols and bad inputs. Tiny purifiers on synthetic data."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.core.errors import ConfigError, InputError, UnknownNameError
from robustlab.data import ImageData, dataset_info
from robustlab.evaluation.atop import evaluate_atop
from robustlab.models import create_model
from robustlab.presets import list_presets
from robustlab.presets.atop import ATOP_PRESETS, load_atop_preset
from robustlab.purification.atop import (
    AToPConfig,
    AToPDefense,
    ProtocolSettings,
    RandomTransform,
    build_purifier,
    purify,
)
from robustlab.purification.atop.purifiers import Purifier
from robustlab.training.atop import PurifierTrainer, load_purifier


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These convolutions are tiny: one thread avoids contention on a shared 2-core machine (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(n: int = 16, name: str = "mnist") -> ImageData:
    info = dataset_info(name)
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n, *info.shape, generator=g) * 255).to(torch.uint8)
    return ImageData(images, torch.randint(0, 10, (n,), generator=g), info, "train", "synthetic")


def _mlp() -> nn.Module:
    return create_model("mlp", "mnist", hidden=[16])


def _cfg(kind: str = "gan", **over: object) -> AToPConfig:
    body: dict = {"dataset": "mnist", "seed": 5, "purifier": {"kind": kind, "width": 4, "disc_width": 4},
                  "pretrain": {"epochs": 1, "batch_size": 4, "max_steps_per_epoch": 1},
                  "finetune": {"epochs": 1, "batch_size": 4, "max_steps_per_epoch": 1,
                               "attack": {"name": "fgsm", "norm": "linf", "eps": 0.3}}}
    for k, v in over.items():
        body[k] = {**body[k], **v} if isinstance(v, dict) and isinstance(body.get(k), dict) else v
    return AToPConfig.model_validate(body)


def _trainer(tmp_path, cfg: AToPConfig, classifier: nn.Module | None = None) -> PurifierTrainer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PurifierTrainer(cfg, classifier or _mlp(), tmp_path, data=_data(), show_progress=False)


# ---------------------------------------------------------------------------------------------- transforms
@pytest.mark.parametrize("shape,blocks,missing", [((1, 28, 28), 49, 12), ((3, 32, 32), 64, 16)])
@pytest.mark.parametrize("per_sample", [True, False])
def test_rt1_rt2_mask_the_documented_fraction(shape, blocks, missing, per_sample) -> None:
    torch.manual_seed(0)
    x = torch.rand(6, *shape)
    for name in ("rt1", "rt2"):
        masks = RandomTransform(name, per_sample=per_sample).sample_masks(x)
        assert masks.shape == (1, 6, 1, *shape[1:])
        m = masks[0]
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        assert torch.allclose(m.mean(dim=(1, 2, 3)), torch.full((6,), missing / blocks))  # round(0.25 * blocks)
        blocky = m.reshape(6, shape[1] // 4, 4, shape[2] // 4, 4)  # constant on every 4x4 block
        assert torch.equal(blocky, blocky[:, :, :1, :, :1].expand_as(blocky))
        same = all(torch.equal(m[0], m[i]) for i in range(1, 6))
        assert same == (not per_sample)


def test_noise_only_for_rt2_rt3_and_clipped() -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(RandomTransform("rt1").add_noise(x), x)
    noisy = RandomTransform("rt2", noise_std=0.25).add_noise(x)
    assert noisy.min() >= 0 and noisy.max() <= 1
    assert 0.15 < float((noisy - x).std()) < 0.3  # sigma 0.25 before clipping


@pytest.mark.parametrize("shape,sizes", [((3, 32, 32), [16, 16, 16, 16]), ((1, 28, 28), [13, 12, 12, 12])])
def test_rt3_masks_are_disjoint_and_cover_the_image(shape, sizes) -> None:
    torch.manual_seed(1)
    x = torch.rand(5, *shape)
    masks = RandomTransform("rt3", num_masks=4).sample_masks(x)
    assert masks.shape == (4, 5, 1, *shape[1:])
    assert torch.equal(masks.sum(dim=0), torch.ones(5, 1, *shape[1:]))  # disjoint and covering
    blocks = masks.mean(dim=(2, 3, 4)) * (shape[1] * shape[2] // 16)
    assert torch.equal(blocks.round(), torch.tensor(sizes, dtype=blocks.dtype)[:, None].expand(4, 5))


class _PassIndex(Purifier):
    """Stub purifier whose k-th call outputs the constant k, to check how RT3 combines its passes."""

    kind = "stub"

    def __init__(self) -> None:
        super().__init__()
        self.image_shape, self.calls = (1, 28, 28), 0

    def forward_stages(self, x_masked, mask):
        self.check(x_masked, mask)
        self.calls += 1
        return (torch.full_like(x_masked, float(self.calls)),)


def test_rt3_combines_each_region_from_its_own_pass() -> None:
    torch.manual_seed(2)
    x = torch.rand(3, 1, 28, 28)
    stub = _PassIndex()
    x_hat, passes = purify(stub, RandomTransform("rt3", num_masks=4), x)
    assert stub.calls == 4
    expected = sum((k + 1) * p.mask for k, p in enumerate(passes))
    assert torch.equal(x_hat, expected)
    x_hat1, _ = purify(_PassIndex(), RandomTransform("rt1"), x)
    assert torch.equal(x_hat1, torch.ones_like(x))  # RT1/RT2: the whole purifier output (trust no pixel)


# ------------------------------------------------------------------------------------------------- losses
def test_atop_loss_equals_its_parts_hand_composed(tmp_path) -> None:
    tr = _trainer(tmp_path, _cfg("gan", finetune={"variant": "clean"}))
    tr.disc.eval()  # no spectral-norm power iteration per call, so both computations see the same D
    x, y = tr._batch("finetune", 0, 0)
    torch.manual_seed(11)
    t = tr.forward_batch("finetune", x, y)
    loss, parts = tr.generator_loss("finetune", 0, t, y)
    torch.manual_seed(11)  # replay the transform's draws by hand: noise first, then the masks
    noisy = (x + 0.25 * torch.randn_like(x)).clamp(0, 1)
    m = t.passes[0].mask
    s1, s2 = tr.purifier.forward_stages(noisy * (1 - m), m)
    assert torch.allclose(t.x_hat, s2)
    adv = -tr.disc(s2, m).mean()
    l1 = (x - s1).abs().mean() + (x - s2).abs().mean()
    ce = F.cross_entropy(tr.classifier(s2), y)
    assert torch.allclose(loss, adv + l1 + 0.1 * ce, atol=1e-6)  # clean fine-tuning: lambda 0.1
    assert parts["ce"] == pytest.approx(ce.item(), abs=1e-6) and parts["l1"] == pytest.approx(l1.item(), abs=1e-6)
    pre, pre_parts = tr.generator_loss("pretrain", 0, t, y)
    assert "ce" not in pre_parts and torch.allclose(pre, adv + l1, atol=1e-6)


def test_ae_loss_and_ce_start_epoch(tmp_path) -> None:
    tr = _trainer(tmp_path, _cfg("ae", finetune={"variant": "clean", "lambda_cls": 0.7, "ce_start_epoch": 1}))
    x, y = tr._batch("finetune", 0, 0)
    t = tr.forward_batch("finetune", x, y)
    mse = ((t.x_hat - x) ** 2).mean()
    early, _ = tr.generator_loss("finetune", 0, t, y)
    late, _ = tr.generator_loss("finetune", 1, t, y)
    assert torch.allclose(early, mse)
    assert torch.allclose(late, mse + 0.7 * F.cross_entropy(tr.classifier(t.x_hat), y), atol=1e-6)


# ------------------------------------------------------------------------------------- frozen classifier
def test_classifier_weights_do_not_change_during_atop_finetuning(tmp_path) -> None:
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 26 * 26, 10))
    clf.train()
    before = copy.deepcopy(clf.state_dict())
    cfg = _cfg("gan", finetune={"max_steps_per_epoch": 2, "attack_target": "pipeline"})
    with pytest.warns(UserWarning, match="frozen"):
        tr = PurifierTrainer(cfg, clf, tmp_path, data=_data(), show_progress=False)
    g_before = copy.deepcopy(tr.purifier.state_dict())
    tr.fit()
    after = clf.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics
    assert not clf.training and not any(p.requires_grad for p in clf.parameters())
    assert any(not torch.equal(g_before[k], v) for k, v in tr.purifier.state_dict().items())


# ----------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("kind,rt", [("gan", "rt1"), ("gan", "rt3"), ("ae", "rt2")])
def test_pipeline_is_differentiable_end_to_end(kind, rt) -> None:
    torch.manual_seed(0)
    g = build_purifier(kind, (1, 28, 28), width=4)
    defense = AToPDefense(RandomTransform(rt), g, _mlp().eval().requires_grad_(False))
    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    F.cross_entropy(defense(x), torch.arange(4)).backward()
    assert torch.isfinite(x.grad).all() and (x.grad.flatten(1).abs().sum(1) > 0).all()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters() if p.dim() > 1)


def test_bpda_protocol_passes_the_classifier_gradient_straight_through() -> None:
    torch.manual_seed(0)
    defense = AToPDefense(RandomTransform("rt2"), build_purifier("ae", (1, 28, 28), width=4),
                          _mlp().eval().requires_grad_(False))
    bpda = defense.with_bpda()
    x, y = torch.rand(4, 1, 28, 28), torch.arange(4)
    torch.manual_seed(3)
    x_req = x.clone().requires_grad_(True)
    F.cross_entropy(bpda(x_req), y, reduction="sum").backward()
    torch.manual_seed(3)
    x_hat = defense.purified(x).detach().requires_grad_(True)
    F.cross_entropy(defense.classifier(x_hat), y, reduction="sum").backward()
    assert x_req.grad.abs().sum() > 0
    assert torch.allclose(x_req.grad, x_hat.grad)  # identity backward through transform + purifier
    torch.manual_seed(3)
    x_full = x.clone().requires_grad_(True)
    F.cross_entropy(defense(x_full), y, reduction="sum").backward()
    assert not torch.allclose(x_full.grad, x_hat.grad)  # the real pipeline's gradient is another one


def test_protocols_give_one_result_each_and_b_can_be_classifier_only() -> None:
    torch.manual_seed(0)
    defense = AToPDefense(RandomTransform("rt2"), build_purifier("ae", (1, 28, 28), width=4),
                          _mlp().eval().requires_grad_(False))
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    s = ProtocolSettings(n=4, eps=0.3, eot_samples=2, apgd_steps=2, b_steps=2, c_steps=2, unseen_steps=2,
                         unseen={"linf": 0.3, "l2": 2.0, "l1": 10.0})
    res = evaluate_atop(defense, x, y, s, dataset="mnist")
    assert list(res) == ["A", "B", "C", "unseen-linf", "unseen-l2", "unseen-l1"]
    assert res["A"].sanity["stochastic_outputs"] and not res["A"].sanity["unhealthy_gradients"]
    assert [p["name"].split()[0] for p in res["A"].protocol] == ["apgd-ce-2", "apgd-dlr-2"]
    assert res["A"].protocol[0]["eot_samples"] == 2 and res["unseen-l1"].threat == {"norm": "l1", "eps": 10.0}
    for r in res.values():
        assert r.worst_case_accuracy <= r.clean_accuracy
    b = evaluate_atop(defense, x, y, s.model_copy(update={"protocols": ["B"], "b_source": "classifier"}))
    assert list(b) == ["B"] and b["B"].protocol[0]["target"] == "classifier"


# --------------------------------------------------------------------------------------------------- resume
def test_resume_gives_identical_purifier_weights(tmp_path) -> None:
    cfg = _cfg("gan", pretrain={"max_steps_per_epoch": 2}, finetune={"attack_target": "classifier"})
    clf = _mlp()
    full = _trainer(tmp_path / "full", cfg, clf)
    assert full.fit().global_step == 3
    part = _trainer(tmp_path / "part", cfg, clf)
    assert part.fit(stop_after_steps=1).global_step == 1  # stopped mid pre-training, Adam state on disk
    again = _trainer(tmp_path / "part", cfg, clf)
    assert again.fit().global_step == 3
    for a, b in ((full.purifier, again.purifier), (full.disc, again.disc)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    fresh = _trainer(tmp_path / "part", cfg, clf)  # a finished run resumes to the same weights without stepping
    fresh.fit()
    with pytest.raises(ConfigError, match="another classifier"):
        _trainer(tmp_path / "part", cfg, _mlp()).fit()
    assert all(torch.equal(v, full.purifier.state_dict()[k]) for k, v in fresh.purifier.state_dict().items())
    with pytest.raises(ConfigError, match="different config"):
        _trainer(tmp_path / "part", _cfg("gan", seed=6, pretrain={"max_steps_per_epoch": 2})).fit()


# ----------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_give_clear_errors(tmp_path) -> None:
    tr = _trainer(tmp_path, _cfg("ae", pretrain={"epochs": 0}, finetune={"epochs": 0}))
    tr.fit()
    path = tmp_path / "checkpoints" / "pretrained.safetensors"
    purifier, meta = load_purifier(path, "mnist")
    assert meta["dataset"] == "mnist" and purifier.kind == "ae"
    with pytest.raises(InputError, match="trained on 'mnist', not 'fashion-mnist'"):
        load_purifier(path, "fashion-mnist")
    defense = AToPDefense(RandomTransform("rt1"), purifier, _mlp().eval().requires_grad_(False))
    with pytest.raises(InputError, match="built for 1x28x28"):
        defense(torch.rand(2, 3, 32, 32))
    with pytest.raises(InputError, match="built for 1x28x28"):
        purifier(torch.rand(2, 1, 32, 32), torch.zeros(2, 1, 32, 32))
    with pytest.raises(UnknownNameError, match="rt1, rt2, rt3"):
        RandomTransform("rt4")
    for rate in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(InputError, match=r"\(0, 1\)"):
            RandomTransform("rt1", missing_rate=rate)
    with pytest.raises(InputError, match="does not tile"):
        RandomTransform("rt1", block_size=5).sample_masks(torch.rand(1, 1, 28, 28))
    with pytest.raises(UnknownNameError, match="gan, ae"):
        build_purifier("diffusion", (1, 28, 28))
    with pytest.raises(ConfigError, match="rt1, rt2, rt3"):
        load_atop_preset("atop-mnist", overrides={"atop": {"transform": {"name": "rt9"}}})
    with pytest.raises(ConfigError, match="missing_rate"):
        load_atop_preset("atop-mnist", overrides={"atop": {"transform": {"missing_rate": 1.0}}})
    with pytest.raises(UnknownNameError, match="atop-mnist"):
        load_atop_preset("atop-svhn")


def test_presets_resolve_for_every_dataset_and_scale() -> None:
    assert {"atop-mnist", "atop-fashion-mnist", "atop-cifar10"} <= set(list_presets()) and len(ATOP_PRESETS) == 3
    for name in ATOP_PRESETS:
        for scale in ("quick", "paper"):
            p = load_atop_preset(name, scale)
            assert p.classifier.train.data.dataset == p.atop.dataset
            assert p.classifier.train.objective.name == "standard"  # AToP defends a normally trained classifier
            assert p.atop.finetune.lam == 0.05 and p.atop.finetune.attack.name == "fgsm"
            assert p.atop.transform.name == "rt2" and p.atop.transform.missing_rate == 0.25


def test_cli_atop_runs_both_phases_and_reuses_its_evaluations(tmp_path) -> None:
    """`robustlab atop`: trains, evaluates the pre-trained and fine-tuned purifier per protocol, and a second call
    reuses the saved evaluations (resumable) instead of attacking again; a classifier of another dataset is refused."""
    from typer.testing import CliRunner

    from robustlab.cli import app
    from robustlab.training.trainer import Trainer
    from tests._training_helpers import tiny_config

    clf = tmp_path / "clf"
    Trainer(tiny_config(epochs=1, max_steps_per_epoch=2, validation={"n": 16, "attack": None}), clf,
            show_progress=False).fit()
    args = ["atop", "atop-mnist", "--classifier", str(clf), "--transform", "rt1", "--runs-dir", str(tmp_path),
            "--no-progress"]
    for kv in ("atop.train_subset=64", "atop.pretrain.max_steps_per_epoch=1", "atop.finetune.max_steps_per_epoch=1",
               "atop.pretrain.epochs=1", "eval.n=4", "eval.apgd_steps=1", "eval.eot_samples=1", "eval.b_steps=1",
               "eval.c_steps=1", "eval.unseen_steps=1"):  # the preset's default protocol list: A, B, C, unseen
        args += ["--set", kv]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    run = tmp_path / "atop-mnist-rt1-quick"
    files = sorted(p.name for p in (run / "eval").iterdir())
    results = ["A", "B", "C", "unseen-l1", "unseen-l2", "unseen-linf"]
    assert files == sorted(f"{phase}-{r}.json" for phase in ("finetuned", "pretrained") for r in results)
    summary = json.loads((run / "atop_summary.json").read_text())["results"]
    assert sorted(summary["finetuned"]) == sorted(results)
    stamps = {p: p.stat().st_mtime_ns for p in (run / "eval").iterdir()}
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert {p: p.stat().st_mtime_ns for p in (run / "eval").iterdir()} == stamps
    args += ["--set", "eval.protocols=[A,B]"]
    named = runner.invoke(app, [*args, "--set", "atop.name=my-atop", "--set", "eval.protocols=[B]"])
    assert named.exit_code == 0, named.output
    assert (tmp_path / "my-atop" / "eval" / "finetuned-B.json").exists()
    for bad, why in (("", "valid string"), ("../escape", "plain folder name"), (".hidden", "plain folder name")):
        bad_name = runner.invoke(app, [*args, "--set", f"atop.name={bad}"])
        assert bad_name.exit_code != 0 and why in str(bad_name.exception), bad
    assert not (tmp_path.parent / "escape").exists()
    refused = runner.invoke(app, ["atop", "atop-fashion-mnist", "--classifier", str(clf), "--runs-dir",
                                  str(tmp_path), "--no-progress"])
    assert refused.exit_code != 0 and "mnist" in str(refused.exception)


def test_purifier_starts_at_the_data_mean_and_does_not_collapse_to_black(tmp_path) -> None:
    """Regression: from sigmoid(0) = 0.5 the first Adam steps drove an MNIST purifier's every pixel into sigmoid
    saturation (black output, vanishing gradient, classifier accuracy 14%); the trainer now starts it at the mean."""
    from robustlab.data import load_dataset

    mnist = load_dataset("mnist", "train").subset(512)
    cfg = _cfg("ae", transform={"name": "rt1"}, purifier={"kind": "ae", "width": 8},
               pretrain={"epochs": 1, "batch_size": 32, "lr": 2e-3, "max_steps_per_epoch": 16})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = PurifierTrainer(cfg, _mlp(), tmp_path, data=mnist, show_progress=False)
    mean = mnist.float_images(range(512)).mean()
    assert tr.purifier.decoder[-1].bias.item() == pytest.approx(torch.logit(mean).item(), rel=1e-5)
    tr.fit()
    x, _ = tr._batch("pretrain", 0, 0)
    with torch.no_grad():
        x_hat = tr.purifier.eval()(x * 1.0, torch.zeros_like(x[:, :1]))
    assert x_hat.mean().item() > 0.05  # black output (the collapse) has mean ~0.001
    assert F.mse_loss(x_hat, x).item() < F.mse_loss(torch.zeros_like(x), x).item()
