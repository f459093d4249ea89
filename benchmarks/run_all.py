"""Run the self-contained benchmarks (``make bench``): the speed and memory measurements of ``perf/`` and the
cross-checks of ``checks/`` that need no trained run, one after the other, each writing its JSON into ``results/``.

    .venv/bin/python benchmarks/run_all.py [NAME ...] [--list]

NAME picks benchmarks by name (default: all). Scripts that measure a trained run (CARSO's cost, AutoAttack against
the reference) and the multi-run campaigns of ``campaigns/`` take hours or a GPU and are listed, not run; their
commands are in docs/results.md. A failing benchmark does not stop the others; the exit status says if any failed.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (script under benchmarks/, its arguments); ordered from seconds to minutes
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "minnorm_linear": ("checks/minnorm_linear.py", []),
    "tamoo_sample_size": ("checks/tamoo_sample_size.py", ["--out", "benchmarks/results/tamoo_sample_size.json"]),
    "attack_overhead": ("perf/attack_overhead.py", []),
    "apgd_overhead": ("perf/apgd_overhead.py", []),
    "train_throughput": ("perf/train_throughput.py", ["--repeats", "3"]),
    "method_cost": ("perf/method_cost.py", ["--repeats", "3"]),
    "method_cost_ensemble": ("perf/method_cost.py", ["--family", "ensemble", "--repeats", "3"]),
    "store_speed": ("perf/store_speed.py", ["--repeats", "3"]),
    "cw_minnorm": ("checks/cw_minnorm.py", []),
    "udr_soft_ball_stats": ("checks/udr_soft_ball_stats.py", []),
    "l1_vs_reference": ("checks/l1_vs_reference.py", []),
    "autoattack_floor": ("perf/autoattack_floor.py", []),
    # the committed results of these are on the demo model (--run); make bench writes the tiny CNN's beside them
    "fab_projection": ("perf/fab_projection.py", ["--out", "benchmarks/results/fab_projection_tiny_cnn.json"]),
    "channels_last_passes": ("perf/channels_last_passes.py",
                             ["--out", "benchmarks/results/channels_last_passes_tiny_cnn.json"]),
    "autoattack_own_work": ("perf/autoattack_own_work.py",
                            ["--out", "benchmarks/results/autoattack_own_work_tiny_cnn.json"]),
    "batch_scaling": ("perf/batch_scaling.py", ["--out", "benchmarks/results/batch_scaling_tiny_cnn.json"]),
    "projection_share": ("perf/projection_share.py", ["--out", "benchmarks/results/projection_share_l1_tiny_cnn.json"]),
    "survivor_strength_vs_reference": ("checks/survivor_strength_vs_reference.py",
                                       ["--out", "benchmarks/results/survivor_strength_vs_reference_tiny_cnn.json"]),
}
# need a trained run folder as their first argument
NEEDS_RUN: dict[str, str] = {
    "carso_cost": "perf/carso_cost.py RUN",
    "autoattack_vs_reference": "checks/autoattack_vs_reference.py RUN",
}
# compare against a library robustlab does not depend on; install it for the check only
NEEDS_PACKAGE: dict[str, str] = {
    "bb_vs_foolbox": "checks/bb_vs_foolbox.py (pip install --no-deps foolbox==3.3.4 eagerpy numba)",
}


def command(name: str) -> list[str]:
    """The command line of one benchmark, run from the repository root with this interpreter."""
    script, args = BENCHMARKS[name]
    return [sys.executable, str(Path("benchmarks") / script), *args]


def machine() -> str:
    """One line saying where the numbers come from."""
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"torch {torch.__version__}, {platform.platform()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--list", action="store_true", help="print the commands and exit")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; valid: {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    if args.list:
        for name in names:
            print(shlex.join(command(name)))
        return 0
    print(f"machine: {machine()}")
    failed = []
    for name in names:
        cmd = command(name)
        print(f"\n== {name}: {shlex.join(cmd)}", flush=True)
        start = time.perf_counter()
        code = subprocess.call(cmd, cwd=ROOT)
        print(f"== {name}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failed.append(name)
    print("\nnot run here (they measure a trained run): "
          + "; ".join(f"{n}: benchmarks/{c}" for n, c in NEEDS_RUN.items()))
    print("not run here (they need a package outside robustlab's dependencies): "
          + "; ".join(f"{n}: benchmarks/{c}" for n, c in NEEDS_PACKAGE.items()))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
