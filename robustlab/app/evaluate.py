"""Evaluating a trained run (or a checkpoint inside one) end to end: pick the protocol the run names, check the result
can be written before any attack runs, evaluate, save the result, record it in the store, plot the eps sweep."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustlab.core.config import parse_config
from robustlab.core.errors import InputError, OutputError, RobustlabError
from robustlab.data import as_dataset, load_dataset
from robustlab.evaluation.config import EvalConfig
from robustlab.evaluation.defaults import protocol_for_model, protocol_for_run
from robustlab.evaluation.protocol import run_protocol
from robustlab.evaluation.result import EvaluationResult
from robustlab.io.atomic import ensure_writable
from robustlab.runs import load_trained_model, resolve_checkpoint, run_folder_of
from robustlab.runs.loading import run_data
from robustlab.runs.user_model import load_user_model
from robustlab.store import ResultsStore
from robustlab.store.db import default_store_path
from robustlab.store.record import RunInfo
from robustlab.utils import distributed
from robustlab.utils.device import model_device, resolve_device


@dataclass
class EvaluationOutcome:
    """What one evaluation produced: the result, where it was written, the store row, and notes for the user."""

    result: EvaluationResult
    path: Path
    store_id: int | None = None
    store_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    sweep_plot: Path | None = None
    main: bool = True  # under torchrun only the main process writes and prints


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
                 show_progress: bool = False, data: str | Path | None = None) -> EvaluationOutcome:
    """Evaluate a run folder's checkpoint (or a checkpoint file) under ``eval_cfg``. The result JSON goes to ``out``
    (default RUN/eval/<which>-<time>.json, never overwriting one), whose folder is checked for writing before any
    attack runs; AutoAttack's resumable state lives beside it. A run trained on a user's file is evaluated on
    ``data`` (else its config's ``test_path``)."""
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
    dist = distributed.init_distributed()  # under torchrun: the points' batches are shared out, flags gathered
    if dist.is_main:
        ensure_writable(out.parent, "the evaluation result")
    model, meta = load_trained_model(ckpt, which, device)
    ds = (run_data(folder, eval_cfg.split, data) if "data_path" in meta or data is not None
          else load_dataset(meta["dataset"], eval_cfg.split))
    if ds.sha256:
        meta = {**meta, "data_sha256": ds.sha256, "source": ds.source}
    result = run_protocol(model, ds, eval_cfg,
                          model_info={"checkpoint": str(run), "which": which, **meta},
                          show_progress=show_progress and dist.is_main, state_dir=state_dir)
    distributed.shutdown(dist)  # every collective is done: leave the group together, then rank 0 writes
    if not dist.is_main:
        return EvaluationOutcome(result, out, main=False)
    save_result(result, out)
    outcome = EvaluationOutcome(result, out)
    record_result(outcome, folder, store)
    if result.eps_sweep:
        outcome.sweep_plot = out.parent / "robust_accuracy_vs_eps.png"
        outcome.notes += plot_sweep(result, outcome.sweep_plot, published, str(run))
    return outcome


def evaluate_model(model: nn.Module, data: Any, *, threat: Any = None, protocol: Any = "autoattack-standard",
                   n: int | None = None, batch_size: int = 500, device: str = "auto",
                   state_dir: str | Path | None = None, store: str | Path | None = None, progress: bool = False,
                   label_column: str = "label", model_info: dict[str, Any] | None = None) -> EvaluationResult:
    """Clean and robust accuracy of any ``model`` (logits for inputs in [0, 1]) on ``data`` under ``protocol``,
    with the sanity checks of every evaluation. ``data``: a dataset name (its test split), a path (``.npz``, ``.csv``,
    image folder), ``(x, y)`` tensors, an ``ImageData`` or a torch ``Dataset``. ``threat``: a ``ThreatModel`` or
    ``"linf:8/255"``. ``state_dir`` makes AutoAttack resumable; ``store`` records the result in that results store."""
    ds = as_dataset(data, "test", label_column=label_column)
    cfg = parse_config(protocol_for_model(protocol, threat, n=n, batch_size=batch_size), EvalConfig, "eval")
    model = model.to(resolve_device(device)).eval()
    check_model_fits(model, ds)
    info = {"source": ds.source, "data_sha256": ds.sha256, **(model_info or {})}
    result = run_protocol(model, ds, cfg, model_info=info, show_progress=progress,
                          state_dir=None if state_dir is None else Path(state_dir))
    if store is not None:
        with ResultsStore(store) as db:
            db.record(result, RunInfo(run=str(info.get("model", type(model).__name__)), method="external"))
    return result


def check_model_fits(model: nn.Module, data: Any) -> None:
    """One forward pass on the first points: the output must be logits (N, classes) covering every label."""
    x = data.float_images(torch.arange(min(2, len(data)))).to(model_device(model))
    with torch.no_grad():
        out = model(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(x):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"the model must return logits of shape (N, classes) for inputs of shape {tuple(x.shape)}, "
                         f"got {shape}" + ("; wrap it with robustlab.models.SelectOutput(model, 0)"
                                           if isinstance(out, (tuple, list, dict)) else ""))
    top = int(data.labels.max()) if len(data) else -1
    if top >= out.shape[1]:
        raise InputError(f"the data has label {top} but the model outputs only {out.shape[1]} classes")


def evaluate_user_model(spec: str, data: str | Path, *, weights: str | Path | None = None,
                        args: dict[str, Any] | None = None, mean: Any = None, std: Any = None,
                        threat: Any = None, protocol: Any = "autoattack-standard", n: int | None = None,
                        batch_size: int = 500, device: str = "auto", out: Path | None = None,
                        store: Path | None = None, label_column: str = "label",
                        show_progress: bool = False) -> EvaluationOutcome:
    """``robustlab evaluate --model FILE.py:NAME --weights W --data D``: the result (with the sha256 of the weights
    and of the data) goes to ``out`` (default ``evals/<NAME>-<time>/result.json``, checked for writing before any
    attack runs; AutoAttack's resumable state beside it) and to the results store."""
    model, info = load_user_model(spec, args=args, weights=weights, mean=mean, std=std)
    ds = as_dataset(data, "test", label_column=label_column)
    if "mean" in info:
        channels = ds.info.shape[0] if len(ds.info.shape) == 3 else ds.info.shape[-1]
        if len(info["mean"]) not in (1, channels):
            raise InputError(f"--mean/--std have {len(info['mean'])} values but the data has {channels} "
                             f"{'channels' if len(ds.info.shape) == 3 else 'features'}: give one per channel")
    if out is None:
        out = Path("evals") / f"{spec.rpartition(':')[2]}-{datetime.now():%Y%m%d-%H%M%S}" / "result.json"
    ensure_writable(out.parent, "the evaluation result")
    result = evaluate_model(model, ds, threat=threat, protocol=protocol, n=n, batch_size=batch_size,
                            device=device, state_dir=out.parent / f"{out.stem}.state", progress=show_progress,
                            label_column=label_column, model_info=info)
    save_result(result, out)
    outcome = EvaluationOutcome(result, out)
    run = RunInfo(run=spec.rpartition(":")[2], method="external")
    try:
        with ResultsStore(store) as db:
            outcome.store_id = db.record(result, run, out)
            outcome.store_path = db.path
    except RobustlabError as exc:
        outcome.notes.append(f"not recorded in the results store: {exc}")
    return outcome
