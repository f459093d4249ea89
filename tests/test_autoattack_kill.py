"""An AutoAttack evaluation killed with SIGKILL (possibly mid-write) resumes to exactly the uninterrupted flags."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests._aa_kill_helpers import run

REPO = Path(__file__).resolve().parents[1]


def test_sigkill_mid_evaluation_then_resume(tmp_path: Path) -> None:
    reference = run(None)
    state = tmp_path / "aa.state.safetensors"
    script = f"import sys; sys.path.insert(0, 'tests'); from _aa_kill_helpers import run; run({str(state)!r}, 0.01)"
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seen, deadline = set(), time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.exists():
            seen.add(state.stat().st_mtime_ns)
            if len(seen) >= 3:  # a few batches saved, the run is mid-way
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.005)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the evaluation finished before it could be killed"

    resumed = run(state)
    assert resumed.resumed
    assert torch.equal(resumed.clean, reference.clean)
    for name in reference.robust:
        assert torch.equal(resumed.robust[name], reference.robust[name]), name
    assert torch.equal(resumed.x_adv, reference.x_adv)
    assert reference.robust_accuracy < 1.0  # the attack does something, so equality is not trivial
