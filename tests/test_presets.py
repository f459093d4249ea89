"""Presets: every bundled preset (every variant) resolves at every scale and builds its objective, model and
attacks; the reduced scale is quick on the documented CPU budget; table rows carry the published budget and numbers;
variants merge in order; typos give clear errors."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from robustlab.core.dicts import deep_merge
from robustlab.core.errors import ConfigError, UnknownNameError
from robustlab.evaluation.named import named_attacks
from robustlab.models import create_model
from robustlab.models.latent import check_latent_layer, latent_and_logits
from robustlab.presets import list_presets, load_preset, parse_overrides
from robustlab.training.objectives import create_objective
from robustlab.training.trainer import config_hash

REQUIRED = {"mnist-pgd-at", "mnist-fast-at", "fashion-mnist-pgd-at", "cifar10-pgd-at", "demo"}


def test_required_presets_exist() -> None:
    assert set(list_presets()) >= REQUIRED


@pytest.mark.parametrize("name", sorted(REQUIRED - {"demo"}))
@pytest.mark.parametrize("scale", ["quick", "reduced", "paper"])
def test_every_preset_resolves(name: str, scale: str) -> None:
    p = load_preset(name, scale)
    assert p.train.name == f"{name}-{scale}"
    assert p.eval.attacks and p.eval.large_eps is not None
    if scale == "paper":
        assert p.train.epochs >= 10 and not p.train.data.train_subset


def test_paper_scale_uses_published_budget() -> None:
    p = load_preset("mnist-pgd-at", "paper")
    attack = p.train.objective.attack
    assert (p.train.epochs, attack.steps, attack.eps, attack.step_size) == (100, 40, 0.3, 0.01)
    assert p.train.schedule.milestones == [55, 75, 90]
    assert p.published["clean"] == 99.4


def test_overrides_and_deep_merge() -> None:
    over = parse_overrides(["train.optimizer.lr=0.05", "eval.n=7", "train.data.augment=[flip]"])
    assert over == {"train": {"optimizer": {"lr": 0.05}, "data": {"augment": ["flip"]}}, "eval": {"n": 7}}
    p = load_preset("mnist-pgd-at", "quick", over)
    assert p.train.optimizer.lr == 0.05 and p.eval.n == 7 and p.train.optimizer.name == "adam"
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}


def test_bad_presets_give_specific_errors(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="mnist-pgd-at"):  # lists the valid names
        load_preset("mnist-pgd-att")
    with pytest.raises(ConfigError, match="no 'huge' scale|unknown scale"):
        load_preset("mnist-pgd-at", "huge")
    with pytest.raises(ConfigError, match=r"train\.optimizer\.momentum: "):
        load_preset("mnist-pgd-at", "paper", parse_overrides(["train.optimizer.momentum=2"]))
    with pytest.raises(ConfigError, match="unknown key"):
        load_preset("mnist-pgd-at", "quick", parse_overrides(["train.epohcs=3"]))
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["epochs"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {data: {dataset: mnist}, model: {name: mlp}}\nevaluation: {}\n")
    with pytest.raises(ConfigError, match="unknown top-level keys"):
        load_preset(str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        load_preset(str(tmp_path / "missing.yaml"))


# ---------------------------------------------------------------------------------------------- the reduced scale

# What the reduced-budget runs of docs/results.md passed on top of the quick scale (with train.threads=1, which the
# config hash leaves out): the run folders of the ADR re-runs were made with exactly this.
DOCUMENTED_REDUCED = ["train.data.train_subset=10000", "train.epochs=3", "train.bf16=false", "eval.n=1000",
                      "eval.autoattack=null", "eval.eps_sweep_n=500"]


def test_reduced_is_quick_on_the_cpu_budget() -> None:
    """Every preset resolves at ``reduced``: quick's config with 10,000 images, 3 epochs, fp32; a whole-test-set
    protocol is cut to 1,000 points (sweep on 500) without AutoAttack, a capped one is kept as it is."""
    for name in list_presets():
        quick, reduced = load_preset(name, "quick"), load_preset(name, "reduced")
        assert reduced.scale == "reduced", name
        assert reduced.train.name == ("demo-reduced" if name == "demo" else f"{name}-reduced"), name
        expected = quick.train.model_dump(mode="json")
        expected.update(name=reduced.train.name, epochs=3, bf16=False)
        # the shuttle table's own scales.reduced keeps all 36,000 rows (on 10,000 every row predicts one class)
        expected["data"]["train_subset"] = None if name.startswith("tabular-shuttle-") else 10000
        assert reduced.train.model_dump(mode="json") == expected, name
        expected_eval = quick.eval.model_dump(mode="json")
        if quick.eval.n is None:
            expected_eval.update(n=1000, autoattack=None)
            if quick.eval.eps_sweep:
                expected_eval["eps_sweep_n"] = 500
        assert reduced.eval.model_dump(mode="json") == expected_eval, name
    assert load_preset("carso-mnist", "reduced").eval.autoattack.version == "rand"  # capped protocol kept
    assert load_preset("demo", "reduced").train.name == "demo-reduced"  # a file that names its run


@pytest.mark.parametrize("name", ["udr-mnist-udr-pgd", "adr-mnist-adr-trades"])
def test_reduced_is_the_documented_bundle(name: str) -> None:
    """``--scale reduced`` gives the config the documented ``--scale quick --set ...`` runs had: the same hash
    once the run name (``-quick`` then) is the same, and the same evaluation."""
    old = load_preset(name, "quick", parse_overrides(DOCUMENTED_REDUCED))
    new = load_preset(name, "reduced")
    assert new.train.name == f"{name}-reduced" and old.train.name == f"{name}-quick"
    assert config_hash(new.train.model_copy(update={"name": old.train.name})) == config_hash(old.train)
    assert new.eval == old.eval


REDUCED_FILE = """
train:
  data: {dataset: mnist}
  model: {name: mlp, kwargs: {hidden: [8]}}
  objective: {name: pgd-at, attack: {name: pgd, eps: 0.3, steps: 5}}
eval:
  attacks: [{name: pgd, eps: 0.3, steps: 5}]
  autoattack: {version: standard, eps: 0.3, n: 500}
  eps_sweep: [0.3, 0.4]
scales:
  quick: {train: {epochs: 2, data: {train_subset: 4096}, batch_size: 64}}
  reduced: {train: {epochs: 7}, eval: {autoattack: {version: standard, eps: 0.3, n: 50}}}
  paper: {train: {epochs: 9}}
variants:
  a: {}
  b: {scales: {reduced: {train: {data: {train_subset: 500}}, eval: {n: 40}}}}
"""


def test_a_preset_overrides_the_reduced_budget(tmp_path: Path) -> None:
    path = tmp_path / "fam.yaml"
    path.write_text(REDUCED_FILE)
    a = load_preset(str(path), "reduced", variant="a")  # the file's reduced entry on top of the derived budget
    assert (a.train.name, a.train.epochs, a.train.data.train_subset, a.train.bf16, a.train.batch_size) == \
        ("fam-a-reduced", 7, 10000, False, 64)
    assert (a.eval.n, a.eval.eps_sweep_n, a.eval.autoattack.n) == (1000, 500, 50)
    b = load_preset(str(path), "reduced", variant="b")  # and the variant's on top of the file's
    assert (b.train.epochs, b.train.data.train_subset, b.eval.n, b.eval.autoattack.n) == (7, 500, 40, 50)
    over = load_preset(str(path), "reduced", parse_overrides(["train.epochs=1", "train.name=x"]), variant="b")
    assert (over.train.epochs, over.train.name) == (1, "x")  # --set comes last
    no_quick = tmp_path / "noquick.yaml"
    no_quick.write_text(REDUCED_FILE.split("variants:")[0].replace("  quick:", "  other:"))
    assert load_preset(str(no_quick), "reduced").train.epochs == 7  # an explicit reduced needs no quick
    no_quick.write_text(no_quick.read_text().replace("  reduced:", "  other2:"))
    with pytest.raises(ConfigError, match="no 'reduced' scale .*derived from 'quick'.*it has: other, other2, paper"):
        load_preset(str(no_quick), "reduced")


# ---------------------------------------------------------------------------------------------- variants, tables

UDR_MNIST = ["pgd-at", "udr-pgd", "trades", "udr-trades", "mart", "udr-mart", "wrm"]
ADR_MNIST = ["adv", "adr-adv", "trades", "adr-trades", "t1-standard", "t1-none", "t1-lc", "t1-lc-gb", "t1-lc-gb-ca",
             "s3-g2conv", "s3-g3conv", "s3-g4conv", "s3-g4conv-1fc", "s3-g4conv-2fc",
             "s4-adv-pgd", "s4-adv-bim", "s4-adv-mim", "s4-adr-pgd", "s4-adr-bim", "s4-adr-mim"]
MNIST_TABLES = [f"udr-mnist-{v}" for v in UDR_MNIST] + [f"adr-mnist-{v}" for v in ADR_MNIST]
SWEEP_MNIST = [0.3, 0.325, 0.35, 0.375, 0.4, 0.425]


@functools.cache
def _cached_model(name: str, dataset: str, kwargs_json: str) -> torch.nn.Module:
    return create_model(name, dataset, **json.loads(kwargs_json))


def _model(name: str, dataset: str, kwargs: dict) -> torch.nn.Module:
    """Each distinct architecture is built once (kwargs may hold lists: ensemble members)."""
    return _cached_model(name, dataset, json.dumps(kwargs, sort_keys=True))


def test_table_presets_are_listed() -> None:
    names = set(list_presets())
    assert names >= set(MNIST_TABLES) | REQUIRED
    assert "udr-mnist" not in names and "adr-mnist" not in names  # a variant file is a family, not a preset


@pytest.mark.parametrize("scale", ["quick", "paper"])
def test_every_preset_builds_objective_model_and_attacks(scale: str) -> None:
    for name in list_presets():
        if name == "demo" and scale == "paper":  # the demo has one scale
            continue
        p = load_preset(name, scale)
        assert p.name == name and p.train.name == ("demo" if name == "demo" else f"{name}-{scale}")
        create_objective(p.train.objective)
        model = _model(p.train.model.name, p.train.data.dataset, p.train.model.kwargs)
        assert len(named_attacks(model, p.eval.attacks)) == len(p.eval.attacks)
        if name in REQUIRED:
            continue
        assert p.description and p.reference and p.published.get("source"), name
        numbers = {k: v for k, v in p.published.items() if k != "source" and v is not None}
        # a row chases published numbers, or says in its notes why the source has none (victims, new datasets)
        assert numbers or "no published" in p.notes.lower(), name
        sweep = p.published.get("eps_sweep", {})
        assert set(sweep) <= set(p.eval.eps_sweep), name  # every published sweep point is measured


def test_mnist_quick_budget_is_shared() -> None:
    """Orderings across methods are comparable only if every MNIST table row trains on the same budget."""
    budgets, protocols = set(), set()
    for name in MNIST_TABLES:
        t, e = load_preset(name, "quick").train, load_preset(name, "quick").eval
        budgets.add((t.epochs, t.batch_size, t.bf16, t.optimizer.name, t.optimizer.lr, t.schedule.name,
                     t.schedule.final_lr_fraction, t.validation.n, t.validation.attack.steps,
                     t.validation.attack.step_size))
        assert t.data.dataset == "mnist" and t.data.train_subset is None
        assert t.model.name == ("adr-cnn" if name.startswith("adr") else "cw-cnn"), name
        assert e.n is None and e.large_eps == 0.5, name  # the full test set
        assert e.autoattack is not None and (e.autoattack.version, e.autoattack.eps, e.autoattack.n) == (
            "standard", 0.3, 500)
        if t.objective.name in ("standard", "wrm"):  # no training attack / its own inner ascent
            continue
        a = t.objective.attack
        budgets.add((a.name, a.eps, a.steps, a.step_size, t.objective.eps_warmup_epochs))
        if "-s3-" not in name and "-s4-" not in name:
            first = e.attacks[0]
            protocols.add((first.name, first.steps, first.step_size))
            assert e.eps_sweep == SWEEP_MNIST and e.eps_sweep_n == 1000, name
    assert budgets == {(5, 128, True, "adam", 0.001, "cosine", 0.05, 1000, 20, 0.02),
                       ("pgd", 0.3, 10, 0.05, 1.0)}
    assert protocols == {("pgd", 40, 0.01)}


def test_udr_mnist_paper_budget_and_published_numbers() -> None:
    p = load_preset("udr-mnist-udr-trades", "paper")
    a, o = p.train.objective.attack, p.train.objective
    assert (p.train.epochs, a.steps, a.eps, a.step_size) == (100, 40, 0.3, 0.01)
    assert (p.train.optimizer.name, p.train.optimizer.lr, p.train.schedule.milestones) == ("sgd", 0.01, [55, 75, 90])
    assert o.params["beta"] == 1.0 and o.eps_warmup_epochs == 0
    assert o.params["udr"]["pull_cost"] == "pixel-hinge" and o.params["udr"]["tau_over_step"] == 1.0  # code mode
    literal = load_preset("udr-mnist-udr-pgd-thesis-linf", "paper").train.objective.params["udr"]
    assert literal == {"pull_cost": "linf"}  # the thesis text's soft ball, kept as its own row
    first = p.eval.attacks[0]
    assert (first.steps, first.step_size, p.eval.n, p.eval.eps_sweep_n) == (200, 0.01, None, None)
    assert p.eval.autoattack.n == 1000
    assert (p.published["clean"], p.published["pgd"], p.published["autoattack"]) == (99.4, 96.9, 92.2)
    assert p.published["eps_sweep"][0.425] == 88.5
    assert load_preset("udr-mnist-pgd-at", "paper").train.objective.params == {"natural_weight": 1.0}
    wrm = load_preset("udr-mnist-wrm", "quick").train.objective
    assert (wrm.name, wrm.params, wrm.eps_warmup_epochs) == ("wrm", {"gamma": 0.05, "cost": "squared"}, 0.0)
    assert load_preset("udr-mnist-wrm", "paper").published["autoattack"] == 4.5


def test_adr_mnist_rows() -> None:
    p = load_preset("adr-mnist-t1-lc-gb-ca", "paper")
    a = p.train.objective.attack
    assert (p.train.epochs, a.steps, a.step_size, p.train.optimizer.weight_decay) == (100, 20, 0.01, 0.0)
    assert p.train.objective.params == {"base": "adv", "lambda_lc": 1.0, "lambda_gb": 1.0, "lambda_smt": 1.0,
                                        "lambda_conf": 1.0, "gb_scale": "max"}
    assert (p.eval.attacks[0].eps, p.eval.attacks[0].steps) == (0.325, 40)  # Table 1's attack
    assert (p.published["clean"], p.published["pgd"]) == (99.36, 94.96)
    assert load_preset("adr-mnist-t1-none", "quick").train.objective.params == {"natural_weight": 1.0}
    assert load_preset("adr-mnist-adr-adv", "quick").published["pgd"] == 96.55
    bim = load_preset("adr-mnist-s4-adv-bim", "paper").eval.attacks
    assert [(c.name, c.steps, c.random_start) for c in bim] == [("bim", 100, None), ("mt-pgd", 100, False)]


CIFAR_FAMILIES = ("udr-cifar10-", "adr-cifar10-", "ascl-cifar10-")


def test_cifar_quick_is_one_pipeline_check() -> None:
    """CIFAR-10 quick scales are the same short CPU check (the data must be supplied by the user)."""
    names = [n for n in list_presets() if n.startswith(CIFAR_FAMILIES)]
    assert len(names) >= 40
    for name in names:
        p = load_preset(name, "quick")
        t = p.train
        assert (t.epochs, t.bf16, t.optimizer.name, t.optimizer.lr, t.schedule.name) == (1, True, "adam", 0.001,
                                                                                       "constant"), name
        assert t.data.train_subset == (512 if t.model.name == "wrn-34-10" else 2048), name
        assert (p.eval.n, p.eval.autoattack) == (200, None), name
        if t.objective.attack is not None and t.objective.name != "wrm":
            assert t.objective.attack.steps == 3, name
        assert "CIFAR-10 is not bundled" in p.notes, name


def test_cifar_paper_budgets() -> None:
    p = load_preset("udr-cifar10-wrn-udr-awp-at", "paper")
    t = p.train
    assert (t.model.name, t.epochs, t.optimizer.name, t.optimizer.lr, t.optimizer.weight_decay) == (
        "wrn-34-10", 200, "sgd", 0.1, 0.0005)
    assert t.schedule.milestones == [100, 150] and t.objective.params["natural_weight"] == 0.0
    assert t.objective.params["udr"] == {"pull_cost": "pixel-hinge", "tau": 2 / 255, "lam_init": 1.0,
                                         "lam_lr": 0.02, "lam_period": 10, "lam_clamp": False,
                                         "lam_distance": "mean-abs", "clip_every_step": True}
    assert (p.eval.attacks[0].steps, p.eval.n, p.eval.autoattack.n) == (100, None, None)  # full test set
    assert (p.published["clean"], p.published["autoattack"], p.published["cw"]) == (85.51, 54.40, 54.44)
    p = load_preset("udr-cifar10-udr-mart", "paper")
    assert (p.train.optimizer.weight_decay, p.train.schedule.milestones, p.train.optimizer.lr) == (
        0.0035, [75, 90, 100], 0.01)
    assert p.eval.eps_sweep == [e / 255 for e in (8, 10, 12, 14, 16, 20)] and p.eval.attacks[0].steps == 200
    assert p.published["eps_sweep"][20 / 255] == 12.2 and p.train.objective.params["beta"] == 5.0
    p = load_preset("adr-cifar10-resnet-adr-adv", "paper")
    assert (p.train.model.name, p.train.model.kwargs, p.train.optimizer.weight_decay) == ("resnet20", {"depth": 32},
                                                                                         0.0002)
    assert [(a.name, a.steps, a.eps, a.step_size) for a in p.eval.attacks] == [
        ("pgd", 20, 0.031, 0.007), ("mt-pgd", 20, 0.031, 0.007)]
    assert (p.published["pgd"], p.published["multi-target"]) == (44.72, 41.43)
    assert load_preset("adr-cifar10-cnn-adr-adv", "paper").train.optimizer.name == "adam"
    p = load_preset("ascl-cifar10-leaked", "paper")
    assert (p.train.model.name, p.train.optimizer.name, p.train.schedule.milestones) == ("resnet20", "adam",
                                                                                         [80, 120, 160])
    assert [(a.name, a.steps) for a in p.eval.attacks] == [("pgd", 250), ("mt-pgd", 250)]
    assert p.train.objective.params == {"strategy": "leaked-ls"} and p.eval.autoattack.n == 1000
    assert (p.published["clean"], p.published["pgd"], p.published["multi-target"], p.published["autoattack"]) == (
        75.5, 53.7, 41.0, 42.0)
    rb = load_preset("ascl-cifar10-rb-resnet18", "paper")
    assert rb.train.objective.params["variant"] == "robustbench" and rb.eval.autoattack.n is None


def test_latent_objectives_find_their_latent() -> None:
    """ADR and ASCL presets name a latent their model has (an unknown one would fail only at the first step)."""
    for name in list_presets():
        obj = load_preset(name, "quick").train
        if obj.objective.name not in ("adr", "ascl"):
            continue
        model = _model(obj.model.name, obj.data.dataset, obj.model.kwargs)
        check_latent_layer(model, obj.objective.params.get("latent_layer"))


def test_adr_latent_layers_exist() -> None:
    """supp Table 3's split points are real adr-cnn layers (an unknown name fails only at the first step)."""
    model = _model("adr-cnn", "mnist", {})
    x = torch.rand(2, 1, 28, 28)
    widths = []
    for v in ["s3-g2conv", "s3-g3conv", "s3-g4conv", "s3-g4conv-1fc", "s3-g4conv-2fc"]:
        layer = load_preset(f"adr-mnist-{v}", "quick").train.objective.params["latent_layer"]
        z, logits = latent_and_logits(model, x, layer)
        assert logits.shape == (2, 10)
        widths.append(z.shape[1])
    assert widths == [32 * 12 * 12, 32 * 10 * 10, 32 * 4 * 4, 200, 200]


VARIANT_FILE = """
description: base
notes: file note
train: &t
  data: {dataset: mnist}
  model: {name: mlp, kwargs: {hidden: [8]}}
  objective: {name: pgd-at, attack: {name: pgd, eps: 0.3, steps: 5}}
eval: {attacks: [{name: pgd, eps: 0.3, steps: 5}]}
scales:
  quick: {train: {epochs: 2, objective: {eps_warmup_epochs: 1.0}}}
  paper: {train: {epochs: 9}}
published: {source: S, eps_sweep: {0.3: 1.0}}
variants:
  a: {}
  b:
    name: renamed
    description: row b
    notes: row note
    train: {objective: {params: {natural_weight: 1.0}, eps_warmup_epochs: 0.0}}
    scales: {paper: {train: {epochs: 11}}}
    published: {clean: 5.0, eps_sweep: {0.4: 2.0}}
"""


def test_variant_mechanics(tmp_path: Path) -> None:
    path = tmp_path / "fam.yaml"
    path.write_text(VARIANT_FILE)
    a = load_preset(str(path), "quick", variant="a")
    assert (a.name, a.description, a.train.epochs, a.train.objective.eps_warmup_epochs) == ("fam-a", "base", 2, 1.0)
    b = load_preset(str(path), "quick", variant="b")  # by key; the variant's own train beats the file's scale
    assert (b.name, b.description, b.train.epochs, b.train.objective.eps_warmup_epochs) == ("renamed", "row b", 2, 0)
    assert b.train.objective.params == {"natural_weight": 1.0} and b.train.objective.attack.steps == 5
    assert b.published == {"source": "S", "clean": 5.0, "eps_sweep": {0.3: 1.0, 0.4: 2.0}}  # deep-merged
    assert load_preset(str(path), "paper", variant="renamed").train.epochs == 11
    assert (a.notes, b.notes) == ("file note", "file note\nrow note")
    assert load_preset(str(path), "paper", variant="a").train.epochs == 9
    assert a.published == {"source": "S", "eps_sweep": {0.3: 1.0}}  # b's merge did not leak into a
    with pytest.raises(UnknownNameError, match="choose a variant.*a, b"):
        load_preset(str(path))
    with pytest.raises(UnknownNameError, match="unknown variant 'c'.*a, b"):
        load_preset(str(path), variant="c")
    with pytest.raises(ConfigError, match="has no variants"):
        load_preset(str(_plain(tmp_path)), variant="x")
    bad = tmp_path / "bad.yaml"
    bad.write_text(VARIANT_FILE.replace("  a: {}", "  a: {evaluation: {}}"))
    with pytest.raises(ConfigError, match=r"variant 'a' has unknown keys \['evaluation'\]"):
        load_preset(str(bad), variant="a")


def _plain(tmp_path: Path) -> Path:
    plain = tmp_path / "plain.yaml"
    plain.write_text(VARIANT_FILE.split("variants:")[0])
    return plain


def test_bundled_variant_errors() -> None:
    with pytest.raises(UnknownNameError, match="unknown variant 'udr-foo' of 'udr-mnist'.*udr-mnist-udr-pgd"):
        load_preset("udr-mnist-udr-foo")
    with pytest.raises(UnknownNameError, match="preset family.*udr-mnist-pgd-at"):
        load_preset("udr-mnist")
    assert load_preset("udr-mnist", variant="mart").name == "udr-mnist-mart"
    with pytest.raises(UnknownNameError, match="unknown preset 'nope'"):
        load_preset("nope")
