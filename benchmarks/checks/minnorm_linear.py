"""Minimal-norm quality of FAB and FAB-T on analytic linear models: found perturbation norm / closed-form optimum.

For ``logits = W x + b`` (inputs in [0.35, 0.65], so the [0, 1] box never binds) the smallest untargeted perturbation
is ``min_j (z_y - z_j) / ||w_y - w_j||_q`` with ``q`` the dual norm (1 for L-inf, 2 for L2). A ratio of 1 is optimal;
FAB's extrapolation ``eta`` and the finite number of steps keep it slightly above.

    .venv/bin/python benchmarks/checks/minnorm_linear.py [--out benchmarks/results/minnorm_linear.json] [--steps 100]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from robustlab.attacks.fab import FAB, FABTargeted
from robustlab.core.threat import ThreatModel, lp_norm

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "minnorm_linear.json"
SHAPE = (3, 16, 16)
NUM_CLASSES = 10


def linear_model(seed: int) -> nn.Module:
    """A random linear classifier whose logits are centred on the inputs' range, so every class gets predicted."""
    gen = torch.Generator().manual_seed(seed)
    d = SHAPE[0] * SHAPE[1] * SHAPE[2]
    lin = nn.Linear(d, NUM_CLASSES)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(NUM_CLASSES, d, generator=gen) * 0.05)
        lin.bias.copy_(torch.randn(NUM_CLASSES, generator=gen) * 0.01 - lin.weight.sum(1) * 0.5)
    return nn.Sequential(nn.Flatten(), lin)


def optimum(model: nn.Module, x: Tensor, y: Tensor, norm: str) -> Tensor:
    """Closed-form minimal untargeted perturbation per sample (the nearest pairwise hyperplane)."""
    w, b = model[1].weight.detach(), model[1].bias.detach()
    z = x.flatten(1) @ w.T + b
    diff = w[y][:, None, :] - w[None]
    dual = diff.abs().sum(-1) if norm == "linf" else diff.norm(dim=-1)
    dist = (z.gather(1, y[:, None]) - z) / dual
    return dist.scatter(1, y[:, None], float("inf")).min(1).values


def measure(attack_cls: type, norm: str, seeds: int, n: int, steps: int) -> dict:
    """Ratios found / optimal over ``seeds`` models of ``n`` points each, plus success rate and time."""
    ratios: list[float] = []
    found_total, elapsed = 0, 0.0
    for seed in range(seeds):
        model = linear_model(seed)
        x = 0.35 + 0.3 * torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(1000 + seed))
        with torch.no_grad():
            y = model(x).argmax(1)
        opt = optimum(model, x, y, norm)
        attack = attack_cls(model, ThreatModel(norm, float(opt.max())), steps=steps)
        start = time.perf_counter()
        x_min, found = attack.minimal_perturbation(x, y)
        elapsed += time.perf_counter() - start
        ratios += (lp_norm(x_min - x, norm) / opt)[found].tolist()
        found_total += int(found.sum())
    return {
        "median_ratio": statistics.median(ratios),
        "max_ratio": max(ratios),
        "min_ratio": min(ratios),
        "found": found_total / (seeds * n),
        "points": seeds * n,
        "seconds": round(elapsed, 3),
    }


def main() -> None:
    """Run all (attack, norm) cases, print a table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--points", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, dict] = {}
    for norm in ("linf", "l2"):
        for name, cls in (("fab", FAB), ("fab-t", FABTargeted)):
            row = measure(cls, norm, args.seeds, args.points, args.steps)
            results[f"{name}/{norm}"] = row
            print(
                f"{name:6s} {norm:5s} median {row['median_ratio']:.4f}  max {row['max_ratio']:.4f}  "
                f"min {row['min_ratio']:.4f}  found {row['found']:.2f}  {row['seconds']:.2f}s"
            )
    report = {
        "benchmark": "minnorm_linear",
        "metric": "FAB perturbation norm / closed-form optimum on linear models (1.0 = optimal)",
        "config": {
            "shape": list(SHAPE),
            "classes": NUM_CLASSES,
            "seeds": args.seeds,
            "points_per_seed": args.points,
            "steps": args.steps,
            "restarts": 1,
            "threads": args.threads,
        },
        "results": results,
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
