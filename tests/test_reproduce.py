"""The eps sweep (exact on an analytic model), the report plots, and `robustlab reproduce` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from typer.testing import CliRunner

from robustlab.analysis.plots import plot_robust_accuracy_vs_eps, plot_training_curves
from robustlab.app.reproduce import comparison_rows, result_matches
from robustlab.cli import app
from robustlab.core.config import parse_config
from robustlab.core.errors import ConfigError, InputError, UnknownNameError
from robustlab.data.registry import DatasetInfo, ImageData
from robustlab.evaluation import sweep as sweep_module
from robustlab.evaluation.config import EvalConfig
from robustlab.evaluation.protocol import run_protocol
from robustlab.evaluation.result import EvaluationResult
from robustlab.evaluation.robust import robust_flags
from robustlab.training.config import TrainConfig

PNG = b"\x89PNG\r\n\x1a\n"
SWEEP = [0.07, 0.13, 0.21, 0.29]  # x 510 is never an integer: no margin |k/255 - 0.5| equals an eps (no ties)


class Linear2(nn.Module):
    """Two-class linear model on the mean pixel: class 1 iff mean(x) > 0.5; broken iff |mean - 0.5| <= eps."""

    def forward(self, x: Tensor) -> Tensor:
        m = x.flatten(1).mean(dim=1, keepdim=True) - 0.5
        return torch.cat([-m, m], dim=1) * 10


def level_data(n: int = 40) -> tuple[ImageData, Tensor]:
    """Constant grey images at levels in [51, 204] / 255, labelled by the model's rule; also their margins."""
    g = torch.Generator().manual_seed(0)
    levels = torch.randint(51, 205, (n,), generator=g)
    levels[levels == 127] = 126  # keep away from the 0.5 boundary
    images = levels.to(torch.uint8)[:, None, None, None].expand(n, 1, 4, 4).clone()
    info = DatasetInfo("levels", 2, (1, 4, 4), (0.0,), (1.0,), ("dark", "light"))
    data = ImageData(images, (levels > 127).long(), info, "test", "synthetic")
    return data, (levels.float() / 255 - 0.5).abs()


def eval_cfg(**kw: object) -> EvalConfig:
    base = {"attacks": [{"name": "pgd", "norm": "linf", "eps": 0.13, "steps": 8}], "grad_check_n": 0,
            "batch_size": 16}
    return parse_config({**base, **kw}, EvalConfig, "eval")


def test_sweep_equals_separate_evaluations_and_the_analytic_accuracy(monkeypatch: pytest.MonkeyPatch) -> None:
    data, margin = level_data()
    model = Linear2()
    seen: list[int] = []

    def spy(model: nn.Module, x: Tensor, *args: object, **kw: object) -> object:
        seen.append(len(x))
        return robust_flags(model, x, *args, **kw)

    monkeypatch.setattr(sweep_module, "robust_flags", spy)
    result = run_protocol(model, data, eval_cfg(eps_sweep=SWEEP, eps_sweep_n=30))
    assert seen == [30] * len(SWEEP)  # independent: every radius starts from the same 30 points
    monkeypatch.undo()
    assert list(result.eps_sweep) == ["0.07", "0.13", "0.21", "0.29"] and result.eps_sweep_n == 30
    # the main protocol still runs on all 40 points and is untouched by the sweep
    assert result.n == 40 and next(iter(result.robust_accuracy.values())) == float((margin > 0.13).float().mean())
    values = []
    for eps in SWEEP:
        alone = run_protocol(model, data, eval_cfg(n=30, attacks=[{"name": "pgd", "norm": "linf", "eps": eps,
                                                                   "steps": 8}]))
        swept = result.eps_sweep[repr(eps)]
        assert swept == next(iter(alone.robust_accuracy.values()))
        assert swept == float((margin[:30] > eps).float().mean())  # exact: robust iff margin above eps
        values.append(swept)
    assert all(a >= b for a, b in zip(values, values[1:])) and values[0] > values[-1]
    assert set(result.eps_sweep_attack or {}) >= {"name", "steps"} and "eps" not in (result.eps_sweep_attack or {})


def test_autoattack_only_protocol_sweeps_pgd_at_its_threat_model() -> None:
    data, margin = level_data(20)
    aa = {"eps": 0.13, "version": "custom", "attacks": ["apgd-ce"], "attack_kwargs": {"apgd-ce": {"steps": 10}}}
    cfg = parse_config({"autoattack": aa, "grad_check_n": 0,
                        "eps_sweep": [0.21], "batch_size": 20}, EvalConfig, "eval")
    result = run_protocol(Linear2(), data, cfg)
    assert result.eps_sweep == {"0.21": float((margin > 0.21).float().mean())}
    assert result.eps_sweep_attack == {"name": "pgd", "norm": "linf", "steps": 50}


def test_result_json_without_the_sweep_fields_still_loads(tmp_path: Path) -> None:
    data, _ = level_data(10)
    doc = run_protocol(Linear2(), data, eval_cfg()).to_dict()
    for key in ("eps_sweep", "eps_sweep_n", "eps_sweep_attack"):
        doc.pop(key)
    (tmp_path / "old.json").write_text(json.dumps(doc))
    old = EvaluationResult.load(tmp_path / "old.json")
    assert old.eps_sweep == {} and old.eps_sweep_n is None and old.eps_sweep_attack is None


@pytest.mark.parametrize("sweep", [{"eps_sweep": [0.1, -0.2]}, {"eps_sweep": [0.0]}, {"eps_sweep": [0.1, 0.1]},
                                   {"eps_sweep": [float("nan")]}, {"eps_sweep": [0.1], "eps_sweep_n": 0}])
def test_bad_sweep_is_a_config_error_naming_the_field(sweep: dict) -> None:
    with pytest.raises(ConfigError, match="eps_sweep"):
        eval_cfg(**sweep)


def test_plots_write_pngs_and_refuse_bad_input(tmp_path: Path) -> None:
    out = plot_robust_accuracy_vs_eps({"0.3": 0.4, "0.1": 0.9}, tmp_path / "a" / "sweep.png",
                                      published={0.1: 88.0, "0.2": 60}, title="t")
    assert out.read_bytes()[:8] == PNG
    rows = [{"epoch": 0, "train_loss": 2.0, "val_clean_acc": 0.5, "val_robust_acc": 0.2, "train_udr_lambda": 1.0},
            {"epoch": 1, "train_loss": 1.0, "val_clean_acc": 0.8, "val_robust_acc": 0.4, "train_udr_lambda": 0.5}]
    assert plot_training_curves(rows, tmp_path / "curves.png").read_bytes()[:8] == PNG
    with pytest.raises(InputError, match="empty"):
        plot_robust_accuracy_vs_eps({}, tmp_path / "x.png")
    with pytest.raises(InputError, match="eps"):
        plot_robust_accuracy_vs_eps({"-0.1": 0.5}, tmp_path / "x.png")
    with pytest.raises(InputError, match="metrics"):
        plot_training_curves([], tmp_path / "x.png")


def test_comparison_maps_published_keys_and_never_invents_a_measurement() -> None:
    cfg = parse_config({"attacks": [{"name": "pgd", "eps": 0.3, "steps": 10}, {"name": "bb", "eps": 0.3}],
                        "autoattack": {"eps": 0.3, "n": 10}}, EvalConfig, "eval")
    aa = "autoattack-standard linf eps=0.3 n=10"
    result = EvaluationResult(
        dataset="mnist", split="test", n=20, indices=list(range(20)), threat={}, protocol=[],
        clean_accuracy=0.9, robust_accuracy={"pgd-10 linf eps=0.3": 0.5, "bb linf eps=0.3": 0.45,
                                             f"{aa}: apgd-ce": 0.5, f"{aa}: square": 0.4},
        worst_case_accuracy=0.4, worst_case_n=10, per_sample={}, seed=0, timings={},
        eps_sweep={"0.1": 0.8}, eps_sweep_n=20)
    published = {"source": "Table 1", "clean": 99.0, "pgd": 50, "bb": 47.0, "autoattack": 41.0, "mim": 30.0,
                 "odd row": "n/a", "eps_sweep": {0.1: 85.0, 0.4: 5.0}}
    rows = {r["metric"]: r for r in comparison_rows(result, cfg, published)}
    assert (rows["clean"]["measured"], rows["clean"]["published"]) == (90.0, 99.0)
    assert (rows["pgd-10 linf eps=0.3"]["measured"], rows["pgd-10 linf eps=0.3"]["published"]) == (50.0, 50)
    assert rows["bb linf eps=0.3"]["published"] == 47.0 and "cumulative" in rows["bb linf eps=0.3"]["note"]
    assert (rows["AutoAttack-standard"]["measured"], rows["AutoAttack-standard"]["published"]) == (40.0, 41.0)
    assert rows["worst case over all attacks"] == {"metric": "worst case over all attacks", "measured": 40.0,
                                                   "published": None, "note": "pointwise, first 10 points"}
    assert (rows["eps=0.1"]["measured"], rows["eps=0.1"]["published"]) == (80.0, 85.0)
    for key, value in (("mim", 30.0), ("odd row", "n/a"), ("eps=0.4", 5.0)):
        assert rows[key]["measured"] is None and rows[key]["published"] == value
    assert "source" not in rows and "eps_sweep" not in rows

    # a first attack with its own published key takes that key; "pgd" is then left without a measured value
    cfg = parse_config({"attacks": [{"name": "bim", "eps": 0.3}, {"name": "mt-pgd", "eps": 0.3}]}, EvalConfig)
    result.robust_accuracy = {"bim linf eps=0.3": 0.6, "mt-pgd linf eps=0.3": 0.55}
    rows = {r["metric"]: r for r in comparison_rows(result, cfg, {"bim": 61.0, "multi-target": 58.0, "pgd": 1.0})}
    assert (rows["bim linf eps=0.3"]["measured"], rows["bim linf eps=0.3"]["published"]) == (60.0, 61.0)
    assert (rows["mt-pgd linf eps=0.3"]["measured"], rows["mt-pgd linf eps=0.3"]["published"]) == (55.0, 58.0)
    assert rows["pgd"] == {"metric": "pgd", "measured": None, "published": 1.0, "note": "not run by this protocol"}


def test_an_evaluation_is_reused_only_under_the_same_protocol() -> None:
    data, _ = level_data(20)
    cfg = eval_cfg(eps_sweep=[0.07], large_eps=0.45)
    result = EvaluationResult(**json.loads(json.dumps(run_protocol(Linear2(), data, cfg).to_dict())))
    assert result_matches(result, cfg, 20)
    assert not result_matches(result, cfg, 30)  # the protocol would use 30 points of a larger split
    assert not result_matches(result, eval_cfg(eps_sweep=[0.07], large_eps=0.45, n=10), 20)
    assert not result_matches(result, eval_cfg(eps_sweep=[0.07, 0.1], large_eps=0.45), 20)
    assert not result_matches(result, eval_cfg(eps_sweep=[0.07]), 20)
    other = eval_cfg(eps_sweep=[0.07], large_eps=0.45, attacks=[{"name": "pgd", "norm": "linf", "eps": 0.2,
                                                                 "steps": 8}])
    assert not result_matches(result, other, 20)  # what `evaluate --eps 0.2` writes is not the preset's protocol


PRESET = """
name: tiny-repro
description: a seconds-long MNIST MLP, for the reproduce test
train:
  seed: 0
  epochs: 1
  batch_size: 32
  max_steps_per_epoch: 2
  data: {dataset: mnist, val_size: 5000, train_subset: 256}
  model: {name: mlp, kwargs: {hidden: [32]}}
  optimizer: {name: adam, lr: 0.003}
  objective: {name: pgd-at, attack: {name: pgd, norm: linf, eps: 0.1, steps: 3}}
  validation: {n: 64, attack: {name: pgd, norm: linf, eps: 0.1, steps: 3}}
eval:
  n: 50
  grad_check_n: 0
  attacks:
    - {name: pgd, norm: linf, eps: 0.1, steps: 5}
  eps_sweep: [0.05, 0.2]
scales:
  quick: {}
published:
  source: invented for a test
  clean: 99.0
  pgd: 90.0
  eps_sweep: {0.05: 95.0}
"""


def test_reproduce_end_to_end_then_reuses_the_evaluation(tmp_path: Path) -> None:
    preset = tmp_path / "tiny-repro.yaml"
    preset.write_text(PRESET)
    runs = tmp_path / "runs"
    args = ["reproduce", str(preset), "--runs-dir", str(runs), "--device", "cpu", "--no-progress",
            "--latent-plot", "--latent-n", "64"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output + repr(first.exception)
    run = runs / "tiny-repro-quick"
    report = json.loads((run / "reproduce.json").read_text())
    evaluation = EvaluationResult.load(report["evaluation"]["file"])
    rows = {r["metric"]: r for r in report["rows"]}
    assert rows["clean"] == {"metric": "clean", "measured": round(100 * evaluation.clean_accuracy, 2),
                             "published": 99.0, "note": "50 points"}
    pgd_label, pgd_acc = next(iter(evaluation.robust_accuracy.items()))
    assert (rows[pgd_label]["measured"], rows[pgd_label]["published"]) == (round(100 * pgd_acc, 2), 90.0)
    assert (rows["eps=0.05"]["measured"], rows["eps=0.05"]["published"]) == (
        round(100 * evaluation.eps_sweep["0.05"], 2), 95.0)
    assert rows["eps=0.2"]["published"] is None and rows["eps=0.2"]["measured"] is not None
    assert report["budget"]["epochs"] == 1 and report["budget"]["training_attack"]["steps"] == 3
    assert report["machine"]["device"] == "cpu" and report["machine"]["torch"] == torch.__version__
    assert report["wall_times"]["trained_now"] and not report["evaluation"]["reused"]
    md = (run / "reproduce.md").read_text()
    assert "| measured | published |" in md and "invented for a test" in md
    for png in (run / "eval" / "robust_accuracy_vs_eps.png", run / "training_curves.png", run / "latent_pca.png"):
        assert png.read_bytes()[:8] == PNG, png
    ckpts = {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()}
    metrics = (run / "metrics.jsonl").read_text()

    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output + repr(second.exception)
    again = json.loads((run / "reproduce.json").read_text())
    assert again["evaluation"] == {"file": report["evaluation"]["file"], "reused": True}
    assert again["rows"] == report["rows"] and not again["wall_times"]["trained_now"]
    assert {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()} == ckpts  # no retraining
    assert (run / "metrics.jsonl").read_text() == metrics

    third = CliRunner().invoke(app, [*args[:-3], "--reevaluate"])  # no latent plot this time
    assert third.exit_code == 0, third.output + repr(third.exception)
    fresh = json.loads((run / "reproduce.json").read_text())
    assert fresh["evaluation"]["file"] != report["evaluation"]["file"] and not fresh["evaluation"]["reused"]
    assert fresh["rows"] == report["rows"]  # seeded evaluation: the same numbers again
    assert report["published_caveat"] is None

    other = CliRunner().invoke(app, [*args[:-3], "--set", "train.objective.params.natural_weight=1.0",
                                     "--set", "train.name=tiny-other", "--set", "train.epochs=1"])
    assert other.exit_code == 0, other.output + repr(other.exception)
    caveat = json.loads((runs / "tiny-other" / "reproduce.json").read_text())["published_caveat"]
    assert "objective parameters" in caveat and "not this run" in caveat
    assert "Not this preset's reproduction" in (runs / "tiny-other" / "reproduce.md").read_text()


def test_reproduce_unknown_preset_is_an_unknown_name_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["reproduce", "no-such-preset", "--runs-dir", str(tmp_path)])
    assert isinstance(result.exception, UnknownNameError) and "valid presets" in str(result.exception)


def test_budget_reports_the_precision_the_epochs_ran_in_and_resolved_objective_params(tmp_path: Path) -> None:
    """bf16 requested on a device without native bf16 trains in fp32 (the trainer logs it per epoch); the report
    must say fp32, not echo the request. Objective parameters come from the run's state, defaults included."""

    from robustlab.app.reproduce import budget_info, precision_line
    from tests._training_helpers import tiny_config

    cfg = tiny_config(bf16=True)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.json").write_text(
        json.dumps({"epoch": 2, "objective_params": {"natural_weight": 0.0, "start": "uniform"}}))
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0, "bf16": false}\n{"epoch": 1, "bf16": false}\n')
    budget = budget_info(cfg, tmp_path)
    assert budget["bf16_requested"] is True and budget["bf16"] is False
    assert budget["objective_params"] == {"natural_weight": 0.0, "start": "uniform"}
    assert precision_line(budget) == "- precision: fp32 (bf16 requested: True)"
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0, "bf16": true}\n{"epoch": 1, "bf16": false}\n')
    assert budget_info(cfg, tmp_path)["bf16"] == "mixed"
    (tmp_path / "metrics.jsonl").write_text("")
    assert budget_info(cfg, tmp_path)["bf16"] is None


def test_published_caveat_names_what_overrides_changed() -> None:

    from robustlab.app.reproduce import published_caveat
    from tests._training_helpers import tiny_config

    base = tiny_config()
    assert published_caveat(base, tiny_config(epochs=5, seed=1)) is None  # budget and seed: still the same method
    ascl = tiny_config(objective={"name": "ascl", "attack": {"name": "pgd", "norm": "linf", "eps": 0.1, "steps": 3}})
    caveat = published_caveat(base, ascl)
    assert caveat is not None and "objective" in caveat and "'pgd-at' -> 'ascl'" in caveat
    assert "model" in published_caveat(base, tiny_config(model={"name": "mlp", "kwargs": {"hidden": [8]}}))


def test_a_classifier_run_given_to_carso_is_not_a_changed_model(tmp_path: Path) -> None:
    """CARSO presets name only the classifier's architecture; the run passed with --set fills it in. That changes
    the model only if the run's architecture is another one."""
    import yaml

    from robustlab.app.reproduce import published_caveat
    from robustlab.presets import load_preset

    preset = load_preset("carso-mnist", "quick").train

    def with_classifier(model: str) -> TrainConfig:
        folder = tmp_path / model
        folder.mkdir()
        (folder / "config.yaml").write_text(yaml.safe_dump({"model": {"name": model, "kwargs": {}},
                                                            "data": {"dataset": "mnist"}}))
        kwargs = {**preset.model.kwargs, "classifier": str(folder), "which": "last"}
        return preset.model_copy(update={"model": preset.model.model_copy(update={"kwargs": kwargs})})

    assert published_caveat(preset, with_classifier("cw-cnn")) is None
    caveat = published_caveat(preset, with_classifier("small-cnn"))
    assert caveat is not None and "model" in caveat


def test_a_run_at_another_budget_is_flagged_beside_the_published_numbers() -> None:
    """A reduced run (3 epochs on 10,000 images) read against a paper-scale number says so, with both budgets."""
    from robustlab.app.reproduce import budget_comparison, compare_budgets, render_markdown
    from robustlab.presets import load_preset

    reduced = budget_comparison(load_preset("adr-mnist-adv", "reduced"))
    assert reduced["comparable"] is False and reduced["compute_ratio"] > 100
    assert reduced["run"]["training_images"] == 10_000 and reduced["published"]["epochs"] == 100
    assert "NOT the published budget" in reduced["note"] and "3 epochs x 10,000 images" in reduced["note"]
    paper = budget_comparison(load_preset("adr-mnist-adv", "paper"))
    assert paper["comparable"] is True and paper["compute_ratio"] == pytest.approx(1.0)
    assert compare_budgets(reduced["run"], None)["comparable"] is None
    report = {"preset": "p", "scale": "reduced", "published": {"source": "s"}, "evaluation": {"file": "f"},
              "rows": [], "budget_vs_published": reduced, "budget": {
                  "epochs": 3, "completed_epochs": 3, "batch_size": 128, "max_steps_per_epoch": None,
                  "train_subset": 10000, "model": "m", "dataset": "mnist", "objective": "adr", "objective_params": {},
                  "training_attack": None, "bf16": False, "bf16_requested": False},
              "machine": {"device_name": "cpu", "device": "cpu", "torch": "x", "threads": 1}, "wall_times": {},
              "protocol": {}}
    assert "**Budget:** NOT the published budget" in render_markdown(report)
