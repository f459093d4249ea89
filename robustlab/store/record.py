"""What one stored evaluation row holds: columns derived from an ``EvaluationResult`` and from its run folder
(``config.yaml`` for the method, ``preset.yaml`` for preset, scale and the published numbers)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robustlab.evaluation.labels import entry_label, is_classifier_only, published_key


def result_sha(doc: dict[str, Any]) -> str:
    """Content hash of a result dict: recording the same result twice stores it once."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def protocol_label(protocol: list[dict[str, Any]]) -> str:
    """``pgd-50x3 + autoattack-standard``: each protocol entry's name, steps and restarts, without its threat."""
    return " + ".join(entry_label(p) for p in protocol) or "?"


def protocol_matches(label: str, wanted: str) -> bool:
    """``wanted`` names the whole label, one of its attacks, or an attack family (``pgd`` matches ``pgd-50x3``,
    ``classifier-only`` the classifier-only entry)."""
    wanted = wanted.strip().lower()
    parts = [p.strip().lower() for p in label.split("+")]
    return wanted == label.lower() or any(p == wanted or p.startswith((wanted + "-", wanted + " ")) for p in parts)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def result_columns(doc: dict[str, Any]) -> dict[str, Any]:
    """Columns that follow from the result alone (also used to backfill rows migrated from schema v1)."""
    sanity = doc.get("sanity") or {}
    model = doc.get("model") or {}
    timings = doc.get("timings") or {}
    versions = doc.get("versions") or {}
    warnings = list(sanity.get("warnings", []))
    return {
        "which": model.get("which"), "model": model.get("model"), "split": doc.get("split"),
        "protocol": protocol_label(doc.get("protocol") or []), "worst_case_n": doc.get("worst_case_n"),
        "sanity_ok": int(not warnings), "sanity_warnings": _json(warnings), "sanity_json": _json(sanity),
        "config_hash": model.get("config_hash"), "robustlab_version": versions.get("robustlab"),
        "versions_json": _json(versions), "timings_json": _json(timings), "total_seconds": timings.get("total"),
    }


@dataclass
class RunInfo:
    """What a run folder says about an evaluation: run name and folder, method, preset, scale, published numbers."""

    run: str | None = None
    run_dir: str | None = None
    method: str | None = None
    preset: str | None = None
    scale: str | None = None
    config_hash: str | None = None
    published: dict[str, Any] = field(default_factory=dict)
    preset_threat: dict[str, Any] | None = None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    doc = yaml.safe_load(path.read_text())
    return doc if isinstance(doc, dict) else {}


def run_info(run_dir: str | Path | None) -> RunInfo:
    """Read ``config.yaml`` and ``preset.yaml`` of ``run_dir`` (missing files leave fields empty)."""
    if run_dir is None:
        return RunInfo()
    run_dir = Path(run_dir)
    cfg, pre = _read_yaml(run_dir / "config.yaml"), _read_yaml(run_dir / "preset.yaml")
    threat = None
    ev = pre.get("eval") or {}
    if ev.get("attacks"):
        threat = {"norm": ev["attacks"][0].get("norm", "linf"), "eps": ev["attacks"][0].get("eps")}
    elif ev.get("autoattack"):
        threat = {"norm": ev["autoattack"].get("norm", "linf"), "eps": ev["autoattack"].get("eps")}
    config_hash = None
    if cfg:
        from robustlab.core.config import parse_config
        from robustlab.training.config import TrainConfig
        from robustlab.training.trainer import config_hash as hash_of

        try:
            config_hash = hash_of(parse_config(cfg, TrainConfig))
        except ValueError:  # a config.yaml from another version: record the rest
            config_hash = None
    return RunInfo(run=cfg.get("name") or run_dir.name, run_dir=str(run_dir.resolve()),
                   method=(cfg.get("objective") or {}).get("name"), preset=pre.get("preset"), scale=pre.get("scale"),
                   config_hash=config_hash, published=dict(pre.get("published") or {}), preset_threat=threat)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def paper_numbers(doc: dict[str, Any], info: RunInfo) -> tuple[float | None, float | None]:
    """(published robust, published clean) in percent for this result, or None where the preset has none.

    The robust number is the published counterpart of the measured worst case: the lowest published accuracy
    among the attacks this protocol ran (``autoattack`` for AutoAttack, ``pgd``/``bb``/... for those attacks).
    Published numbers hold only at the preset's own threat model, so an evaluation at another eps gets none.
    A classifier-only entry (CARSO's paper protocol) is skipped: its number is no worst case.
    """
    pub = info.published
    if not pub or info.preset_threat is None:
        return None, None
    threat = doc.get("threat") or {}
    same = (threat.get("norm") == info.preset_threat.get("norm") and _number(threat.get("eps")) is not None
            and _number(info.preset_threat.get("eps")) is not None
            and math.isclose(float(threat["eps"]), float(info.preset_threat["eps"]), rel_tol=1e-9))
    if not same:
        return None, None
    keys = set()
    for p in doc.get("protocol") or []:
        if is_classifier_only(p):  # not an attack on the model: never the counterpart of its worst case
            continue
        name = str(p.get("name", "")).split(" ")[0]
        if name.startswith("autoattack"):
            keys.add("autoattack")
        else:
            keys.add(published_key(re.sub(r"-\d[\dx]*$", "", name)))
    robust = [v for k in keys if k and (v := _number(pub.get(k))) is not None]
    return (min(robust) if robust else None), _number(pub.get("clean"))


def row_for(doc: dict[str, Any], info: RunInfo, eval_file: str | Path | None, recorded_at: float) -> dict[str, Any]:
    """Every ``evaluations`` column for result dict ``doc`` recorded from ``info``'s run folder (the result JSON
    keeps its key order: attacks stay in protocol order)."""
    threat = doc["threat"]
    paper_robust, paper_clean = paper_numbers(doc, info)
    cols = result_columns(doc)
    return {
        "created_at": float(doc.get("created_at") or recorded_at),
        "run": info.run or (doc.get("model") or {}).get("run"),
        "dataset": doc["dataset"], "method": info.method, "threat_norm": threat["norm"],
        "threat_eps": float(threat["eps"]), "n": int(doc["n"]), "clean_accuracy": float(doc["clean_accuracy"]),
        "worst_case_accuracy": float(doc["worst_case_accuracy"]), "result_json": json.dumps(doc),
        **cols, "config_hash": cols["config_hash"] or info.config_hash,
        "result_sha": result_sha(doc), "recorded_at": recorded_at, "run_dir": info.run_dir,
        "eval_file": str(Path(eval_file).resolve()) if eval_file else None, "preset": info.preset,
        "scale": info.scale, "published_json": _json(info.published) if info.published else None,
        "paper_robust": paper_robust, "paper_clean": paper_clean, "paper_source": info.published.get("source"),
    }
