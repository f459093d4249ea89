"""Attack overhead: time of one PGD / FGSM step divided by one bare forward+backward (input gradient).

The bare step is what any attack must pay (forward, loss, backward to the input, parameters frozen, eval mode);
the ratio shows what the attack machinery adds on top. Target: PGD per step <= 1.10x.

    .venv/bin/python benchmarks/perf/attack_overhead.py [--out benchmarks/results/attack_overhead.json] [--repeats 5]

Two PGD figures are reported: ``pgd_step_marginal`` = (T(PGD, s2 steps) - T(PGD, s1 steps)) / (s2 - s1) / T(bare),
the cost of one more step, and ``pgd_call_per_step`` = T(PGD, s2 steps) / (s2 * T(bare)), the whole call including
input checks, random start and the output check. FGSM is one whole call / T(bare). Timings are interleaved within
each repeat and the median is taken, so background load affects numerator and denominator alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.attacks import FGSM, PGD, attack_mode
from robustlab.core.threat import ThreatModel
from robustlab.models import create_model

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "attack_overhead.json"

# (name, dataset, batch, input shape, eps, steps for the two PGD timings)
CASES = [
    ("small-cnn", "mnist", 128, (1, 28, 28), 0.3, (5, 25)),
    ("preact-resnet18", "cifar10", 32, (3, 32, 32), 8 / 255, (2, 8)),
]


def load_model(name: str, dataset: str) -> nn.Module:
    """The registry model (normalisation included), freshly initialised: timings do not depend on weights."""
    return create_model(name, dataset)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of one call."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds per named run after one warm-up call each; runs are interleaved so load hits all alike."""
    for fn in runs.values():  # warm-up: allocator, kernels, lazy init
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            times[k].append(timed(fn, device))
    return {k: statistics.median(v) for k, v in times.items()}


def bare_step(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """One forward + backward to the input: the irreducible cost of a gradient attack step."""
    x_req = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x_req), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x_req)
    return grad


def bench_case(
    name: str, dataset: str, batch: int, shape: tuple[int, ...], eps: float, steps: tuple[int, int], repeats: int
) -> dict:
    """Interleaved timings of bare steps, PGD (two step counts), FGSM and FGSM-RS on one model and batch."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = load_model(name, dataset).to(device).eval()
    x = torch.rand(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    threat = ThreatModel("linf", eps)
    s1, s2 = steps
    pgd1, pgd2 = PGD(model, threat, steps=s1), PGD(model, threat, steps=s2)
    fgsm, fgsm_rs = FGSM(model, threat), FGSM(model, threat, random_start=True)

    def bare() -> None:
        with attack_mode(model):
            bare_step(model, x, y)

    runs: dict[str, Callable[[], object]] = {
        "bare": bare,
        "pgd_s1": lambda: pgd1(x, y),
        "pgd_s2": lambda: pgd2(x, y),
        "fgsm": lambda: fgsm(x, y),
        "fgsm_rs": lambda: fgsm_rs(x, y),
    }
    med = interleaved_medians(runs, repeats, device)
    bare_t = med["bare"]
    return {
        "model": name,
        "dataset": dataset,
        "batch": batch,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "pgd_steps": [s1, s2],
        "median_s": med,
        "ratios": {
            "pgd_step_marginal": (med["pgd_s2"] - med["pgd_s1"]) / (s2 - s1) / bare_t,
            "pgd_call_per_step": med["pgd_s2"] / (s2 * bare_t),
            "fgsm_call": med["fgsm"] / bare_t,
            "fgsm_rs_call": med["fgsm_rs"] / bare_t,
        },
    }


def main(argv: list[str] | None = None) -> dict:
    """Run every case, print a table and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report path")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median taken)")
    parser.add_argument("--models", nargs="+", default=[c[0] for c in CASES], help="subset of the models to time")
    args = parser.parse_args(argv)
    results = [bench_case(*case, repeats=args.repeats) for case in CASES if case[0] in args.models]
    header = f"{'model':<18}{'batch':>6}{'bare ms':>10}{'PGD marg.':>11}{'PGD call':>10}{'FGSM':>8}{'FGSM-RS':>9}"
    print(header)
    for r in results:
        q = r["ratios"]
        print(
            f"{r['model']:<18}{r['batch']:>6}{1e3 * r['median_s']['bare']:>10.2f}{q['pgd_step_marginal']:>10.3f}x"
            f"{q['pgd_call_per_step']:>9.3f}x{q['fgsm_call']:>7.3f}x{q['fgsm_rs_call']:>8.3f}x"
        )
    report = {
        "benchmark": "attack_overhead",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
