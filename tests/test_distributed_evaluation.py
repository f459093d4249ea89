"""Evaluation across processes: ``torchrun -m robustlab.cli evaluate`` deals each attack's batches out to the ranks,
gathers the flags after each attack, and writes one result equal to the one-process result bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robustlab.training.trainer import Trainer
from tests._ports import free_port
from tests._training_helpers import tiny_config

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.usefixtures("mnist_available")
def test_two_processes_give_the_one_process_result(tmp_path: Path) -> None:
    run = tmp_path / "run"
    Trainer(tiny_config(epochs=2, objective={"name": "standard", "attack": None}, validation={"n": 16, "attack": None}),
            run, show_progress=False).fit()
    (run / "preset.yaml").write_text(yaml.safe_dump({"preset": "tiny", "scale": "quick", "eval": {
        "n": 40, "batch_size": 4, "grad_check_n": 8, "large_eps": 0.5, "eps_sweep": [0.01], "eps_sweep_n": 24,
        "attacks": [{"name": "pgd", "norm": "linf", "eps": 0.02, "steps": 3, "restarts": 2},
                    {"name": "apgd-dlr", "norm": "linf", "eps": 0.02, "steps": 3}]}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ROBUSTLAB_STORE": str(tmp_path / "store.sqlite")}
    single = tmp_path / "single.json"
    one = subprocess.run([sys.executable, "-m", "robustlab.cli", "evaluate", str(run), "--out", str(single),
                          "--no-progress"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    double = tmp_path / "double.json"
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={free_port()}", "-m", "robustlab.cli", "evaluate", str(run), "--out",
                          str(double), "--no-progress"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = json.loads(single.read_text()), json.loads(double.read_text())
    assert a["per_sample"] == b["per_sample"] and a["robust_accuracy"] == b["robust_accuracy"]
    assert a["eps_sweep"] == b["eps_sweep"] and a["sanity"]["large_eps_accuracy"] == b["sanity"]["large_eps_accuracy"]
    assert two.stdout.count("result written to") == 1  # one result, written by rank 0
    assert a["clean_accuracy"] >= 0.5 and 0 < a["worst_case_accuracy"] < a["clean_accuracy"]  # several batches each
