"""Tabular robustness: the registry's shuttle table (river's file, checksummed, split and scaled), the
tabular-shuttle presets, attacks on N x d rows, and Square's refusal of rows (why the table protocol omits it)."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robustlab.attacks.autoattack import AutoAttack
from robustlab.attacks.square import Square
from robustlab.core.errors import ChecksumError, InputError
from robustlab.core.threat import ThreatModel
from robustlab.data import FloatData, load_dataset, sources
from robustlab.data.tables import TEST_SIZE, table_split_rows
from robustlab.evaluation.protocol import run_protocol
from robustlab.io.atomic import sha256_file
from robustlab.models import create_model
from robustlab.presets import load_preset
from robustlab.runs.loading import load_trained_model
from robustlab.training.trainer import Trainer

RIVER_FILE = sources.shuttle_package_file()
needs_river = pytest.mark.skipif(RIVER_FILE is None, reason="river's shuttle.csv.gz is absent: install it with "
                                 "`pip install --no-deps river==0.26.1` (robustlab reads only the data file)")


def _write_fake_shuttle(path: Path, seed: int = 0) -> Path:
    """A file in river's format (header f1..f9,anomaly; integer rows; 30% anomalies, separable on f1)."""
    rng = np.random.default_rng(seed)
    n = sources.SHUTTLE_ROWS
    y = (rng.random(n) < 0.3).astype(int)
    x = rng.integers(-50, 50, (n, 9))
    x[:, 0] = np.where(y == 1, rng.integers(60, 100, n), rng.integers(0, 40, n))
    x[table_split_rows(n, "shuttle", "test")[0], 1] = 10_000  # an outlier only a test row holds: must be clipped
    lines = [",".join([*sources.SHUTTLE_COLUMNS, "anomaly"])]
    lines += [",".join(map(str, [*r, c])) for r, c in zip(x.tolist(), y.tolist())]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


@pytest.fixture()
def fake_shuttle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The registry's shuttle replaced by a synthetic file of the same format whose checksum is the expected one."""
    path = _write_fake_shuttle(tmp_path / "shuttle.csv.gz")
    monkeypatch.setattr(sources, "shuttle_package_file", lambda: path)
    monkeypatch.setattr(sources, "SHUTTLE_CSV_SHA256", sha256_file(path))
    return path


@needs_river
def test_river_shuttle_loads_checksummed_split_and_scaled() -> None:
    assert sha256_file(RIVER_FILE) == sources.SHUTTLE_CSV_SHA256
    parts = {s: load_dataset("shuttle", s) for s in ("train", "val", "test", "train+val")}
    assert {s: len(d) for s, d in parts.items()} == {"train": 36000, "val": 4000, "test": 9097, "train+val": 40000}
    for d in parts.values():
        assert isinstance(d, FloatData) and d.inputs.shape[1:] == (9,) and d.inputs.dtype == torch.float32
        assert float(d.inputs.min()) >= 0 and float(d.inputs.max()) <= 1 and d.sha256 == sources.SHUTTLE_CSV_SHA256
        assert set(d.labels.unique().tolist()) == {0, 1} and d.info.class_names == ("normal", "anomaly")
    assert int(parts["train+val"].labels.sum()) + int(parts["test"].labels.sum()) == 3511  # ODDS: 3,511 anomalies
    raw = sources.load_shuttle_package(RIVER_FILE)
    rows = table_split_rows(len(raw.labels), "shuttle", "train+val")
    assert parts["test"].scaler.low == raw.features[rows].min(axis=0).tolist()  # fitted without the test rows
    assert parts["test"].scaler.high == raw.features[rows].max(axis=0).tolist()
    assert "river" not in sys.modules  # only its data file is read


def test_splits_are_fixed_disjoint_and_cover_the_table() -> None:
    n = sources.SHUTTLE_ROWS
    test, train, val = (table_split_rows(n, "shuttle", s) for s in ("test", "train", "val"))
    assert len(test) == TEST_SIZE["shuttle"] and np.array_equal(test, table_split_rows(n, "shuttle", "test"))
    assert not set(test) & set(train) and not set(test) & set(val) and not set(train) & set(val)
    assert len(test) + len(train) + len(val) == n
    assert np.array_equal(np.sort(np.concatenate([train, val])), table_split_rows(n, "shuttle", "train+val"))
    with pytest.raises(InputError, match="val_size"):
        table_split_rows(n, "shuttle", "train", val_size=n)


def test_a_file_that_fails_its_checksum_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_fake_shuttle(tmp_path / "shuttle.csv.gz")
    monkeypatch.setattr(sources, "shuttle_package_file", lambda: path)
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        load_dataset("shuttle", "test")


def test_test_values_outside_the_training_range_are_clipped_and_counted(fake_shuttle: Path) -> None:
    test = load_dataset("shuttle", "test")
    trainval = load_dataset("shuttle", "train+val")
    assert trainval.clipped == 0 and test.scaler.low == trainval.scaler.low
    assert test.scaler.high[1] < 10_000 and test.clipped >= 1 and float(test.inputs[0, 1]) == 1.0
    raw = sources.load_shuttle_package(fake_shuttle)
    outside = raw.features[table_split_rows(len(raw.labels), "shuttle", "test")]
    low, high = np.array(test.scaler.low), np.array(test.scaler.high)
    assert test.clipped == int(((outside < low) | (outside > high)).sum())


def test_a_tiny_slice_trains_and_evaluates_end_to_end(fake_shuttle: Path, tmp_path: Path) -> None:
    """PGD-AT of the preset's MLP on 2,000 rows, then its protocol (PGD, AutoAttack APGD-CE + FAB-T) on 40 rows."""
    preset = load_preset("tabular-shuttle-pgd-at", "quick")
    cfg = preset.train.model_copy(update={"epochs": 3, "batch_size": 64, "device": "cpu", "name": "tab",
                                          "optimizer": preset.train.optimizer.model_copy(update={"lr": 0.01})})
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"train_subset": 2000}),
                                 "validation": cfg.validation.model_copy(update={"n": 200})})
    Trainer(cfg, tmp_path / "tab", show_progress=False).fit()
    model, meta = load_trained_model(tmp_path / "tab", "best")
    assert meta["dataset"] == "shuttle"
    aa = preset.eval.autoattack.model_copy(update={"n": 40, "attack_kwargs": {"apgd-ce": {"steps": 20},
                                                                              "fab-t": {"steps": 20}}})
    ev = preset.eval.model_copy(update={"n": 40, "autoattack": aa, "eps_sweep": [], "grad_check_n": 20})
    result = run_protocol(model, load_dataset("shuttle", "test"), ev)
    labels = load_dataset("shuttle", "test").labels[:40]
    assert result.n == 40 and result.clean_accuracy >= 0.95  # the fake table is separable on f1
    assert 0 < int(labels.sum()) <= sum(c for c, y in zip(result.per_sample["clean"], labels.tolist()) if y) + 1
    names = list(result.robust_accuracy)
    assert any(n.endswith(": apgd-ce") for n in names) and any(n.endswith(": fab-t") for n in names)
    assert result.worst_case_accuracy <= result.clean_accuracy


def test_the_table_protocol_is_autoattack_without_square_or_apgd_t() -> None:
    for variant in ("standard", "pgd-at", "trades"):
        p = load_preset(f"tabular-shuttle-{variant}", "quick")
        aa = p.eval.autoattack
        assert aa is not None and aa.version == "custom" and aa.attacks == ["apgd-ce", "fab-t"] and aa.eps == 0.05
        assert p.train.data.dataset == "shuttle" and p.train.model.name == "mlp"
        assert "Square" in p.notes and "APGD-T needs at least 4 classes" in p.notes


def test_mlp_takes_rows_and_white_box_attacks_run_on_them() -> None:
    """create_model's (d,) shape gives an MLP over N x d rows; APGD-CE, APGD-T and FAB-T attack them in the ball."""
    model = create_model("mlp", "shuttle", hidden=[16]).eval()
    assert model(torch.rand(5, 9)).shape == (5, 2)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(9, 32), nn.ReLU(), nn.Linear(32, 5)).eval()
    x = torch.rand(24, 9)
    y = net(x).argmax(1)
    result = AutoAttack(net, ThreatModel("linf", 0.1), version="custom", attacks=["apgd-ce", "apgd-t", "fab-t"],
                        attack_kwargs={"apgd-ce": {"steps": 20}, "apgd-t": {"steps": 20, "n_target_classes": 4},
                                       "fab-t": {"steps": 20, "n_target_classes": 4}}, seed=0).run(x, y)
    assert result.x_adv.shape == x.shape and float((result.x_adv - x).abs().max()) <= 0.1 + 1e-6
    assert float(result.robust["fab-t"].float().mean()) < 1.0  # the attacks do break points of a random net
    # 2 classes (the shuttle table): no APGD-T
    with pytest.raises(InputError, match="the model has 2 classes: the DLR loss of apgd-t needs at least 3"):
        AutoAttack(net[:-1].append(nn.Linear(32, 2)).eval(), ThreatModel("linf", 0.1), version="custom",
                   attacks=["apgd-t"], seed=0).run(x, torch.zeros(24, dtype=torch.int64))


def test_square_refuses_rows_and_runs_on_rows_viewed_as_images() -> None:
    """Square's window search needs N x C x H x W, so N x d rows are refused; this is why the table protocol omits it
    (if Square learns rows, update the tabular-shuttle notes). Viewed as 1 x 1 x d images it searches one feature at
    a time and stays in the ball."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(9, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = torch.rand(8, 9)
    y = net(x).argmax(1)
    with pytest.raises(InputError, match="for table rows use APGD or FAB"):
        Square(net, ThreatModel("linf", 0.1), queries=10, seed=0)(x, y)

    class Rows(nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return net(images.flatten(1))

    images = x.reshape(8, 1, 1, 9)
    adv = Square(Rows(), ThreatModel("linf", 0.1), queries=50, seed=0)(images, y)
    assert adv.shape == images.shape and float((adv - images).abs().max()) <= 0.1 + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1


def test_the_run_report_draws_table_rows() -> None:
    """The report's adversarial grid takes N x d rows (a 1 x d strip per row) as well as images."""
    from robustlab.report.adversarial import adversarial_grid_png

    x = torch.rand(3, 9)
    png = adversarial_grid_png(x, (x + 0.05).clamp(0, 1), torch.tensor([0, 1, 0]), torch.tensor([0, 1, 1]),
                               torch.tensor([1, 1, 1]), title="rows")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_table_with_per_feature_mean_std_gets_a_message_that_says_why() -> None:
    from types import SimpleNamespace

    table = SimpleNamespace(name="rows", num_classes=2, shape=(9,), mean=[0.5] * 9, std=[0.2] * 9)
    with pytest.raises(InputError, match="one shared value each .* scaled to \\[0, 1\\]"):
        create_model("mlp", table, hidden=[8])
    shared = SimpleNamespace(name="rows", num_classes=2, shape=(9,), mean=[0.5], std=[0.2])
    assert create_model("mlp", shared, hidden=[8])(torch.rand(3, 9)).shape == (3, 2)
