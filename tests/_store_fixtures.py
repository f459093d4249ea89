"""Hand-made evaluation results and run folders for the store, leaderboard and report tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from robustlab.evaluation.result import EvaluationResult

PUBLISHED = {"source": "a paper, Table 1", "clean": 99.5, "pgd": 94.3, "autoattack": 90.0}


def make_result(*, dataset: str = "mnist", eps: float = 0.3, clean: float = 0.9,
                attacks: dict[str, float] | None = None, worst: float | None = None, n: int = 100,
                aa: bool = False, warnings: list[str] | None = None,
                created_at: float = 1.7e9, tag: str = "") -> EvaluationResult:
    """A result with the given numbers; ``tag`` makes otherwise identical results distinct."""
    attacks = attacks or {f"pgd-40 linf eps={eps:.4g}": 0.5}
    protocol: list[dict[str, Any]] = [{"name": name, "threat": {"norm": "linf", "eps": eps}} for name in attacks]
    if aa:
        protocol = [*protocol[:1], {"name": "autoattack-standard", "norm": "linf", "eps": eps, "version": "standard"}]
    return EvaluationResult(
        dataset=dataset, split="test", n=n, indices=list(range(n)), threat={"norm": "linf", "eps": eps},
        protocol=protocol, clean_accuracy=clean, robust_accuracy=dict(attacks),
        worst_case_accuracy=min(attacks.values()) if worst is None else worst, per_sample={}, seed=0,
        timings={"total": 1.5}, worst_case_n=n, sanity={"warnings": warnings or [], "tag": tag},
        model={"which": "best", "model": "mlp", "config_hash": "abc123"}, created_at=created_at,
        versions={"robustlab": "0.1.0", "torch": "2.13.0"})


def make_run(root: Path, name: str, *, method: str = "pgd-at", preset: str = "p", scale: str = "quick",
             eps: float = 0.3, published: dict[str, Any] | None = None) -> Path:
    """A run folder with config.yaml and preset.yaml (no checkpoint)."""
    run = root / name
    run.mkdir(parents=True, exist_ok=True)
    cfg = {"name": name, "epochs": 2, "data": {"dataset": "mnist"}, "model": {"name": "mlp"},
           "objective": {"name": method, "attack": {"name": "pgd", "norm": "linf", "eps": eps}}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    pre = {"preset": preset, "scale": scale, "published": PUBLISHED if published is None else published,
           "eval": {"attacks": [{"name": "pgd", "norm": "linf", "eps": eps, "steps": 40}]}}
    (run / "preset.yaml").write_text(yaml.safe_dump(pre))
    return run
