"""How much of each AutoAttack attack's time its projection takes, on a real model (or on the free model).

``autoattack_own_work.py`` measures own work on a model whose points never fall; for the projections that model is
not representative: its constant gradient keeps APGD-L1's iterates at its own sparsity and puts every FAB hyperplane
out of the box's reach. Here each attack of AutoAttack's ``standard`` in ``--norm`` runs alone, with its standard
settings, on the clean-correct points of a trained model, and the CPU time spent inside its projection (APGD: the
threat model's projection, in L1 the exact L1-ball-and-box one; FAB-T: the minimal-norm hyperplane step; Square-L1:
the reference's L1-box projection; Square's L-inf and L2 steps clip inline and are not measured) is set against the
attack's CPU time. ``--free-model`` runs the same on autoattack_own_work.py's free model instead, for comparison.

    .venv/bin/python benchmarks/perf/projection_share.py [--run RUN] [--norm l1] [--eps E] [--n 29] [--repeats 3]
        [--free-model] [--out benchmarks/results/projection_share_l1.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from autoattack_floor import (  # noqa: E402
    STANDARD,
    add_model_arguments,
    benchmark_model,
    classes_of,
    correctly_classified,
    test_points,
    write_report,
)
from autoattack_own_work import free_model  # noqa: E402

import robustlab.attacks.fab as fab_module  # noqa: E402
import robustlab.attacks.square as square_module  # noqa: E402
import robustlab.core.threat as threat_module  # noqa: E402
from robustlab.attacks.autoattack import AutoAttack  # noqa: E402
from robustlab.attacks.registry import get_attack_class  # noqa: E402
from robustlab.core.threat import ThreatModel  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
DEFAULT_EPS = {"linf": 0.3, "l2": 2.0, "l1": 10.0}
# the module-level function (or method) each attack's projection goes through, looked up by name at each call
PROJECTION: dict[str, dict[str, tuple[ModuleType | type, str]]] = {
    "l1": {
        "apgd-ce": (threat_module, "project_l1_box"),
        "apgd-t": (threat_module, "project_l1_box"),
        "fab-t": (fab_module, "project_hyperplane_box_l1"),
        "square": (square_module, "l1_box_projection"),
    },
    **{norm: {
        "apgd-ce": (ThreatModel, "project"),
        "apgd-t": (ThreatModel, "project"),
        "fab-t": (fab_module, "project_hyperplane_box"),
    } for norm in ("linf", "l2")},
}


def source_commit() -> str | None:
    """The git commit of the robustlab being measured (None outside a git checkout)."""
    folder = Path(threat_module.__file__).resolve().parent
    done = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or None


@contextmanager
def timed(module: ModuleType | type, name: str, spent: list[float]) -> Iterator[None]:
    """Replace ``module.name`` by a wrapper that adds each call's CPU seconds to ``spent``."""
    original: Callable[..., Any] = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append(time.process_time() - start)

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--norm", choices=tuple(PROJECTION), default="l1")
    parser.add_argument("--eps", type=float, help="radius in --norm (default: 0.3 L-inf, 2 L2, 10 L1)")
    parser.add_argument("--n", type=int, default=29, help="test points (the clean-correct ones are attacked)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats (medians taken)")
    parser.add_argument("--attacks", nargs="+", choices=STANDARD, help="default: those with a projection to time")
    parser.add_argument("--free-model", action="store_true", help="attack autoattack_own_work.py's free model")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/projection_share_NORM.json")
    args = parser.parse_args(argv)
    if args.n < 1 or args.repeats < 1:
        parser.error("--n and --repeats must be >= 1")
    projections = PROJECTION[args.norm]
    attacks = args.attacks or list(projections)
    if missing := [a for a in attacks if a not in projections]:
        parser.error(f"{', '.join(missing)} has no projection function to time in {args.norm}")
    eps = DEFAULT_EPS[args.norm] if args.eps is None else args.eps
    out = args.out or RESULTS / f"projection_share_{args.norm}.json"

    model, dataset, label = benchmark_model(args.run, args.which, "cpu")
    threat = ThreatModel(args.norm, eps)
    x, y = test_points(dataset, args.n)
    correct = correctly_classified(model, x, y)
    x, y = x[correct], y[correct]
    plan = dict(AutoAttack(model, threat, version="standard").plan)
    if args.free_model:  # its class 0 wins every point by ~10: no point falls
        model, y, label = free_model(x, classes_of(model, x)), torch.zeros_like(y), "free model"
    report: dict[str, Any] = {
        "benchmark": "projection_share", "model": label, "dataset": dataset, "n": int(x.shape[0]),
        "norm": args.norm, "eps": eps, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "load_before": os.getloadavg(), "robustlab_commit": source_commit(), "attacks": {},
    }
    print(f"{'attack':<9}{'calls':>7}{'ms/call':>10}{'projection s':>14}{'attack s':>10}{'share':>8}")
    for name in attacks:
        totals, inside, calls = [], [], 0
        for _ in range(args.repeats):
            attack = get_attack_class(name)(model, threat, **plan[name])
            spent: list[float] = []
            with timed(*projections[name], spent):
                start = time.process_time()
                attack(x, y)
                totals.append(time.process_time() - start)
            inside.append(sum(spent))
            calls = len(spent)
        total, projection = statistics.median(totals), statistics.median(inside)
        report["attacks"][name] = {"settings": plan[name], "projection": ".".join(
            (projections[name][0].__name__, projections[name][1])), "calls": calls, "projection_s": projection,
            "attack_s": total, "share": projection / total}
        print(f"{name:<9}{calls:>7}{projection / max(calls, 1) * 1e3:>10.3f}{projection:>14.3f}{total:>10.2f}"
              f"{projection / total:>8.1%}")
    report["load_after"] = os.getloadavg()
    write_report(out, report)
    return report


if __name__ == "__main__":
    main()
