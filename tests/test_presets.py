"""Presets: every bundled preset resolves at every scale; overrides and typos behave."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustlab.errors import ConfigError, UnknownNameError
from robustlab.presets import deep_merge, list_presets, load_preset, parse_overrides

REQUIRED = {"mnist-pgd-at", "mnist-fast-at", "fashion-mnist-pgd-at", "cifar10-pgd-at", "demo"}


def test_required_presets_exist() -> None:
    assert set(list_presets()) >= REQUIRED


@pytest.mark.parametrize("name", sorted(REQUIRED - {"demo"}))
@pytest.mark.parametrize("scale", ["quick", "paper"])
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
