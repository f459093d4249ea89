"""Entropy detection (ROC/AUC on constructed scores, a full experiment, the plot) and ensemble transferability
(the a^(i,j) matrix, T, nT, a_single and S_ab on a toy ensemble whose outcomes are known by construction)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

from robustlab.analysis.detection import (
    detection_experiment,
    plot_roc,
    prediction_entropy,
    roc_auc,
    roc_curve,
    save_detection,
)
from robustlab.analysis.transferability import print_transferability, save_transferability, summarize, transferability
from robustlab.core.errors import ConfigError, InputError
from robustlab.models import Ensemble, create_model
from robustlab.models.ensemble import MemberView


# ------------------------------------------------------------------------------------------ ROC / AUC
def test_auc_perfect_identical_reversed_and_ties_by_hand() -> None:
    assert roc_auc([0.1, 0.2, 0.3], [0.5, 0.9]) == 1.0
    assert roc_auc([0.7, 0.7, 0.7], [0.7, 0.7]) == 0.5
    assert roc_auc([0.5, 0.9], [0.1, 0.2]) == 0.0
    # adv 1 beats clean 0, ties clean 1, loses to 2 (1.5); adv 3 beats all three (3): 4.5 / 6
    assert roc_auc([0.0, 1.0, 2.0], [1.0, 3.0]) == pytest.approx(0.75)


def test_roc_curve_is_monotone_and_its_area_is_the_auc() -> None:
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 20, (200,), generator=g).double() / 10
    adv = torch.randint(5, 30, (150,), generator=g).double() / 10  # many ties across the two sets
    roc = roc_curve(clean, adv)
    fpr, tpr = roc["fpr"], roc["tpr"]
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert all(b >= a for a, b in zip(fpr, fpr[1:])) and all(b >= a for a, b in zip(tpr, tpr[1:]))
    area = sum((fpr[i + 1] - fpr[i]) * (tpr[i + 1] + tpr[i]) / 2 for i in range(len(fpr) - 1))
    assert area == pytest.approx(roc_auc(clean, adv), abs=1e-12)


@pytest.mark.parametrize(("clean", "adv", "match"), [([], [1.0], "empty"), ([0.1], [math.nan], "NaN")])
def test_bad_scores(clean: list, adv: list, match: str) -> None:
    with pytest.raises(InputError, match=match):
        roc_auc(clean, adv)


# ------------------------------------------------------------------------------------------ entropy detector
class Rows(nn.Module):
    """Member k's logits are 10 x (row k of the 2x3 single-channel image): outcomes are set by the input."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k, self.num_classes = k, 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 * x[:, 0, self.k, :]


def toy_ensemble() -> Ensemble:
    return Ensemble([Rows(0), Rows(1)])


def test_prediction_entropy_by_hand() -> None:
    ens = toy_ensemble()
    x = torch.zeros(2, 1, 2, 3)
    x[1, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    h = prediction_entropy(ens, x)
    assert h[0].item() == pytest.approx(math.log(3), rel=1e-6)
    p = torch.softmax(torch.tensor([10.0, 0.0, 0.0]), 0)
    mean = (p + torch.full((3,), 1 / 3)) / 2
    assert h[1].item() == pytest.approx(float(-(mean * mean.log()).sum()), rel=1e-5)
    members = prediction_entropy(ens, x, source="members")
    assert members[1].item() == pytest.approx((float(-(p * p.log()).sum()) + math.log(3)) / 2, rel=1e-5)
    with pytest.raises(InputError, match="needs an ensemble"):
        prediction_entropy(create_model("mlp", "mnist", hidden=[4]), torch.rand(1, 1, 28, 28), source="members")
    with pytest.raises(InputError, match="'ensemble' or 'members'"):
        prediction_entropy(ens, x, source="member")  # type: ignore[arg-type]


def test_detection_experiment_rows_json_and_plot(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("ensemble", "mnist", member="mlp", k=2, member_kwargs={"hidden": [8]}).eval()
    x = torch.rand(24, 1, 28, 28)
    y = model(x).argmax(1)  # every clean point is correct, so all 24 are kept
    attacks = {"pgd": {"name": "pgd", "steps": 3}, "mim": {"name": "mim", "steps": 3}}
    res = detection_experiment(model, x, y, attacks, [0.05, 0.3])
    assert [(r["attack"], r["eps"]) for r in res.rows] == [("pgd", 0.05), ("pgd", 0.3), ("mim", 0.05), ("mim", 0.3)]
    for row in res.rows:
        assert row["n_clean"] == 24 and 0 <= row["n_adversarial"] <= 24
        assert math.isnan(row["auc"]) if row["n_adversarial"] == 0 else 0.0 <= row["auc"] <= 1.0
    assert res.rows[1]["n_adversarial"] > 0  # eps 0.3 breaks an untrained net
    everything = detection_experiment(model, x, y, {"pgd": {"name": "pgd", "steps": 3}}, [0.3], only_successful=False)
    assert everything.rows[0]["n_adversarial"] == 24
    saved = json.loads(save_detection(res, tmp_path / "det.json").read_text())
    assert saved["rows"][1]["auc"] == pytest.approx(res.auc("pgd", 0.3))
    png = plot_roc(res, tmp_path / "roc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError, match="needs a 'name'"):
        detection_experiment(model, x, y, {"pgd": {"steps": 3}}, [0.1])


# ------------------------------------------------------------------------------------------ transferability
R, W = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]  # strong right / strong wrong (label 0)
r, w = [0.3, 0.0, 0.0], [0.0, 0.3, 0.0]  # weak right / weak wrong: the strong member dominates the average
ADV = {  # rows (member 1, member 2) per sample
    0: [(w, R), (w, R), (W, W), (W, r)],  # x_a^1: a11 = 0, a12 = 75, en right only on the first two: 50
    1: [(R, w), (r, W), (W, W), (w, w)],  # x_a^2: a21 = 50, a22 = 0, en right only on the first: 25
    "en": [(R, R), (R, w), (R, w), (W, W)],  # x_a^en: S11, S10, S10, S00; en right on the first three: 75
}


def _images(rows: list) -> torch.Tensor:
    return torch.tensor([[list(pair)] for pair in rows])


def test_transferability_matrix_on_a_toy_ensemble_with_known_outcomes(tmp_path: Path) -> None:
    ens = toy_ensemble()

    def attack(src: nn.Module):
        key = [m is src.net for m in ens.members].index(True) if isinstance(src, MemberView) else "en"
        return lambda x, y: _images(ADV[key])

    x, y = torch.zeros(4, 1, 2, 3), torch.zeros(4, dtype=torch.long)
    res = transferability(ens, x, y, attack, label="toy")
    assert res.names == ["1", "2", "en"]
    assert res.accuracy == [[0.0, 75.0, 50.0], [50.0, 0.0, 25.0], [75.0, 25.0, 75.0]]
    assert res.subsets == {"11": 25.0, "10": 50.0, "01": 0.0, "00": 25.0}
    assert res.T == 125.0  # a12 - a11 + a21 - a22 = 75 - 0 + 50 - 0
    assert res.nT == pytest.approx(100 - 75 - 25) and res.a_single == pytest.approx(75 - 25)
    assert res.a(1, 2) == 75.0 and res.a("en", "en") == 75.0
    console = Console(record=True, width=120)
    print_transferability(res, console)
    text = console.export_text()
    assert "a_single" in text and "S01" in text and "75.0" in text
    saved = json.loads(save_transferability(res, tmp_path / "t.json").read_text())
    assert saved["T"] == 125.0 and saved["subsets"]["10"] == 50.0


def test_summary_generalises_to_three_members_and_refuses_bad_shapes() -> None:
    correct = torch.zeros(4, 4, 2, dtype=torch.bool)
    correct[0, 1] = correct[0, 2] = True  # the examples against member 1 transfer to no one
    flags = torch.tensor([[True, False], [True, False], [True, True]])
    acc, t, nt, single, subsets = summarize(correct, flags)
    assert t == pytest.approx(100.0)  # mean over j != 1 of a^(1,j) = 100, a^(1,1) = 0, others 0
    assert subsets["111"] == 50.0 and subsets["001"] == 50.0 and sum(subsets.values()) == pytest.approx(100)
    assert nt == pytest.approx(100.0) and single == pytest.approx(-50.0)
    with pytest.raises(InputError, match="K >= 2"):
        summarize(torch.zeros(2, 2, 3, dtype=torch.bool), torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ConfigError, match="needs an ensemble"):
        transferability(create_model("mlp", "mnist", hidden=[4]), torch.rand(2, 1, 28, 28), torch.zeros(2).long(),
                        lambda m: (lambda x, y: x))


def test_cli_detect_and_transfer_write_their_results(tmp_path) -> None:
    """`robustlab detect` / `robustlab transfer` on a trained 2-member ensemble run: tables, JSON and the ROC plot."""
    import json

    from typer.testing import CliRunner

    from robustlab.cli import app
    from robustlab.training.trainer import Trainer
    from tests._training_helpers import tiny_config

    run = tmp_path / "ens"
    members = {"member": "mlp", "k": 2, "member_kwargs": {"hidden": [16]}}
    cfg = tiny_config(epochs=1, max_steps_per_epoch=2, validation={"n": 16, "attack": None},
                      model={"name": "ensemble", "kwargs": members},
                      objective={"name": "adv-en", "attack": {"name": "pgd", "norm": "linf", "eps": 0.1, "steps": 2}})
    Trainer(cfg, run, show_progress=False).fit()
    runner = CliRunner()
    det = runner.invoke(app, ["detect", str(run), "--eps", "0.1,0.3", "--attacks", "pgd,fgsm", "--steps", "2",
                              "--n", "32", "--device", "cpu"])
    assert det.exit_code == 0, det.output
    saved = json.loads((run / "analysis" / "detection.json").read_text())
    assert [(r["attack"], r["eps"]) for r in saved["rows"]] == [("pgd", 0.1), ("fgsm", 0.1), ("pgd", 0.3),
                                                               ("fgsm", 0.3)]
    assert (run / "analysis" / "detection_roc.png").stat().st_size > 0
    tr = runner.invoke(app, ["transfer", str(run), "--eps", "0.3", "--steps", "2", "--n", "32", "--device", "cpu"])
    assert tr.exit_code == 0, tr.output
    t = json.loads((run / "analysis" / "transferability.json").read_text())
    assert t["names"] == ["1", "2", "en"] and t["n"] == 32
    bad = runner.invoke(app, ["detect", str(run), "--eps", "0.1,x"])
    assert bad.exit_code != 0


def test_analysis_defaults_follow_the_runs_dataset(tmp_path) -> None:
    """detect/transfer default to the thesis's CIFAR-10 protocol on CIFAR-10 runs (ch. 4 A8: PGD/BIM/MIM-20, eps
    8/255, step 1/255; T6: PGD-20, step 2/255) and to the run's own training eps elsewhere, never MNIST's 0.3."""
    import yaml

    from robustlab.app.analysis import detection_defaults, transfer_defaults

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"objective": {"attack": {"norm": "linf", "eps": 0.1}}}))
    cifar = detection_defaults(run, "cifar10")
    assert cifar.eps == (8 / 255,) and cifar.attacks == ("pgd", "bim", "mim") and (cifar.steps, cifar.step_size) == (
        20, 1 / 255)
    assert transfer_defaults(run, "cifar10").step_size == 2 / 255
    fashion = detection_defaults(run, "fashion-mnist")
    assert fashion.eps == (0.1,) and fashion.step_size is None  # the run's training eps, step eps / 10
    (run / "config.yaml").unlink()
    assert transfer_defaults(run, "fashion-mnist").eps == (0.1,)  # no config: the dataset's standard radius
