"""Cost per point of a forward + backward pass at several batch sizes: does batching work together pay on this device?

APGD-T runs its 9 target classes one after another, each a batch of the points still robust. Running them as one
batch 9 times larger saves time only if a pass costs less per point at the larger batch; this measures that on the
same points (the first ``max(--batches)`` test points), as autoattack_floor.py replays passes (cross-entropy, input
gradient, parameters frozen), CPU time, interleaved, medians of ``--repeats``.

    .venv/bin/python benchmarks/perf/batch_scaling.py [--run RUN] [--batches 29 87 261] [--points 783]
        [--repeats 5] [--device cpu] [--out benchmarks/results/batch_scaling.json]

Each batch size passes ``--points`` points in all (so every size does the same work); without ``--run`` the model is
autoattack_floor.py's small CNN trained for a few seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from autoattack_floor import add_model_arguments, benchmark_model, replay, write_report  # noqa: E402

from robustlab.data import load_dataset  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "batch_scaling.json"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--batches", nargs="+", type=int, default=[29, 87, 261])
    parser.add_argument("--points", type=int, default=783, help="points passed per batch size (a multiple of each)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if min(args.batches) < 1 or args.points < 1 or args.repeats < 1:
        parser.error("--batches, --points and --repeats must be >= 1")
    if any(args.points % b for b in args.batches):
        parser.error(f"--points {args.points} must be a multiple of every batch size {args.batches}")

    model, dataset, label = benchmark_model(args.run, args.which, args.device)
    test = load_dataset(dataset, "test")
    largest = max(args.batches)
    x, y = test.float_images(range(largest)).to(args.device), test.labels[:largest].to(args.device)
    replay(model, [[largest, 1]], x, y)  # warm-up
    seconds: dict[int, list[float]] = {b: [] for b in args.batches}
    for _ in range(args.repeats):
        for b in args.batches:
            seconds[b].append(replay(model, [[b, 1]] * (args.points // b), x, y).cpu)
    smallest = min(args.batches)
    per_point = {b: statistics.median(v) / args.points for b, v in seconds.items()}
    report = {
        "benchmark": "batch_scaling", "model": label, "dataset": dataset, "device": args.device,
        "points": args.points, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "load_average": os.getloadavg(), "ms_per_point": {str(b): v * 1e3 for b, v in per_point.items()},
        "relative_to_smallest": {str(b): v / per_point[smallest] for b, v in per_point.items()},
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(f"{'batch':>6}{'ms / point':>12}{'vs batch ' + str(smallest):>15}")
    for b in args.batches:
        print(f"{b:>6}{per_point[b] * 1e3:>12.4f}{per_point[b] / per_point[smallest]:>14.3f}x")
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
