"""CARSO's classifier-only protocol (the paper's MNIST numbers): AutoAttack on the classifier alone, judged on CARSO,
reported apart from the end-to-end protocol and never taken as the model's worst case."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from robustlab.attacks.autoattack import AutoAttack
from robustlab.core.config import parse_config
from robustlab.core.errors import ConfigError
from robustlab.core.threat import ThreatModel
from robustlab.data import ImageData, dataset_info
from robustlab.evaluation.classifier_only import judge_seed, run_classifier_only
from robustlab.evaluation.config import AutoAttackConfig, EvalConfig
from robustlab.evaluation.protocol import run_protocol
from robustlab.models import create_model
from robustlab.purification.carso import carso_of
from robustlab.store import ResultsStore
from robustlab.store.leaderboard import leaderboard_rows, render_tables
from tests._store_fixtures import make_result, make_run

#: AutoAttack standard with every attack cut short (a CPU test, same plan and order as the reference).
FAST_STANDARD = {"version": "standard", "norm": "linf", "eps": 0.3,
                 "attack_kwargs": {"apgd-ce": {"steps": 3}, "apgd-t": {"steps": 3, "n_target_classes": 2},
                                   "fab-t": {"steps": 3, "n_target_classes": 2}, "square": {"queries": 20}}}


def _carso(sampling: str = "prior") -> torch.nn.Module:
    torch.manual_seed(0)
    m = create_model("carso", "mnist", classifier_model="mlp", classifier_dataset="mnist",
                     layers="net.hidden.fc1,net.fc", latent_dim=8, cond_dim=16, joint_dim=12, ensemble_size=2)
    carso_of(m)[0].sampling = sampling
    return m.eval()


def _points(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_points_are_the_classifiers_autoattack_points_judged_on_carso() -> None:
    m = _carso()
    net, _ = carso_of(m)
    x, _ = _points()
    with torch.no_grad():  # labels: the classifier's own for half the points, CARSO's for the rest
        y = torch.cat([net.classifier(x[:4]).argmax(1), m(x[4:]).argmax(1)])
    aa = AutoAttackConfig(**FAST_STANDARD)
    clean = torch.ones(len(x), dtype=torch.bool)  # judge every point, so the verdict is CARSO's alone
    out = run_classifier_only(m, x, y, clean, aa, seed=7, batch_size=4)
    ref = AutoAttack(net.classifier, ThreatModel("linf", 0.3), version="standard", attack_kwargs=aa.attack_kwargs,
                     seed=7, batch_size=4).run(x, y)
    assert out.autoattack.attacks == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert torch.equal(out.x_adv, ref.x_adv)  # exactly the classifier's AutoAttack points (same seed)
    assert torch.equal(out.on_classifier, ref.robust_mask)
    with torch.no_grad():
        torch.manual_seed(judge_seed(7))  # the judge: one fresh CARSO pass under its own seed
        on_carso = m(out.x_adv).argmax(1) == y
        on_classifier = net.classifier(out.x_adv).argmax(1) == y
    assert torch.equal(out.on_carso, on_carso)
    assert not torch.equal(on_carso, on_classifier)  # so the check above tells CARSO's verdict from the classifier's
    assert judge_seed(7) != judge_seed(8)


def test_protocol_reports_it_apart_and_the_worst_case_ignores_it() -> None:
    m = _carso(sampling="mean")
    x, y = _points(6)
    data = ImageData((x * 255).to(torch.uint8), y, dataset_info("mnist"), "test", "synthetic")
    pgd = {"name": "pgd", "norm": "linf", "eps": 0.3, "steps": 2, "random_start": False}
    cfg = parse_config({"attacks": [pgd], "grad_check_n": 0, "classifier_only": FAST_STANDARD}, EvalConfig)
    result = run_protocol(m, data, cfg)
    co = result.classifier_only
    assert set(co["accuracy"]) == {"autoattack-standard linf eps=0.3 n=6 (classifier-only, judged on CARSO)",
                                   "autoattack-standard linf eps=0.3 n=6 (classifier-only, judged on the classifier)"}
    assert "not CARSO's robustness" in co["measures"]
    assert list(result.robust_accuracy) == ["pgd-2 random_start=False linf eps=0.3"]
    flags = result.per_sample
    worst = torch.tensor(flags["clean"]) & torch.tensor(flags[next(iter(result.robust_accuracy))])
    assert result.worst_case_accuracy == pytest.approx(worst.float().mean().item())
    assert result.protocol[-1]["name"] == "classifier-only autoattack-standard"
    assert result.protocol[-1]["in_worst_case"] is False
    with pytest.raises(ValueError, match="'attacks' or 'autoattack'"):  # never the whole protocol
        parse_config({"classifier_only": FAST_STANDARD}, EvalConfig)
    with pytest.raises(ConfigError, match="CARSO"):
        run_protocol(create_model("mlp", "mnist", hidden=[8]), data, cfg)


def test_classifier_only_autoattack_keeps_a_state_file_and_resumes(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    m = _carso(sampling="mean")
    x, y = _points(6)
    data = ImageData((x * 255).to(torch.uint8), y, dataset_info("mnist"), "test", "synthetic")
    pgd = {"name": "pgd", "norm": "linf", "eps": 0.3, "steps": 1, "random_start": False}
    cfg = parse_config({"attacks": [pgd], "grad_check_n": 0, "classifier_only": FAST_STANDARD}, EvalConfig)
    first = run_protocol(m, data, cfg, state_dir=tmp_path)
    states = sorted(p.name for p in tmp_path.iterdir())
    assert states == ["classifier-only-autoattack-standard-linf-0.3-n6-seed0.state.safetensors"]
    with caplog.at_level(logging.INFO, logger="robustlab"):
        second = run_protocol(m, data, cfg, state_dir=tmp_path)
    assert any("resuming the classifier-only AutoAttack" in r.getMessage() for r in caplog.records)
    assert second.classifier_only["accuracy"] == first.classifier_only["accuracy"]


def test_leaderboard_never_ranks_or_pairs_the_classifier_only_number(tmp_path: Path) -> None:
    published = {"source": "t", "clean": 99.0, "autoattack": 90.0, "classifier-only": 10.0}
    run = make_run(tmp_path, "carso", method="carso", published=published)
    result = make_result(attacks={"pgd-40 linf eps=0.3": 0.6}, aa=True, worst=0.5)
    result.protocol.append({"name": "classifier-only autoattack-standard", "judged_on": "carso",
                            "in_worst_case": False, "version": "standard", "norm": "linf", "eps": 0.3})
    result.classifier_only = {"measures": "m", "n": 100,
                              "accuracy": {"autoattack-standard linf eps=0.3 n=100 (classifier-only, judged on CARSO)":
                                           0.95}}
    store = ResultsStore(tmp_path / "store.sqlite")
    store.record(result, run)
    (row,) = leaderboard_rows(store)
    assert row["worst_case_accuracy"] == 0.5  # the end-to-end worst case, not the classifier-only 0.95
    assert row["paper_robust"] == 90.0  # published classifier-only 10.0 is no counterpart of the worst case
    assert row["protocol"].endswith("classifier-only autoattack-standard (judged on CARSO, not in worst case)")
    assert "autoattack-standard +" in row["protocol"]  # the end-to-end AutoAttack keeps its plain name
    table = render_tables([row])[0]
    assert "never in the worst case" in str(table.caption)
    from rich.console import Console

    console = Console(width=300, record=True)
    console.print(table)
    assert "(judged on CARSO, not in worst case)" in console.export_text()  # shown, not eaten as markup
    assert store.get(row["id"]).classifier_only["accuracy"]
    assert len(leaderboard_rows(store, protocol="classifier-only")) == 1


def test_carso_mnist_ablation_rows_and_paper_scale_classifier_only() -> None:
    from robustlab.presets import list_presets, load_preset

    rows = ("carso-mnist", "carso-mnist-z0", "carso-mnist-vote", "carso-mnist-softmax", "carso-mnist-e4")
    assert set(rows) <= set(list_presets())
    kwargs = {n: load_preset(n, "quick").train.model.kwargs for n in rows}
    assert kwargs["carso-mnist"].get("sampling", "prior") == "prior" and kwargs["carso-mnist"]["ensemble_size"] == 8
    assert (kwargs["carso-mnist-z0"]["sampling"], kwargs["carso-mnist-z0"]["ensemble_size"]) == ("mean", 1)
    assert kwargs["carso-mnist-vote"]["aggregation"] == "count" and kwargs["carso-mnist-e4"]["ensemble_size"] == 4
    assert kwargs["carso-mnist-softmax"]["aggregation"] == "softmax"
    assert load_preset("carso-mnist-self", "quick").train.objective.params["self_attacks"][0]["name"] == "pgd"
    paper = load_preset("carso-mnist", "paper").eval
    assert paper.classifier_only is not None and paper.classifier_only.version == "standard"
    assert paper.autoattack is not None and paper.autoattack.version == "rand"  # the end-to-end protocol stays
    assert load_preset("carso-mnist", "quick").eval.classifier_only is None


def test_classifier_only_protocol_choice_keeps_the_end_to_end_protocol() -> None:
    from robustlab.evaluation.defaults import (
        PROTOCOL_CHOICES,
        at_eps,
        protocol_for_model,
        protocol_for_run,
        with_classifier_only,
    )

    base = {"attacks": [{"name": "pgd", "norm": "linf", "eps": 0.3, "steps": 5}], "n": 10}
    out = with_classifier_only(base)
    assert "classifier-only" in PROTOCOL_CHOICES
    assert out["attacks"] == base["attacks"] and out["n"] == 10
    assert out["classifier_only"] == {"version": "standard", "norm": "linf", "eps": 0.3}
    assert at_eps(out, 0.2)["classifier_only"]["eps"] == 0.2
    parse_config(out, EvalConfig)
    run_protocol_dict, _ = protocol_for_run(Path("unused"), protocol="classifier-only", preset_eval=base, eps=0.2)
    assert run_protocol_dict["attacks"][0]["eps"] == run_protocol_dict["classifier_only"]["eps"] == 0.2
    own = protocol_for_model("classifier-only", "linf:0.1")
    assert own["attacks"] and own["classifier_only"]["eps"] == pytest.approx(0.1)


def test_run_report_shows_the_classifier_only_numbers_apart(tmp_path: Path) -> None:
    from robustlab.report import build_run_report

    run = make_run(tmp_path, "carso", method="carso")
    result = make_result(attacks={"pgd-40 linf eps=0.3": 0.6})
    result.protocol.append({"name": "classifier-only autoattack-standard", "judged_on": "carso",
                            "in_worst_case": False, "version": "standard", "norm": "linf", "eps": 0.3})
    result.classifier_only = {"measures": "AutoAttack crafted on CARSO's classifier alone", "n": 100,
                              "accuracy": {"autoattack-standard linf eps=0.3 n=100 (classifier-only, judged on CARSO)":
                                           0.8}}
    (run / "eval").mkdir()
    result.save(run / "eval" / "best-1.json")
    with ResultsStore(tmp_path / "store.sqlite") as store:
        html = build_run_report(run, store, grid_n=2, grid_steps=2)
    assert "classifier-only protocol (not this model" in html
    assert "(classifier-only, judged on CARSO)" in html and "80.00" in html
