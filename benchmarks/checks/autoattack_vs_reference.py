"""Our native AutoAttack vs the reference implementation (``pyautoattack``) on the same model and points.

Reports, for one version (default ``standard``): robust accuracy and wall time of each, their ratio, and the
per-attack cumulative accuracies of both (the reference's read from its own log lines) and the indices of the points
each leaves robust. Both run in fp32 on the same device (``--device``) with the same batch size and seed, one after
the other.

    .venv/bin/python benchmarks/checks/autoattack_vs_reference.py RUN_DIR [--n 500] [--eps 0.3] [--version standard]
        [--which best] [--seed 0] [--out benchmarks/results/autoattack_vs_reference.json]
        [--skip-reference | --skip-ours]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import re
import time
from pathlib import Path

import torch

from robustlab.attacks.autoattack import AutoAttack
from robustlab.core.threat import ThreatModel
from robustlab.data import load_dataset
from robustlab.runs.loading import load_trained_model
from robustlab.utils.device import model_device

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "autoattack_vs_reference.json"
REFERENCE_NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}  # the reference's names (L1 was run as L2 before)
REFERENCE_STAGE_LINE = re.compile(r"robust accuracy after (\S+): ([0-9.]+)%")


class _StageAccuracies(logging.Handler):
    """Collects the reference's "robust accuracy after ATTACK: X%" debug lines, its only per-attack record."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.accuracy_after: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        match = REFERENCE_STAGE_LINE.match(record.getMessage())
        if match:
            self.accuracy_after[match.group(1).lower()] = float(match.group(2)) / 100


def reference_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> dict:
    """pyautoattack's robust accuracy and seconds on (x, y)."""
    from pyautoattack import AutoAttack as Reference

    ref = Reference(model, device=str(x.device), eps=args.eps, norm=REFERENCE_NORMS[args.norm], seed=args.seed,
                    version=args.version)
    stages = _StageAccuracies()
    logger = logging.getLogger("auto-attack")
    previous_level = logger.level
    logger.addHandler(stages)
    logger.setLevel(logging.DEBUG)
    try:
        start = time.perf_counter()
        x_adv, _ = ref.run_standard_evaluation(x, y, batch_size=args.batch_size)
        seconds = time.perf_counter() - start
    finally:
        logger.removeHandler(stages)
        logger.setLevel(previous_level)
    with torch.no_grad():
        robust = model(x_adv).argmax(1) == y
    return {"robust_accuracy": float(robust.float().mean()), "accuracy_after": stages.accuracy_after,
            "robust_points": robust.nonzero().squeeze(1).tolist(), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--norm", default="linf")
    parser.add_argument("--version", default="standard")
    parser.add_argument("--which", default="best")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0, help="both implementations' seed")
    skip = parser.add_mutually_exclusive_group()
    skip.add_argument("--skip-reference", action="store_true")
    skip.add_argument("--skip-ours", action="store_true", help="run the reference only (e.g. in a second process)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto; both implementations run there")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    model, meta = load_trained_model(args.run, args.which, args.device)
    test = load_dataset(meta["dataset"], "test")
    device = model_device(model)
    x, y = test.float_images(range(args.n)).to(device), test.labels[: args.n].to(device)
    result: dict = {
        "run": str(args.run), "n": args.n, "eps": args.eps, "norm": args.norm, "version": args.version,
        "seed": args.seed, "threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
    }
    if not args.skip_ours:
        start = time.perf_counter()
        ours = AutoAttack(model, ThreatModel(args.norm, args.eps), version=args.version, seed=args.seed,
                          batch_size=args.batch_size).run(x, y)
        result["ours"] = {"clean_accuracy": ours.clean_accuracy, "robust_accuracy": ours.robust_accuracy,
                          "accuracy_after": ours.accuracy_after, "timings": ours.timings,
                          "robust_points": ours.robust_mask.nonzero().squeeze(1).tolist(),
                          "seconds": time.perf_counter() - start}
    if not args.skip_reference:
        result["reference"] = reference_accuracy(model, x, y, args)
    if "ours" in result and "reference" in result:
        result["time_ratio_ours_over_reference"] = result["ours"]["seconds"] / result["reference"]["seconds"]
        ours_only, reference_only = (sorted(set(a) - set(b)) for a, b in (
            (result["ours"]["robust_points"], result["reference"]["robust_points"]),
            (result["reference"]["robust_points"], result["ours"]["robust_points"])))
        result["robust_for_ours_only"], result["robust_for_reference_only"] = ours_only, reference_only
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
