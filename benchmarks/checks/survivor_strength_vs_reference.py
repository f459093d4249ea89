"""One AutoAttack attack, ours against the reference (``pyautoattack``), over several seeds, on hard points.

On the points an earlier attack leaves robust (by default our APGD-CE, as in the chain of AutoAttack standard) a
difference in strength shows more than on all points, and so does the luck of the random starts: one seed each can
differ by several points either way. Here both implementations run the attack alone with the standard settings for
the norm, once per seed, on the same points, and the robust counts are reported side by side.

    .venv/bin/python benchmarks/checks/survivor_strength_vs_reference.py --run RUN [--attack apgd-t] [--norm l1]
        [--eps 5] [--n 200] [--seeds 3] [--out benchmarks/results/survivor_strength_vs_reference.json]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))
from autoattack_floor import (  # noqa: E402
    REFERENCE_NORMS,
    STANDARD,
    add_model_arguments,
    benchmark_model,
    correctly_classified,
    survivors,
    test_points,
    write_report,
)

from robustlab.attacks.autoattack import AutoAttack  # noqa: E402
from robustlab.attacks.registry import get_attack_class  # noqa: E402
from robustlab.core.threat import ThreatModel  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "survivor_strength_vs_reference.json"


def reference_robust(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, attack: str,
                     seed: int) -> int:
    """Points the reference's ``attack`` (standard settings, alone) leaves robust."""
    from pyautoattack import AutoAttack as Reference

    ref = Reference(model, device=str(x.device), eps=threat.eps, norm=REFERENCE_NORMS[threat.norm], seed=seed,
                    version="standard")
    ref.verbose = False
    ref.attacks_to_run = [attack]
    x_adv, _ = ref.run_standard_evaluation(x, y, batch_size=len(x))
    return int(correctly_classified(model, x_adv, y).sum())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--attack", choices=STANDARD, default="apgd-t")
    parser.add_argument("--survivors-of", choices=[*STANDARD, "none"], default="apgd-ce",
                        help="the attack whose robust points are attacked (none: every clean-correct point)")
    parser.add_argument("--norm", choices=tuple(REFERENCE_NORMS), default="l1")
    parser.add_argument("--eps", type=float, default=5.0)
    parser.add_argument("--n", type=int, default=200, help="test points (the clean-correct ones are attacked)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.n < 1 or args.seeds < 1:
        parser.error("--n and --seeds must be >= 1")

    model, dataset, label = benchmark_model(args.run, args.which, "cpu")
    threat = ThreatModel(args.norm, args.eps)
    x, y = test_points(dataset, args.n)
    correct = correctly_classified(model, x, y)
    x, y = x[correct], y[correct]
    if args.survivors_of != "none":
        x, y = survivors(model, x, y, threat, args.survivors_of)
    settings = dict(AutoAttack(model, threat, version="standard").plan)[args.attack]
    rows = []
    print(f"{len(y)} points (left robust by our {args.survivors_of}); robust after {args.attack}:")
    for seed in range(args.seeds if len(y) else 0):  # nothing left to attack: an empty report
        x_adv = get_attack_class(args.attack)(model, threat, **{**settings, "seed": seed})(x, y)
        ours = int(correctly_classified(model, x_adv, y).sum())
        reference = reference_robust(model, x, y, threat, args.attack, seed)
        rows.append({"seed": seed, "ours": ours, "reference": reference})
        print(f"  seed {seed}: robustlab {ours}, reference {reference}")
    report = {
        "benchmark": "survivor_strength_vs_reference", "model": label, "dataset": dataset, "n": args.n,
        "norm": args.norm, "eps": args.eps, "attack": args.attack, "settings": settings,
        "survivors_of": args.survivors_of, "points": int(y.numel()), "torch": torch.__version__,
        "python": platform.python_version(), "seeds": rows,
        "mean_robust": {who: statistics.mean(r[who] for r in rows) if rows else None for who in ("ours", "reference")},
    }
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
