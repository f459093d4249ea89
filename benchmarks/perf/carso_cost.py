"""CARSO inference cost relative to its classifier alone: median time of a forward pass, and of a forward +
backward to the input (one attack step), for the CARSO model with E reconstructions against the classifier it
wraps, on the same batch; timings interleaved so machine load hits both alike.

    .venv/bin/python benchmarks/perf/carso_cost.py RUN [--ensemble-sizes 1 8 16] [--batch 100] [--repeats 5]
        [--threads 1] [--out benchmarks/results/carso_cost.json]

RUN is a trained CARSO run folder (e.g. runs/small/carso-mnist-reduced); its classifier is the one it was built on.
Run it from the repository root: a CARSO run names its classifier's run folder as given at training time.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
from attack_overhead import bare_step, interleaved_medians

from robustlab.io.atomic import atomic_write_json
from robustlab.purification.carso import carso_of
from robustlab.runs.loading import load_trained_model

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "carso_cost.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--ensemble-sizes", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, meta = load_trained_model(args.run, "best", device="cpu")
    model.eval()
    net, _ = carso_of(model)
    classifier = net.classifier
    x = torch.rand(args.batch, *net.image_shape)
    y = torch.randint(0, net.num_classes, (args.batch,))

    def forward(m: torch.nn.Module) -> object:
        with torch.no_grad():
            return m(x)

    runs = {"classifier forward": lambda: forward(classifier),
            "classifier forward+backward": lambda: bare_step(classifier, x, y)}
    for e in args.ensemble_sizes:
        def set_e(e: int = e) -> None:
            net.ensemble_size = e
        runs[f"carso E={e} forward"] = lambda e=e: (set_e(e), forward(model))
        runs[f"carso E={e} forward+backward"] = lambda e=e: (set_e(e), bare_step(model, x, y))
    med = interleaved_medians(runs, args.repeats, torch.device("cpu"))
    ratios = {}
    for e in args.ensemble_sizes:
        ratios[f"E={e} forward"] = med[f"carso E={e} forward"] / med["classifier forward"]
        ratios[f"E={e} forward+backward"] = med[f"carso E={e} forward+backward"] / med["classifier forward+backward"]
    for k, v in ratios.items():
        print(f"{k:28s} {v:7.1f}x the classifier alone")
    atomic_write_json(args.out, {
        "run": str(args.run), "dataset": meta.get("dataset"), "batch": args.batch, "repeats": args.repeats,
        "threads": args.threads, "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__, "median_seconds": med, "ratios": ratios,
    })


if __name__ == "__main__":
    main()
