"""One AToP experiment end to end: train the purifier in front of a trained classifier (pre-training, then AToP
fine-tuning; resumable), then evaluate the defence with the pre-trained and with the fine-tuned purifier under the
preset's protocols, so "with vs without fine-tuning" comes from one run. Results: ``<run>/eval/<phase>-<P>.json``
(one :class:`EvaluationResult` per phase and protocol; an existing file with the same settings is reused) and
``<run>/atop_summary.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robustlab.core.dicts import deep_merge
from robustlab.core.errors import InputError
from robustlab.data import load_dataset
from robustlab.evaluation.atop import evaluate_atop, result_names
from robustlab.evaluation.result import EvaluationResult
from robustlab.io.atomic import atomic_write_json
from robustlab.presets.atop import AToPPreset, load_atop_preset
from robustlab.purification.atop.pipeline import AToPDefense
from robustlab.runs.loading import load_trained_model
from robustlab.training.atop import PurifierTrainer, load_purifier

PHASE_COPIES = ("pretrained", "finetuned")


def _settings_key(preset: AToPPreset, phase: str, classifier_run: Path) -> dict[str, Any]:
    return {"phase": phase, "classifier": str(classifier_run), "atop": preset.atop.model_dump(mode="json"),
            "eval": preset.eval.model_dump(mode="json")}


def run_atop(preset: AToPPreset, classifier_run: str | Path, run_dir: str | Path, *,
             show_progress: bool = True) -> dict[str, Any]:
    """Train (or resume) and evaluate; returns the summary {phase: {protocol: {clean, robust, worst}}}."""
    classifier_run, run_dir = Path(classifier_run), Path(run_dir)
    classifier, meta = load_trained_model(classifier_run, "best")
    classifier.eval().requires_grad_(False)  # frozen by design: no "arrived trainable" warning
    if meta.get("dataset") != preset.atop.dataset:
        raise InputError(f"{classifier_run} is a {meta.get('dataset')!r} classifier but {preset.name} defends "
                         f"{preset.atop.dataset!r}: train its classifier first (robustlab train {preset.name})")
    PurifierTrainer(preset.atop, classifier, run_dir, show_progress=show_progress).fit()
    test = load_dataset(preset.atop.dataset, "test", root=preset.atop.data_root)
    n = min(preset.eval.n, len(test))
    x, y = test.float_images(range(n)), test.labels[:n]
    summary: dict[str, Any] = {}
    for phase in PHASE_COPIES:
        if phase == "finetuned" and preset.atop.finetune.epochs == 0:
            continue
        key = _settings_key(preset, phase, classifier_run)
        paths = {p: run_dir / "eval" / f"{phase}-{p}.json" for p in result_names(preset.eval)}
        results = _cached(paths, key)
        if results is None:
            purifier, _ = load_purifier(run_dir / "checkpoints" / f"{phase}.safetensors", preset.atop.dataset)
            defense = AToPDefense(preset.atop.transform.build(), purifier, classifier,
                                  composite=preset.atop.transform.composite)
            results = evaluate_atop(defense, x, y, preset.eval, dataset=preset.atop.dataset,
                                    model_info={"phase": phase, "run": str(run_dir), "settings": key},
                                    show_progress=show_progress)
            for name, result in results.items():
                result.save(paths[name])
        summary[phase] = {name: {"clean": r.clean_accuracy, "robust": r.robust_accuracy,
                                 "worst_case": r.worst_case_accuracy, "n": r.n, "seconds": r.timings.get("total"),
                                 "sanity_warnings": r.sanity.get("warnings", [])}
                          for name, r in results.items()}
    atomic_write_json(run_dir / "atop_summary.json", {"preset": preset.name, "scale": preset.scale,
                                                      "classifier": str(classifier_run), "results": summary})
    return summary


def _cached(paths: dict[str, Path], key: dict[str, Any]) -> dict[str, EvaluationResult] | None:
    """The saved results when every protocol's file exists and was made with the same settings, else None."""
    if not all(p.exists() for p in paths.values()):
        return None
    results = {name: EvaluationResult.load(p) for name, p in paths.items()}
    if any(r.model.get("settings") != key for r in results.values()):
        return None
    return results


def run_atop_preset(preset: str, classifier_run: str | Path, *, scale: str = "quick", transform: str | None = None,
                    overrides: dict[str, Any] | None = None, runs_dir: str | Path = "runs",
                    show_progress: bool = True) -> tuple[AToPPreset, Path, dict[str, Any]]:
    """Resolve AToP preset ``preset`` (``transform`` picks RT1-3) and :func:`run_atop` it into
    ``runs_dir/<preset>-<transform>-<scale>`` (or the name ``--set atop.name=...`` gave)."""
    overrides = dict(overrides or {})
    if transform is not None:
        overrides = deep_merge(overrides, {"atop": {"transform": {"name": transform}}})
    p = load_atop_preset(preset, scale, overrides)
    name = p.atop.name if "name" in overrides.get("atop", {}) else f"{preset}-{p.atop.transform.name}-{scale}"
    p = p.model_copy(update={"atop": p.atop.model_copy(update={"name": name})})
    run_dir = Path(runs_dir) / name
    return p, run_dir, run_atop(p, classifier_run, run_dir, show_progress=show_progress)


__all__ = ["PHASE_COPIES", "run_atop", "run_atop_preset"]
