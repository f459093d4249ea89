"""PGD-AT training throughput against its ideal, and the bf16 speed-up.

A PGD-k adversarial-training step cannot cost less than k attack steps (forward + backward to the input) plus
one training step (forward + backward + optimizer update). ``ratio_to_ideal`` = measured / that ideal, so 1.0
means the trainer and objective add nothing. Measured through the real code path (objective + optimizer) on the
SmallCNN with batch 128, in fp32 and under bf16 autocast; timings are interleaved and the median is taken.

    .venv/bin/python benchmarks/perf/train_throughput.py [--out benchmarks/results/train_throughput.json] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from attack_overhead import bare_step, timed

from robustlab.attacks import attack_mode
from robustlab.models import create_model
from robustlab.training.objectives import create_objective
from robustlab.training.objectives.base import ObjectiveConfig

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "train_throughput.json"
STEPS = (1, 5, 10, 40)


def measure(bf16: bool, repeats: int, batch: int = 128) -> dict:
    """Median seconds of a bare input-gradient step, a standard training step and PGD-k AT steps."""
    torch.manual_seed(0)
    model = create_model("small-cnn", "mnist")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else nullcontext
    objectives = {k: create_objective(ObjectiveConfig(name="pgd-at", attack={"name": "pgd", "eps": 0.3, "steps": k}))
                  for k in STEPS}

    def grad_step() -> None:
        with attack_mode(model), ctx():
            bare_step(model, x, y)

    def train_step(objective=None) -> None:  # noqa: ANN001
        model.train()
        with ctx():
            loss = objective(model, x, y)[0] if objective else F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    samples: dict[str, list[float]] = {"grad": [], "train": [], **{f"pgd{k}": [] for k in STEPS}}
    for i in range(repeats + 1):
        times = {"grad": timed(grad_step, x.device), "train": timed(train_step, x.device)}
        for k, obj in objectives.items():
            times[f"pgd{k}"] = timed(lambda o=obj: train_step(o), x.device)
        if i:  # the first round is warm-up
            for key, t in times.items():
                samples[key].append(t)
    med = {k: statistics.median(v) for k, v in samples.items()}
    out = {"grad_step_s": med["grad"], "train_step_s": med["train"], "pgd_at": {}}
    for k in STEPS:
        ideal = k * med["grad"] + med["train"]
        out["pgd_at"][k] = {"step_s": med[f"pgd{k}"], "ratio_to_ideal": med[f"pgd{k}"] / ideal,
                            "images_per_s": batch / med[f"pgd{k}"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__},
              "fp32": measure(False, args.repeats), "bf16": measure(True, args.repeats)}
    print(f"{'k':>3} {'fp32 img/s':>11} {'ratio':>6} {'bf16 img/s':>11} {'ratio':>6} {'bf16 speed-up':>13}")
    for k in STEPS:
        a, b = result["fp32"]["pgd_at"][k], result["bf16"]["pgd_at"][k]
        print(f"{k:>3} {a['images_per_s']:>11.0f} {a['ratio_to_ideal']:>6.2f} {b['images_per_s']:>11.0f} "
              f"{b['ratio_to_ideal']:>6.2f} {a['step_s'] / b['step_s']:>12.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
