"""AutoAttack under torchrun for tests/test_autoattack_distributed.py: ``python -m tests._aa_dist_helpers OUT [STATE
[crash]]`` runs a small custom AutoAttack and rank 0 writes the flags, a hash of the adversarial points and the
batches each rank attacked as JSON to OUT. With ``crash`` rank 1 exits abruptly right after the first attack's gather,
before saving it: the worst moment, as rank 0 saves that attack as finished and goes on to the next one."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from robustlab.attacks.autoattack import AutoAttack, AutoAttackResult, _RunState, tensor_sha256
from robustlab.core.threat import ThreatModel
from robustlab.utils import distributed
from tests._aa_kill_helpers import SlowLinear, points

ATTACKS = ["apgd-ce", "apgd-t", "square"]
CHEAP = {"apgd-ce": {"steps": 10, "restarts": 1}, "apgd-t": {"steps": 10, "n_target_classes": 3},
         "square": {"queries": 40}}


def run(state_file: Path | None) -> AutoAttackResult:
    """APGD-CE, APGD-T, Square (cheap) in batches of 8 at L-inf eps 0.05 on the 64 points of the kill test."""
    x, y = points()
    aa = AutoAttack(SlowLinear(), ThreatModel("linf", 0.05), version="custom", attacks=ATTACKS, attack_kwargs=CHEAP,
                    seed=3, state_file=state_file, batch_size=8)
    return aa.run(x, y)


def summary(res: AutoAttackResult, batches: list[int] | None = None) -> dict[str, Any]:
    """What two runs must agree on, bit for bit, and how the work was dealt."""
    return {"clean": res.clean.tolist(), "robust": {k: v.tolist() for k, v in res.robust.items()},
            "x_adv": tensor_sha256(res.x_adv), "resumed": res.resumed, "batches": batches,
            "warnings": res.checks["warnings"]}


def main(out: str, state: str | None = None, crash: bool = False) -> None:
    info = distributed.init_distributed()
    calls = {"n": 0}
    original_batch, original_save = AutoAttack._attack_batch, _RunState.save

    def counting(self: AutoAttack, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls["n"] += 1
        return original_batch(self, *args, **kwargs)

    def crashing(self: _RunState) -> None:
        if self.attack_index >= 1:
            os._exit(17)  # as abrupt as a kill: no cleanup, the state file as last saved
        original_save(self)

    AutoAttack._attack_batch = counting  # type: ignore[method-assign]
    if crash and info.rank == 1:
        _RunState.save = crashing  # type: ignore[method-assign]
    res = run(Path(state) if state else None)
    per_rank = torch.zeros(info.world, dtype=torch.int64)
    per_rank[info.rank] = calls["n"]
    batches = distributed.all_reduce_tensor(per_rank, info).tolist()
    if info.is_main:
        Path(out).write_text(json.dumps(summary(res, batches)))
    distributed.shutdown(info)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None, sys.argv[3:] == ["crash"])
