"""Training a preset into its run folder: resolve the preset, validate by building the trainer (so a bad config
leaves no folder), record the preset's protocol in the folder, train (resuming where a run stopped)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from robustlab.presets import Preset, load_preset
from robustlab.runs import write_preset_file
from robustlab.training.trainer import Trainer, TrainSummary


def prepare_trainer(preset: Preset, run_dir: Path, *, show_progress: bool = True) -> Trainer:
    """A trainer for ``preset`` in ``run_dir``, built (validated) before ``preset.yaml`` is written there."""
    trainer = Trainer(preset.train, run_dir, show_progress=show_progress)
    write_preset_file(run_dir, preset)
    return trainer


def train_preset(preset: str, scale: str = "quick", *, overrides: dict[str, Any] | None = None,
                 variant: str | None = None, name: str | None = None, runs_dir: str | Path = "runs",
                 fresh: bool = False, show_progress: bool = True) -> tuple[Preset, Path, TrainSummary]:
    """Train ``preset`` at ``scale`` into ``runs_dir/<run name>``; ``fresh`` drops the folder's checkpoints first."""
    p = load_preset(preset, scale, overrides, variant=variant)
    if name:
        p.train.name = name
    run_dir = Path(runs_dir) / p.train.name
    if fresh and (run_dir / "checkpoints").exists():
        shutil.rmtree(run_dir / "checkpoints")
    summary = prepare_trainer(p, run_dir, show_progress=show_progress).fit()
    return p, run_dir, summary
