"""Evaluating a trained run (or a checkpoint inside one) end to end: pick the protocol the run names, check the result
can be written before any attack runs, evaluate, save the result, record it in the store, plot the eps sweep."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from robustlab.core.config import parse_config
from robustlab.core.errors import InputError, OutputError, RobustlabError
from robustlab.data import load_dataset
from robustlab.evaluation.config import EvalConfig
from robustlab.evaluation.defaults import protocol_for_run
from robustlab.evaluation.protocol import run_protocol
from robustlab.evaluation.result import EvaluationResult
from robustlab.io.atomic import ensure_writable
from robustlab.runs import load_trained_model, resolve_checkpoint, run_folder_of
from robustlab.store import ResultsStore
from robustlab.store.db import default_store_path


@dataclass
class EvaluationOutcome:
    """What one evaluation produced: the result, where it was written, the store row, and notes for the user."""

    result: EvaluationResult
    path: Path
    store_id: int | None = None
    store_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    sweep_plot: Path | None = None


def store_for(store: str | Path | None, runs_dir: str | Path | None = None) -> Path:
    """The results store: ``store`` if given, else ``$ROBUSTLAB_STORE``, else ``results.sqlite`` in ``runs_dir``."""
    return Path(store) if store is not None else default_store_path(runs_dir)


def resolve_protocol(run: str | Path, *, which: str = "best", protocol: str = "preset",
                     preset_eval: dict[str, Any] | None = None, eps: float | None = None, norm: str | None = None,
                     overrides: dict[str, Any] | None = None) -> tuple[EvalConfig, dict[str, Any]]:
    """(validated protocol, published numbers) for ``robustlab evaluate RUN`` with its options (see
    :func:`robustlab.evaluation.defaults.protocol_for_run`); a missing run or checkpoint is reported first."""
    resolve_checkpoint(run, which)
    eval_dict, published = protocol_for_run(run_folder_of(run), protocol=protocol, preset_eval=preset_eval, eps=eps,
                                            norm=norm, overrides=overrides)
    return parse_config(eval_dict, EvalConfig, "eval"), published


def save_result(result: EvaluationResult, out: Path) -> None:
    """Write the result; if that fails after all the attacks ran, print it as JSON so it is not lost, then fail."""
    try:
        result.save(out)
    except OSError as exc:
        print(json.dumps(result.to_dict(), sort_keys=True))
        raise OutputError(f"could not write the result to {out} ({exc.strerror or exc}); it was printed above as JSON. "
                          "Pass --out PATH to write it elsewhere next time") from None


def record_result(outcome: EvaluationOutcome, run_dir: Path | None, store: Path | None) -> None:
    """Record an evaluation in the results store; a store that cannot be used costs a note, not the result."""
    try:
        with ResultsStore(store) as db:
            outcome.store_id = db.record(outcome.result, run_dir, outcome.path)
            outcome.store_path = db.path
    except RobustlabError as exc:
        outcome.notes.append(f"not recorded in the results store: {exc}")


def plot_sweep(result: EvaluationResult, path: Path, published: dict[str, Any] | None, title: str) -> list[str]:
    """Plot the eps sweep (with the published sweep when it is well formed); returns notes for the user."""
    from robustlab.analysis.plots import plot_robust_accuracy_vs_eps

    pub = (published or {}).get("eps_sweep") or None
    try:
        plot_robust_accuracy_vs_eps(result.eps_sweep, path, published=pub, title=title)
    except InputError as exc:  # a malformed published sweep must not cost the measured plot
        plot_robust_accuracy_vs_eps(result.eps_sweep, path, title=title)
        return [f"published eps_sweep not plotted: {exc}"]
    return []


def evaluate_run(run: str | Path, eval_cfg: EvalConfig, *, which: str = "best", published: dict | None = None,
                 device: str = "auto", store: Path | None = None, out: Path | None = None,
                 show_progress: bool = False) -> EvaluationOutcome:
    """Evaluate a run folder's checkpoint (or a checkpoint file) under ``eval_cfg``. The result JSON goes to ``out``
    (default RUN/eval/<which>-<time>.json, never overwriting one), whose folder is checked for writing before any
    attack runs; AutoAttack's resumable state lives beside it."""
    run = Path(run)
    ckpt = resolve_checkpoint(run, which)
    if run.is_file():
        which = run.stem  # a checkpoint file: label results by its name
    folder = run_folder_of(run)
    if out is None:
        out = folder / "eval" / f"{which}-{datetime.now():%Y%m%d-%H%M%S-%f}.json"
        state_dir = folder / "eval" / f"state-{which}"
    else:
        state_dir = out.parent / f"{out.stem}.state"
    ensure_writable(out.parent, "the evaluation result")
    model, meta = load_trained_model(ckpt, which, device)
    data = load_dataset(meta["dataset"], eval_cfg.split)
    result = run_protocol(model, data, eval_cfg, model_info={"checkpoint": str(run), "which": which, **meta},
                          show_progress=show_progress, state_dir=state_dir)
    save_result(result, out)
    outcome = EvaluationOutcome(result, out)
    record_result(outcome, folder, store)
    if result.eps_sweep:
        outcome.sweep_plot = out.parent / "robust_accuracy_vs_eps.png"
        outcome.notes += plot_sweep(result, outcome.sweep_plot, published, str(run))
    return outcome
