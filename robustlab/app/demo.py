"""The demo job: train a robust MNIST SmallCNN in minutes, evaluate it honestly, and check the four promises the
README makes about it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from robustlab.app.evaluate import evaluate_run, store_for
from robustlab.app.train import prepare_trainer
from robustlab.evaluation.result import EvaluationResult
from robustlab.io.atomic import atomic_write_json
from robustlab.presets import load_preset


@dataclass
class DemoOutcome:
    """The demo's evaluation, its checks (label -> passed), timings and run folder."""

    result: EvaluationResult
    checks: dict[str, bool]
    train_seconds: float
    total_seconds: float
    run_dir: Path


def demo_checks(result: EvaluationResult) -> dict[str, bool]:
    """The demo's promises: clean >= 95%, PGD-50x3 >= 70%, the APGD-DLR worst case within 5 points of PGD-50x3,
    and accuracy below 10% at eps 0.5 (no gradient masking)."""
    pgd_acc = next(iter(result.robust_accuracy.values()))
    return {
        "clean >= 95%": result.clean_accuracy >= 0.95,
        "PGD-50x3 robust >= 70%": pgd_acc >= 0.70,
        "worst case (+ APGD-DLR) within 5 points of PGD-50x3": pgd_acc - result.worst_case_accuracy <= 0.05,
        "eps=0.5 accuracy < 10% (no masking)": bool(result.sanity.get("large_eps_collapsed")),
    }


def run_demo(runs_dir: str | Path = "runs", *, show_progress: bool = True) -> DemoOutcome:
    """Train and evaluate the ``demo`` preset; writes ``demo.json`` (checks and timings) into its run folder."""
    t0 = time.perf_counter()
    p = load_preset("demo", "quick")
    run_dir = Path(runs_dir) / p.train.name
    prepare_trainer(p, run_dir, show_progress=show_progress).fit()
    t_train = time.perf_counter() - t0
    outcome = evaluate_run(run_dir, p.eval, store=store_for(None, runs_dir), show_progress=show_progress)
    total = time.perf_counter() - t0
    checks = demo_checks(outcome.result)
    atomic_write_json(run_dir / "demo.json", {"checks": checks, "train_seconds": t_train, "total_seconds": total})
    return DemoOutcome(outcome.result, checks, t_train, total, run_dir)
