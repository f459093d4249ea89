"""FAB's hyperplane-box projection: Newton's solve (sorting only the rows it leaves) against sorting every row.

The inputs are the projections a FAB-T run really asks for: ``project_hyperplane_box`` is spied on during FAB-T
(one target class, ``--steps`` steps) on the first ``--n`` test points, and every captured call is then replayed with
``newton_steps=0`` (the sort) and the default, interleaved, medians taken. Reported per norm: the time ratio, the
largest difference between the two steps, each one's largest error against the float64 sorted solve, and how many
rows Newton's method left to the sort.

    .venv/bin/python benchmarks/perf/fab_projection.py [--run RUN] [--n 100] [--steps 40] [--repeats 3]
        [--out benchmarks/results/fab_projection.json]

Without ``--run`` the model is autoattack_floor.py's small CNN trained for a few seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from autoattack_floor import trained_tiny_cnn  # noqa: E402

import robustlab.attacks.fab as fab  # noqa: E402
from robustlab.core.threat import ThreatModel  # noqa: E402
from robustlab.data import load_dataset  # noqa: E402
from robustlab.io.atomic import atomic_write_json  # noqa: E402
from robustlab.runs.loading import load_trained_model  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "fab_projection.json"
EPS = {"linf": 0.3, "l2": 2.0}


def captured_calls(model: torch.nn.Module, x: Tensor, y: Tensor, norm: str, steps: int) -> list[tuple[Tensor, ...]]:
    """The (p, w, c) of every projection one FAB-T run makes."""
    calls: list[tuple[Tensor, ...]] = []
    solve = fab.project_hyperplane_box

    def spy(p: Tensor, w: Tensor, c: Tensor, norm: str, **kwargs: Any) -> Tensor:
        calls.append((p.clone(), w.clone(), c.clone()))
        return solve(p, w, c, norm, **kwargs)

    fab.project_hyperplane_box = spy  # type: ignore[assignment]
    try:
        fab.FABTargeted(model, ThreatModel(norm, EPS[norm]), steps=steps, n_target_classes=1, seed=0)(x, y)
    finally:
        fab.project_hyperplane_box = solve
    return calls


def compare(calls: list[tuple[Tensor, ...]], norm: str, repeats: int) -> dict[str, Any]:
    """Interleaved timings of both solves over all calls, and their agreement."""
    times: dict[int, list[float]] = {0: [], fab._NEWTON_STEPS: []}
    for _ in range(repeats):
        for steps in times:
            t0 = time.perf_counter()
            for p, w, c in calls:
                fab.project_hyperplane_box(p, w, c, norm, newton_steps=steps)
            times[steps].append(time.perf_counter() - t0)
    diff = err_sort = err_newton = 0.0
    left = rows = 0
    for p, w, c in calls:
        exact = fab.project_hyperplane_box(p.double(), w.double(), c.double(), norm, newton_steps=0)
        by_sort = fab.project_hyperplane_box(p, w, c, norm, newton_steps=0).double()
        by_newton = fab.project_hyperplane_box(p, w, c, norm).double()
        diff = max(diff, float((by_sort - by_newton).abs().max()))
        err_sort = max(err_sort, float((by_sort - exact).abs().max()))
        err_newton = max(err_newton, float((by_newton - exact).abs().max()))
        _, c_pos, _, slope, brk = fab._breakpoint_problem(p, w, c, norm)
        left += int((~fab._breakpoint_newton(slope, brk, c_pos, fab._NEWTON_STEPS)[1]).sum())
        rows += len(c)
    sort_s, newton_s = statistics.median(times[0]), statistics.median(times[fab._NEWTON_STEPS])
    return {"calls": len(calls), "rows": rows, "rows_left_to_sort": left, "sort_s": sort_s, "newton_s": newton_s,
            "newton_over_sort": newton_s / sort_s, "max_abs_difference": diff,
            "max_error_vs_float64": {"sort": err_sort, "newton": err_newton}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained MNIST run folder (default: a small CNN trained here)")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--steps", type=int, default=40, help="FAB-T steps whose projections are captured")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    model = load_trained_model(args.run)[0] if args.run else trained_tiny_cnn(300)
    data = load_dataset("mnist", split="test")
    x, y = data.images[: args.n].float() / 255, data.labels[: args.n]
    result: dict[str, Any] = {
        "benchmark": "fab_projection", "model": str(args.run or "tiny-cnn"), "n": args.n, "fab_steps": args.steps,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.processor() or "",
        "norms": {norm: compare(captured_calls(model, x, y, norm, args.steps), norm, args.repeats) for norm in EPS},
    }
    atomic_write_json(args.out, result)
    print(json.dumps(result["norms"], indent=1))
    return result


if __name__ == "__main__":
    main()
