"""Trainer: determinism, exact resume after SIGKILL, data-parallel equivalence, checkpoints, config errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from robustlab.core.errors import ConfigError
from robustlab.runs.loading import load_trained_model
from robustlab.training.config import ScheduleConfig
from robustlab.training.schedules import lr_factor
from robustlab.training.trainer import Trainer
from tests._ports import free_port
from tests._training_helpers import tiny_config

pytestmark = pytest.mark.usefixtures("mnist_available")
REPO = Path(__file__).resolve().parents[1]


def weights(run: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"{which}.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=0), f"{k} differs by {(a[k] - b[k]).abs().max()}"


def test_seeded_training_is_deterministic_and_seed_matters(tmp_path: Path) -> None:
    Trainer(tiny_config(), tmp_path / "a", show_progress=False).fit()
    Trainer(tiny_config(), tmp_path / "b", show_progress=False).fit()
    Trainer(tiny_config(seed=4), tmp_path / "c", show_progress=False).fit()
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    wa, wc = weights(tmp_path / "a"), weights(tmp_path / "c")
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


def test_run_folder_contents_and_metrics(tmp_path: Path) -> None:
    summary = Trainer(tiny_config(), tmp_path / "r", show_progress=False).fit()
    run = tmp_path / "r"
    for f in ("config.yaml", "metrics.jsonl", "checkpoints/last.safetensors", "checkpoints/best.safetensors",
              "checkpoints/last.json", "checkpoints/best.json"):
        assert (run / f).exists(), f
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert 0.0 <= rows[-1]["val_robust_acc"] <= rows[-1]["val_clean_acc"] <= 1.0
    assert summary.best_epoch in (0, 1)
    model, meta = load_trained_model(run, "best")
    assert meta["dataset"] == "mnist" and not model.training
    assert len(list(run.glob("checkpoints/optim-*.safetensors"))) == 1  # old optimizer files cleaned


def test_resume_after_sigkill_mid_epoch_matches_uninterrupted(tmp_path: Path) -> None:
    overrides = {"objective": {"name": "slow-pgd-at", "attack": {"name": "pgd", "norm": "linf", "eps": 0.1,
                 "steps": 3}}, "checkpoint_every_steps": 2}
    ref = tmp_path / "ref"
    Trainer(tiny_config(**overrides), ref, show_progress=False).fit()

    run = tmp_path / "killed"
    script = (
        "import sys; sys.path.insert(0, 'tests');"
        "from _training_helpers import tiny_config; from robustlab.training.trainer import Trainer;"
        f"Trainer(tiny_config(**{overrides!r}), {str(run)!r}, show_progress=False).fit()"
    )
    threads = str(torch.get_num_threads())
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": threads})
    # same thread count as the reference run in this process: float sums depend on it
    state_file = run / "checkpoints" / "last.json"
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        if state_file.exists():
            state = json.loads(state_file.read_text())
            if state["epoch"] == 1 and state["step"] >= 2:  # mid-way through the second epoch
                proc.send_signal(signal.SIGKILL)
                killed_at = state
                break
        time.sleep(0.02)
    proc.wait(timeout=30)
    assert killed_at is not None, "the run finished before it could be killed"
    assert proc.returncode == -signal.SIGKILL

    Trainer(tiny_config(**overrides), run, show_progress=False).fit()
    assert_same_weights(weights(ref), weights(run))
    def no_timing(path: Path) -> list[dict]:
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "train_images_per_s"} for r in rows]

    assert no_timing(run / "metrics.jsonl") == no_timing(ref / "metrics.jsonl")


def test_two_process_torchrun_matches_one_process(tmp_path: Path) -> None:
    single = tmp_path / "single"
    Trainer(tiny_config(), single, show_progress=False).fit()
    dist_run = tmp_path / "dist"
    script = tmp_path / "train_dist.py"
    script.write_text(
        f"import sys; sys.path.insert(0, {str(REPO / 'tests')!r})\n"
        "from _training_helpers import tiny_config\nfrom robustlab.training.trainer import Trainer\n"
        f"Trainer(tiny_config(), {str(dist_run)!r}, show_progress=False).fit()\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           str(script)]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert_same_weights(weights(single), weights(dist_run), atol=1e-5)
    s_rows = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    d_rows = [json.loads(x) for x in (dist_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_robust_acc"] for r in s_rows] == [r["val_robust_acc"] for r in d_rows]


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    Trainer(tiny_config(epochs=1), tmp_path / "r", show_progress=False).fit()
    with pytest.raises(ConfigError, match="different config"):
        Trainer(tiny_config(epochs=1, seed=9), tmp_path / "r", show_progress=False).fit()
    Trainer(tiny_config(epochs=2), tmp_path / "r", show_progress=False).fit()  # more epochs is a valid resume
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_refuses_a_changed_objective_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config_hash covers explicit settings only (kept stable); a default that changed under a run is caught by the
    resolved parameters stored in its state, both by the trainer and by reproduce's "already trained" check."""
    from robustlab.app.reproduce import training_complete
    from robustlab.training.objectives.pgd_at import PGDAT, PGDATParams

    cfg = tiny_config(epochs=1)
    Trainer(cfg, tmp_path / "r", show_progress=False).fit()
    assert training_complete(tmp_path / "r", cfg)

    class NewDefault(PGDATParams):
        natural_weight: float = 0.5

    monkeypatch.setattr(PGDAT, "Params", NewDefault)
    assert not training_complete(tmp_path / "r", cfg)
    with pytest.raises(ConfigError, match=r"natural_weight: 0\.0 -> 0\.5"):
        Trainer(tiny_config(epochs=2), tmp_path / "r", show_progress=False).fit()
    # Setting the old value explicitly changes config_hash, so the honest way on is a new run or --fresh.


def test_config_errors_are_specific() -> None:
    with pytest.raises(ConfigError, match=r"optimizer\.lrr: unknown key"):
        tiny_config(optimizer={"name": "sgd", "lrr": 0.1})
    with pytest.raises(ConfigError, match="needs an 'attack'"):
        tiny_config(objective={"name": "pgd-at", "attack": None})
    with pytest.raises(ConfigError, match="eps"):
        tiny_config(objective={"name": "pgd-at", "attack": {"name": "pgd", "norm": "linf", "eps": -0.1}})


def test_lr_schedules() -> None:
    multistep = ScheduleConfig(name="multistep", milestones=[2, 4], gamma=0.1)
    assert [lr_factor(multistep, e, 6) for e in (0, 1.9, 2, 4.5)] == pytest.approx([1, 1, 0.1, 0.01])
    cosine = ScheduleConfig(name="cosine")
    assert lr_factor(cosine, 0, 10) == pytest.approx(1.0) and lr_factor(cosine, 10, 10) == pytest.approx(0.0)
    assert lr_factor(cosine, 5, 10) == pytest.approx(0.5)
    onecycle = ScheduleConfig(name="onecycle", peak_fraction=0.5)
    assert lr_factor(onecycle, 5, 10) == pytest.approx(1.0) and lr_factor(onecycle, 2.5, 10) == pytest.approx(0.5)
    warm = ScheduleConfig(name="constant", warmup_epochs=2)
    assert lr_factor(warm, 1, 10) == pytest.approx(0.5, rel=1e-6)


def test_config_hash_is_stable_across_versions() -> None:
    """A run folder resumes only while its config hash is unchanged: this pinned value is the hash of the tiny
    config since before the evaluation-only ``surrogate`` attack field existed. If it changes, every user's run
    folders stop resuming; change it only deliberately."""
    from robustlab.training.trainer import config_hash

    assert config_hash(tiny_config()) == "2adb100e32943043"
