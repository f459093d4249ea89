"""Each AutoAttack attack's own work per step, against the passes it must make on a real model.

``autoattack_floor.py`` divides an attack's time by the bare replay of its passes; on this shared 2-core machine two
runs of the same replay differ by up to 8%, so that ratio cannot say whether an attack is within 5% of its floor.
This benchmark splits the time instead. Each attack runs with its AutoAttack standard settings on a model whose
passes cost almost nothing (a linear map scaled by 1e-5 with a bias of 10 on class 0, every label 0: no point ever
falls, so every step runs): its time per step, minus that model's own bare passes, is the attack's own work (steps,
projections, bookkeeping, random draws, the Python between passes). The floor per step is the bare passes one step
makes (APGD: a forward + backward; FAB-T: a forward + backward and a forward; Square: a forward, with channels-last
weights where our AutoAttack uses them) on the real model, on a batch of the same size. Reported per attack: own
work per step, floor per step, and ``1 + own / floor``, the ratio to the floor the attack has by its own work.

    .venv/bin/python benchmarks/perf/autoattack_own_work.py [--run RUN] [--n 29] [--eps 0.3] [--norm linf]
        [--repeats 5] [--out benchmarks/results/autoattack_own_work.json]

Without ``--run`` the real model is autoattack_floor.py's small CNN trained for a few seconds.
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
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from autoattack_floor import (  # noqa: E402
    REFERENCE_NORMS,
    STANDARD,
    add_model_arguments,
    benchmark_model,
    classes_of,
    replay,
    test_points,
    write_report,
)

from robustlab.attacks.autoattack import AutoAttack  # noqa: E402
from robustlab.attacks.memory_format import channels_last, channels_last_helps  # noqa: E402
from robustlab.attacks.registry import get_attack_class  # noqa: E402
from robustlab.core.threat import ThreatModel  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "autoattack_own_work.json"
# per step of each attack: (forward + backward passes, forward-only passes)
PASSES_PER_STEP = {"apgd-ce": (1, 0), "apgd-t": (1, 0), "fab-t": (1, 1), "square": (0, 1)}


def free_model(x: Tensor, classes: int) -> nn.Module:
    """A linear map so small that its passes cost next to nothing, whose class 0 wins every point by ~10."""
    gen = torch.Generator().manual_seed(0)
    lin = nn.Linear(x[0].numel(), classes)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * 1e-5)
        lin.bias.zero_()
        lin.bias[0] = 10.0
    return nn.Sequential(nn.Flatten(), lin).eval()


def steps_of(name: str, settings: dict[str, Any], classes: int) -> int:
    """How many steps the attack makes when no point ever falls."""
    if name == "square":
        return int(settings.get("queries", 5000))
    runs = min(int(settings.get("n_target_classes", 1)), classes - 1) if name in ("apgd-t", "fab-t") else 1
    return runs * int(settings.get("restarts", 1)) * int(settings.get("steps", 100))


def seconds_per_call(fn: Any, repeats: int) -> float:
    """Median CPU seconds of ``fn()`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--n", type=int, default=29, help="points per batch")
    parser.add_argument("--eps", type=float, default=0.3, help="radius in --norm")
    parser.add_argument("--norm", choices=tuple(REFERENCE_NORMS), default="linf")
    parser.add_argument("--repeats", type=int, default=5, help="repeats (medians taken)")
    parser.add_argument("--attacks", nargs="+", choices=STANDARD, default=STANDARD)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.n < 1 or args.repeats < 1:
        parser.error("--n and --repeats must be >= 1")

    model, dataset, label = benchmark_model(args.run, args.which, "cpu")
    threat = ThreatModel(args.norm, args.eps)
    x, y = test_points(dataset, args.n)
    classes = classes_of(model, x)
    free = free_model(x, classes)
    zeros = torch.zeros_like(y)
    plan = dict(AutoAttack(model, threat, version="standard").plan)
    layout = channels_last_helps(model, x)  # whether our AutoAttack runs its forward-only attacks channels-last
    report: dict[str, Any] = {
        "benchmark": "autoattack_own_work", "model": label, "dataset": dataset, "n": args.n, "eps": args.eps,
        "norm": args.norm, "repeats": args.repeats, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "machine": platform.machine(), "load_before": os.getloadavg(),
        "attacks": {},
    }
    print(f"{'attack':<9}{'steps':>7}{'own ms/step':>13}{'floor ms/step':>15}{'1 + own/floor':>15}")
    for name in args.attacks:
        settings = dict(plan[name])
        attack = get_attack_class(name)(free, threat, **settings)
        steps = steps_of(name, settings, classes)
        fwd_bwd, fwd = PASSES_PER_STEP[name]
        step_calls = [[args.n, 1]] * fwd_bwd + [[args.n, 0]] * fwd
        free_total = seconds_per_call(lambda a=attack: a(x, zeros), args.repeats)
        all_calls = step_calls * steps
        free_passes = seconds_per_call(lambda c=all_calls: replay(free, c, x, zeros), args.repeats) / steps
        own = free_total / steps - free_passes
        forward_only = get_attack_class(name).forward_only
        with channels_last(model, x, enabled=layout and forward_only):
            floor = seconds_per_call(lambda c=step_calls: replay(model, c * 20, x, y), args.repeats) / 20
        report["attacks"][name] = {"settings": settings, "steps": steps, "own_s_per_step": own,
                                   "floor_s_per_step": floor, "channels_last": layout and forward_only,
                                   "ratio_by_own_work": 1 + own / floor}
        print(f"{name:<9}{steps:>7}{own * 1e3:>13.3f}{floor * 1e3:>15.3f}{1 + own / floor:>14.3f}x")
    report["load_after"] = os.getloadavg()
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
