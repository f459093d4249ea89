"""``EvaluationResult``: one evaluation as data, with the protocol written into it."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from robustlab.io.atomic import atomic_write_json


def versions() -> dict[str, str]:
    """Versions that affect numbers: robustlab, torch, numpy, python."""
    import numpy
    import torch

    from robustlab import __version__

    return {"robustlab": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


@dataclass
class EvaluationResult:
    """Clean and robust accuracy of one model under one protocol.

    ``robust_accuracy`` is cumulative in protocol order (each attack runs only on points every earlier attack
    failed on, the AutoAttack convention). AutoAttack entries (``autoattack-...: attack``) are cumulative within
    AutoAttack, which runs standalone as in the reference, possibly on only the first points.
    ``worst_case_accuracy`` is the pointwise worst case over every attack, on the first ``worst_case_n`` points
    (all of which every attack ran on). ``eps_sweep`` maps each swept radius (``repr(float(eps))``) to the
    accuracy of the protocol's first attack run alone at that radius on the first ``eps_sweep_n`` points
    (empty when no sweep ran; results written before the sweep existed load with the defaults).
    ``classifier_only`` (CARSO, the paper's MNIST protocol; :mod:`robustlab.evaluation.classifier_only`) holds
    AutoAttack on the classifier alone judged on CARSO, labelled with what it measures: never in
    ``robust_accuracy`` nor the worst case (empty when not run).
    """

    dataset: str
    split: str
    n: int
    indices: list[int]
    threat: dict[str, Any]
    protocol: list[dict[str, Any]]
    clean_accuracy: float
    robust_accuracy: dict[str, float]
    worst_case_accuracy: float
    per_sample: dict[str, list[bool]]
    seed: int
    timings: dict[str, float]
    worst_case_n: int | None = None
    sanity: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=versions)
    created_at: float = field(default_factory=time.time)
    eps_sweep: dict[str, float] = field(default_factory=dict)
    eps_sweep_n: int | None = None
    eps_sweep_attack: dict[str, Any] | None = None
    classifier_only: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return asdict(self)

    def save(self, path: str | Path) -> None:
        """Write atomically as JSON."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> EvaluationResult:
        """Read a result written by :meth:`save`."""
        return cls(**json.loads(Path(path).read_text()))

    def summary_rows(self) -> list[tuple[str, float]]:
        """(label, accuracy) rows for a table: clean, then each attack cumulatively."""
        return [("clean", self.clean_accuracy), *self.robust_accuracy.items()]
