"""Repeated final evaluation of a stochastic defence: craft once with a surrogate attack, then classify the
clean and the adversarial points several times with fresh randomness; report mean, worst pass and pointwise worst.

    .venv/bin/python benchmarks/campaigns/carso_repeated_passes.py RUN [--n 100] [--passes 5] [--steps 20] [--eot 4]
        [--out benchmarks/results/carso_repeated_passes.json]

The attack is APGD-CE with EoT on CARSO's smooth ``logit`` aggregation (PeeL's own gradient is mostly zero), judged on
the model as it is deployed (PeeL, E prior samples). Run from the repository root.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import torch

from robustlab.core.threat import ThreatModel
from robustlab.data import load_dataset
from robustlab.evaluation.named import surrogate_view
from robustlab.io.atomic import atomic_write_json
from robustlab.purification.common import repeated_accuracy
from robustlab.runs.loading import load_trained_model

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "carso_repeated_passes.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eot", type=int, default=4)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    from robustlab.attacks import create_attack

    model, meta = load_trained_model(args.run, "best")
    test = load_dataset(meta["dataset"], "test")
    x, y = test.float_images(range(args.n)), test.labels[: args.n]
    torch.manual_seed(0)
    attack = create_attack("apgd-ce", surrogate_view(model, "logit"), ThreatModel("linf", args.eps),
                           steps=args.steps, eot_samples=args.eot)
    x_adv = torch.cat([attack(x[i : i + 50], y[i : i + 50]) for i in range(0, len(x), 50)])
    report = {"run": str(args.run), "n": args.n, "attack": f"apgd-ce-{args.steps} eot={args.eot} via logit",
              "eps": args.eps, "passes": args.passes,
              "clean": asdict(repeated_accuracy(model, x, y, passes=args.passes)),
              "adversarial": asdict(repeated_accuracy(model, x_adv, y, passes=args.passes, seed=100))}
    for k in ("clean", "adversarial"):
        r = report[k]
        print(f"{k:12s} per pass {[round(100 * a, 1) for a in r['per_pass']]}  pointwise worst "
              f"{100 * r['pointwise_worst']:.1f}")
    atomic_write_json(args.out, report)


if __name__ == "__main__":
    main()
