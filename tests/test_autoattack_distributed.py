"""AutoAttack across torchrun processes: batches dealt to the ranks give the one-process flags bit for bit, and with
a state file each rank resumes its own batches after one of them dies, even between a gather and its save."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from robustlab.attacks.autoattack import AutoAttack
from robustlab.core.threat import ThreatModel
from robustlab.utils.distributed import DistInfo
from tests._aa_dist_helpers import run, summary
from tests._aa_kill_helpers import SlowLinear
from tests._ports import free_port

REPO = Path(__file__).resolve().parent.parent


def torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={free_port()}", "-m", "tests._aa_dist_helpers", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def single() -> dict[str, Any]:
    """The one-process result (in this process) and the number of batches it attacked."""
    res = summary(run(None))
    res["total"] = sum(-(-sum(m) // 8) for m in [res["clean"], *list(res["robust"].values())[:-1]])  # batches of 8
    assert 0 < sum(res["robust"]["square"]) < sum(res["robust"]["apgd-ce"]) < sum(res["clean"])
    return res


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Bit-identical clean and per-attack flags and adversarial points."""
    return all(a[k] == b[k] for k in ("clean", "robust", "x_adv"))


def test_two_processes_give_the_one_process_result(tmp_path: Path, single: dict[str, Any]) -> None:
    out = tmp_path / "two.json"
    two = torchrun(str(out))
    assert two.returncode == 0, two.stderr[-3000:]
    double = json.loads(out.read_text())
    assert same(double, single)
    total = single["total"]
    assert sum(double["batches"]) == total and min(double["batches"]) >= total // 2 - 1  # dealt, not duplicated


def test_a_rank_killed_after_a_gather_resumes_its_own_batches(tmp_path: Path, single: dict[str, Any]) -> None:
    state = tmp_path / "aa.state.safetensors"
    crashed = torchrun(str(tmp_path / "crashed.json"), str(state), "crash")
    assert crashed.returncode != 0 and not (tmp_path / "crashed.json").exists()
    files = sorted(p.name for p in tmp_path.glob("aa.state.*"))
    assert files == ["aa.state.rank0-of-2.safetensors", "aa.state.rank1-of-2.safetensors"], files
    out = tmp_path / "resumed.json"
    resumed = torchrun(str(out), str(state))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = json.loads(out.read_text())
    assert again["resumed"] and same(again, single)
    first = -(-sum(single["clean"]) // 8)  # every rank had saved all its batches of the first attack: none is redone
    assert sum(again["batches"]) <= single["total"] - first, (again["batches"], single["total"], first)


def test_state_file_is_per_rank_only_under_torchrun(tmp_path: Path) -> None:
    aa = AutoAttack(SlowLinear(), ThreatModel("linf", 0.05), state_file=tmp_path / "aa.state.safetensors")
    assert aa.state_path(DistInfo()) == tmp_path / "aa.state.safetensors"
    assert aa.state_path(DistInfo(world=4, rank=3)) == tmp_path / "aa.state.rank3-of-4.safetensors"
    assert AutoAttack(SlowLinear(), ThreatModel("linf", 0.05)).state_path(DistInfo(world=2, rank=1)) is None
