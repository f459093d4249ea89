"""HTML report in headless Chromium (images decode, no console errors, numbers equal the store's), run states
(still training, no evaluation), and the trainer's optional TensorBoard logging."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from robustlab.cli import app
from robustlab.core.errors import ConfigError, InputError
from robustlab.report import build_run_report
from robustlab.store import ResultsStore
from robustlab.training.trainer import Trainer
from tests._training_helpers import tiny_config

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is absent (make setup installs it)")

# Appended to a copy of the page in the test only: reports whether every <img> decoded, into the DOM.
CHECKER = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const d = document.createElement('div'); d.id = 'img-check';
  d.setAttribute('data-total', imgs.length); d.setAttribute('data-bad', JSON.stringify(bad));
  document.body.appendChild(d);
});</script>"""


def load_in_chromium(html: str, tmp: Path) -> tuple[str, list[str]]:
    """(DOM after load, console lines) of ``html`` with the image checker, in headless Chromium."""
    page = tmp / "page.html"
    page.write_text(html.replace("</body>", CHECKER + "</body>"))
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


class _Cells(HTMLParser):
    """Text of every ``<td data-col>`` per ``<tr data-eval-id>`` of one table, plus every img src and link."""

    def __init__(self, table_id: str):
        super().__init__()
        self.table_id, self.inside, self.row, self.col = table_id, False, None, None
        self.cells: dict[int, dict[str, str]] = {}
        self.srcs: list[str] = []
        self.check: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a.get("src", ""))
        if tag in ("a", "link", "script", "iframe") and (a.get("href") or a.get("src")):
            self.srcs.append(a.get("href") or a.get("src"))
        if tag == "div" and a.get("id") == "img-check":
            self.check = a
        if tag == "table":
            self.inside = a.get("id") == self.table_id
        if self.inside and tag == "tr" and "data-eval-id" in a:
            self.row = int(a["data-eval-id"])
            self.cells[self.row] = {}
        if self.inside and tag == "td" and self.row is not None:
            self.col = a.get("data-col")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self.col = None
        if tag == "table":
            self.inside = False

    def handle_data(self, data: str) -> None:
        if self.col:
            self.cells[self.row][self.col] = self.cells[self.row].get(self.col, "") + data


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory: pytest.TempPathFactory, mnist_available: None) -> tuple[Path, Path]:
    """A tiny trained MLP run, evaluated through the CLI (PGD + eps sweep), recorded in its own store."""
    root = tmp_path_factory.mktemp("report")
    run = root / "runs" / "tiny"
    Trainer(tiny_config(epochs=2), run, show_progress=False).fit()
    store = root / "results.sqlite"
    protocol = {"n": 24, "attacks": [{"name": "pgd", "norm": "linf", "eps": 0.1, "steps": 5}],
                "eps_sweep": [0.05, 0.1], "eps_sweep_n": 12, "large_eps": 0.5, "grad_check_n": 8}
    (run / "preset.yaml").write_text(yaml.safe_dump({"preset": "tiny", "scale": "quick", "eval": protocol,
                                                     "published": {"source": "made up", "pgd": 42.0}}))
    out = CliRunner().invoke(app, ["evaluate", str(run), "--no-progress", "--device", "cpu", "--store", str(store)])
    assert out.exit_code == 0, out.output
    assert "recorded in the results store" in out.output
    return run, store




@needs_chromium
def test_report_in_chromium(evaluated_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, store_path = evaluated_run
    with ResultsStore(store_path) as store:
        html = build_run_report(run, store, grid_n=4, grid_steps=5)
        rows = store.rows(run_dir=run)
        attacks = store.attack_accuracies(r["id"] for r in rows)
    assert len(rows) == 1  # the CLI recorded the evaluation; the report's import found nothing new
    dom, console = load_in_chromium(html, tmp_path)
    assert console == [], console
    cells = _Cells("evaluations")
    cells.feed(dom)
    assert cells.check, "the image checker did not run"
    assert json.loads(cells.check["data-bad"]) == [] and int(cells.check["data-total"]) == 3  # curves, sweep, grid
    assert all(s.startswith("data:image/png;base64,") for s in cells.srcs)  # nothing fetched from anywhere
    for r in rows:
        got = cells.cells[r["id"]]
        assert got["clean_accuracy"] == f"{100 * r['clean_accuracy']:.2f}"
        assert got["worst_case_accuracy"] == f"{100 * r['worst_case_accuracy']:.2f}"
        assert got["n"] == str(r["n"]) == "24" and got["protocol"] == r["protocol"] == "pgd-5"
        # a quick-scale run: the published number is marked as the paper's budget, not this run's
        assert got["paper_robust"] == f"{r['paper_robust']:.2f} (published, at the paper's budget, not this run's)"
        assert r["paper_robust"] == 42.0
        per = _Cells(f"attacks-{r['id']}")
        per.feed(dom.replace("<tr>", f'<tr data-eval-id="{r["id"]}">'))
        assert per.cells[r["id"]]["attack_accuracy"] == f"{100 * attacks[r['id']][0][1]:.2f}"
    assert "Training is not finished" not in dom and "No evaluation" not in dom


@needs_chromium
def test_the_chromium_check_catches_broken_images_and_console_errors(tmp_path: Path) -> None:
    html = ('<!DOCTYPE html><html><body><img alt="broken" src="data:image/png;base64,AAAA">'
            '<script>console.error("boom")</script></body></html>')
    dom, console = load_in_chromium(html, tmp_path)
    cells = _Cells("none")
    cells.feed(dom)
    assert json.loads(cells.check["data-bad"]) == ["broken"]
    assert any("boom" in line for line in console)


def test_still_training_and_unevaluated_runs_get_a_notice(evaluated_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = evaluated_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "eval")
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    (copy / "config.yaml").write_text(yaml.safe_dump({**cfg, "epochs": 5}))
    with ResultsStore(tmp_path / "s.sqlite") as store:
        html = build_run_report(copy, store, grid_n=2, grid_steps=2)
        assert store.count() == 0
    assert "Training is not finished: 2 of 5 epochs" in html
    assert f"No evaluation of this run is recorded: run `robustlab evaluate {copy}`" in html
    assert len(re.findall("<img ", html)) == 2  # training curves and the example grid still shown
    with pytest.raises(InputError, match="not a run folder"), ResultsStore(tmp_path / "s.sqlite") as store:
        build_run_report(tmp_path / "nothing", store)


def test_report_all_imports_eval_files_and_writes_an_index(evaluated_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = evaluated_run
    runs = tmp_path / "runs"
    shutil.copytree(run, runs / "tiny")
    store = tmp_path / "fresh.sqlite"  # empty: the report records the run's eval JSON first
    out = CliRunner().invoke(app, ["report", "--all", "--runs-dir", str(runs), "--store", str(store),
                                   "--grid-n", "2", "--grid-steps", "2"])
    assert out.exit_code == 0, out.output
    assert (runs / "tiny" / "report.html").exists()
    index = (runs / "index.html").read_text()
    assert 'href="tiny/report.html"' in index
    with ResultsStore(store) as db:
        (row,) = db.rows()
        assert f"{100 * row['worst_case_accuracy']:.2f}" in index
    bad = CliRunner().invoke(app, ["report"])
    assert bad.exit_code != 0 and "pass either a run folder or --all" in str(bad.exception)


def test_tensorboard_missing_package_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'robustlab\[tensorboard\]'"):
        Trainer(tiny_config(tensorboard=True), tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_tensorboard_logs_scalars_and_grid_without_changing_training(tmp_path: Path, mnist_available: None) -> None:
    pytest.importorskip("tensorboard", reason="optional extra: pip install 'robustlab[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    small = {"epochs": 1, "data": {"dataset": "mnist", "val_size": 5000, "train_subset": 64}}
    plain = Trainer(tiny_config(**small), tmp_path / "plain", show_progress=False)
    plain.fit()
    logged = Trainer(tiny_config(tensorboard=True, **small), tmp_path / "tb", show_progress=False)
    logged.fit()
    for a, b in zip(plain.model.state_dict().values(), logged.model.state_dict().values()):
        assert torch.equal(a, b)  # logging draws no training randomness
    ea = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    ea.Reload()
    row = json.loads((tmp_path / "tb" / "metrics.jsonl").read_text().splitlines()[0])
    assert [e.value for e in ea.Scalars("val/robust_acc")] == pytest.approx([row["val_robust_acc"]])
    assert [e.value for e in ea.Scalars("train/loss")] == pytest.approx([row["train_loss"]])
    (img,) = ea.Images("examples/clean_adversarial_perturbation_x10")
    assert (img.width, img.height) == (8 * 30 + 2, 3 * 30 + 2)  # 8 images, rows clean/adversarial/perturbation


def test_an_ensemble_run_report_holds_its_transferability_matrix(tmp_path: Path, mnist_available: None) -> None:
    model = {"name": "ensemble", "kwargs": {"member": "mlp", "k": 2, "member_kwargs": {"hidden": [16]}}}
    run = tmp_path / "ens"
    Trainer(tiny_config(epochs=1, max_steps_per_epoch=2, model=model), run, show_progress=False).fit()
    with ResultsStore(tmp_path / "s.sqlite") as store:
        html = build_run_report(run, store, grid_n=2, grid_steps=2)
    table = re.search(r'<table id="transferability">(.*?)</table>', html, re.S)
    assert table is not None, "an ensemble's report shows the a^(i,j) matrix"
    rows = re.findall(r"<tr><td>from (\w+)</td>((?:<td[^>]*>[\d.]+%</td>)+)</tr>", table.group(1))
    assert [r[0] for r in rows] == ["1", "2", "en"] and all(r[1].count("%") == 3 for r in rows)
    assert "T = " in html and "a_single = " in html
    with ResultsStore(tmp_path / "s2.sqlite") as store:  # a single model's report has no such section
        plain = tmp_path / "plain"
        Trainer(tiny_config(epochs=1, max_steps_per_epoch=2), plain, show_progress=False).fit()
        assert 'id="transferability"' not in build_run_report(plain, store, grid_n=2, grid_steps=2)
