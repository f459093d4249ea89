"""APGD overhead: time of one APGD-CE step divided by one bare forward+backward (input gradient), SmallCNN on MNIST.

Same method as ``attack_overhead.py`` (whose timing helpers this imports): ``apgd_step_marginal`` =
(T(APGD, s2 steps) - T(APGD, s1 steps)) / (s2 - s1) / T(bare), the cost of one more step including APGD's momentum,
two projections and best-point bookkeeping; ``apgd_call_per_step`` = T(APGD, s2) / (s2 * T(bare)), the whole call.
PGD figures on the same batch are reported beside them for reference. Timings are interleaved, medians taken.

    .venv/bin/python benchmarks/perf/apgd_overhead.py [--out benchmarks/results/apgd_overhead.json] [--repeats 5]
        [--steps 10 30] [--batch 128]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attack_overhead import bare_step, interleaved_medians, load_model  # noqa: E402

from robustlab.attacks import PGD, attack_mode  # noqa: E402
from robustlab.attacks.apgd import APGD  # noqa: E402
from robustlab.core.threat import ThreatModel  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "apgd_overhead.json"


def bench(batch: int = 128, steps: tuple[int, int] = (10, 30), repeats: int = 5, eps: float = 0.3) -> dict:
    """Interleaved timings of bare steps, APGD-CE and PGD at two step counts on the SmallCNN."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = load_model("small-cnn", "mnist").to(device).eval()
    x = torch.rand(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    threat = ThreatModel("linf", eps)
    s1, s2 = steps
    apgd1, apgd2 = APGD(model, threat, steps=s1), APGD(model, threat, steps=s2)
    pgd1, pgd2 = PGD(model, threat, steps=s1), PGD(model, threat, steps=s2)

    def bare() -> None:
        with attack_mode(model):
            bare_step(model, x, y)

    runs: dict[str, Callable[[], object]] = {
        "bare": bare,
        "apgd_s1": lambda: apgd1(x, y),
        "apgd_s2": lambda: apgd2(x, y),
        "pgd_s1": lambda: pgd1(x, y),
        "pgd_s2": lambda: pgd2(x, y),
    }
    med = interleaved_medians(runs, repeats, device)
    bare_t = med["bare"]
    return {
        "model": "small-cnn", "dataset": "mnist", "batch": batch, "device": str(device),
        "threads": torch.get_num_threads(), "repeats": repeats, "steps": [s1, s2], "median_s": med,
        "ratios": {
            "apgd_step_marginal": (med["apgd_s2"] - med["apgd_s1"]) / (s2 - s1) / bare_t,
            "apgd_call_per_step": med["apgd_s2"] / (s2 * bare_t),
            "pgd_step_marginal": (med["pgd_s2"] - med["pgd_s1"]) / (s2 - s1) / bare_t,
            "pgd_call_per_step": med["pgd_s2"] / (s2 * bare_t),
        },
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the ratios and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report path")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median taken)")
    parser.add_argument("--batch", type=int, default=128, help="batch size")
    parser.add_argument("--steps", type=int, nargs=2, default=(10, 30), help="the two step counts s1 < s2")
    args = parser.parse_args(argv)
    result = bench(batch=args.batch, steps=tuple(args.steps), repeats=args.repeats)
    q = result["ratios"]
    print(f"small-cnn batch {result['batch']} ({result['device']}): bare {1e3 * result['median_s']['bare']:.2f} ms")
    print(f"APGD-CE per step: marginal {q['apgd_step_marginal']:.3f}x, whole call {q['apgd_call_per_step']:.3f}x")
    print(f"PGD     per step: marginal {q['pgd_step_marginal']:.3f}x, whole call {q['pgd_call_per_step']:.3f}x")
    report = {"benchmark": "apgd_overhead", "torch": torch.__version__, "python": platform.python_version(),
              "machine": platform.machine(), "results": [result]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
