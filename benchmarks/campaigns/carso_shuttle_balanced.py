"""Plain and balanced accuracy (mean per-class recall) of every row of the latest best-checkpoint evaluation of shuttle
runs, from the evaluation's per-point flags and the test labels (7% of the rows are anomalies, so plain accuracy
rewards predicting "normal"); the worst case is the pointwise AND over the attacks.

    python benchmarks/campaigns/carso_shuttle_balanced.py RUN [RUN ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from robustlab.data import load_dataset


def balanced(correct: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over the classes present of the fraction of that class's points that are correct."""
    return sum(float(correct[labels == c].float().mean()) for c in labels.unique()) / len(labels.unique())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    labels = load_dataset("shuttle", "test").labels
    for run in args.runs:
        result = json.loads(max((run / "eval").glob("best-*.json")).read_text())
        y = labels[torch.tensor(result["indices"])]
        print(f"{run}: {result['n']} rows, {int(y.sum())} anomalies")
        worst = None
        for name, flags in result["per_sample"].items():
            ok = torch.tensor(flags, dtype=torch.bool)
            if name != "clean":
                worst = ok if worst is None else worst & ok
            print(f"  {name}: {100 * float(ok.float().mean()):.1f}% (balanced {100 * balanced(ok, y):.1f}%)")
        if worst is not None:
            print(f"  worst case: {100 * float(worst.float().mean()):.1f}% (balanced {100 * balanced(worst, y):.1f}%)")


if __name__ == "__main__":
    main()
