"""The leaderboard: stored evaluations grouped by dataset and threat model, sorted by worst-case robust accuracy,
with filters and CSV/JSON export. ``paper`` numbers come from each run's preset (published, not measured here)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robustlab.core.errors import InputError
from robustlab.evaluation.labels import CLASSIFIER_ONLY
from robustlab.io.atomic import atomic_write_text
from robustlab.store.db import ResultsStore
from robustlab.store.record import protocol_matches

EXPORT_COLUMNS = (
    "rank", "dataset", "threat_norm", "threat_eps", "run", "method", "preset", "scale", "protocol", "n",
    "clean_accuracy", "worst_case_accuracy", "worst_case_n", "paper_robust", "paper_clean", "paper_source",
    "sanity_ok", "sanity_warnings", "which", "model", "config_hash", "robustlab_version", "total_seconds",
    "created_at", "run_dir", "eval_file", "id",
)


def group_key(row: dict[str, Any]) -> tuple[str, str, float]:
    """(dataset, norm, eps): rows are only ranked against rows under the same threat model."""
    return row["dataset"], row["threat_norm"], float(row["threat_eps"])


def _check_filter(store: ResultsStore, column: str, value: str | None) -> None:
    if value is None:
        return
    valid = store.distinct(column)
    ok = any(protocol_matches(label, value) for label in valid) if column == "protocol" else value in valid
    if not ok:
        raise InputError(f"no stored evaluation has {column} {value!r}; stored values: "
                         f"{', '.join(valid) or '(none: the store is empty)'}")


def leaderboard_rows(store: ResultsStore, *, dataset: str | None = None, method: str | None = None,
                     protocol: str | None = None, scale: str | None = None) -> list[dict[str, Any]]:
    """Filtered rows in board order: by dataset and threat model, then worst-case robust accuracy (highest first),
    then clean accuracy, then newest; each row gets its ``rank`` within its group. A filter value that matches no
    stored evaluation is an error naming the stored values."""
    for column, value in (("dataset", dataset), ("method", method), ("protocol", protocol), ("scale", scale)):
        _check_filter(store, column, value)
    rows = store.rows(dataset=dataset, method=method, scale=scale)
    if protocol is not None:
        rows = [r for r in rows if protocol_matches(r["protocol"] or "", protocol)]
    rows.sort(key=lambda r: (*group_key(r), -r["worst_case_accuracy"], -r["clean_accuracy"], -r["created_at"]))
    last, rank = None, 0
    for r in rows:
        key = group_key(r)
        rank = 1 if key != last else rank + 1
        r["rank"], last = rank, key
    return rows


def grouped(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, float], list[dict[str, Any]]]:
    """Rows split by :func:`group_key`, order kept."""
    out: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(group_key(r), []).append(r)
    return out


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def wilson_half_width(accuracy: float, n: int, z: float = 1.96) -> float:
    """Half-width of the 95% Wilson score interval of an accuracy measured on ``n`` points (0 <= result <= 0.5):
    how far a number on few points can be from the one on the whole test set."""
    if n <= 0:
        return float("nan")
    spread = accuracy * (1 - accuracy) / n + z * z / (4 * n * n)
    return z * spread**0.5 / (1 + z * z / n)


def render_tables(rows: Sequence[dict[str, Any]], limit: int | None = None) -> list[Any]:
    """One rich Table per (dataset, threat model); ``limit`` keeps the top rows of each. Numbers never wrap or get
    cut; the worst case carries its 95% interval, so a number on 20 points reads as the guess it is. Preset, scale
    and date are in the CSV/JSON exports."""
    from rich import box
    from rich.table import Table

    tables = []
    for (dataset, norm, eps), group in grouped(rows).items():
        table = Table(title=f"{dataset} · {norm} eps={eps:.4g} (accuracy %)", box=box.SIMPLE_HEAD)
        table.add_column("#", justify="right", no_wrap=True)
        table.add_column("run", overflow="fold", ratio=3)
        table.add_column("method", overflow="fold", ratio=2)
        table.add_column("protocol", overflow="fold", ratio=3, min_width=8)
        for col in ("n", "clean", "worst ±95%", "paper"):
            table.add_column(col, justify="right", no_wrap=True)
        table.add_column("sanity", no_wrap=True)
        shown = group if limit is None else group[:limit]
        for r in shown:
            n = int(r["worst_case_n"] or r["n"] or 0)
            ci = wilson_half_width(r["worst_case_accuracy"], n)
            worst = f"[bold]{_pct(r['worst_case_accuracy'])}[/bold]±{100 * ci:.1f}"
            other_budget = "*" if r["paper_robust"] is not None and r["scale"] != "paper" else ""
            paper = "" if r["paper_robust"] is None else f"[cyan]{r['paper_robust']:.2f}{other_budget}[/cyan]"
            sanity = "ok" if r["sanity_ok"] else f"[red]{len(r['sanity_warnings'])} warn[/red]"
            table.add_row(str(r["rank"]), r["run"] or "?", r["method"] or "?", r["protocol"] or "?", str(n),
                          _pct(r["clean_accuracy"]), worst, paper, sanity)
        more = f"; {len(group) - len(shown)} more not shown (--limit)" if len(shown) < len(group) else ""
        if any(CLASSIFIER_ONLY in (r["protocol"] or "") for r in shown):
            more += (". classifier-only: AutoAttack on a CARSO model's classifier alone, judged on CARSO (the paper's "
                     "MNIST protocol), reported in the result but never in the worst case or the rank")
        table.caption = ("worst case: pointwise over every attack of the protocol (measured) on n points, ± the "
                         "half-width of its 95% Wilson interval. paper: the preset's published counterpart, copied "
                         "from the paper, not measured here; * the run's scale is not the paper's budget, so the "
                         f"published number is no target for it{more}")
        tables.append(table)
    return tables


def export_records(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as plain records with :data:`EXPORT_COLUMNS` (accuracies as fractions, paper numbers in percent)."""
    return [{c: r.get(c) for c in EXPORT_COLUMNS} for r in rows]


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV text of :func:`export_records` (warnings joined by ``; ``)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(EXPORT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for rec in export_records(rows):
        writer.writerow({**rec, "sanity_warnings": "; ".join(rec["sanity_warnings"] or [])})
    return buf.getvalue()


def to_json(rows: Sequence[dict[str, Any]]) -> str:
    """JSON text of :func:`export_records`, with a note on units and on the published columns."""
    doc = {"units": "accuracy as a fraction in [0, 1]; paper_* in percent as published",
           "paper": "published numbers copied from each run's preset, not measured here",
           "rows": export_records(rows)}
    return json.dumps(doc, indent=2) + "\n"


def write_export(rows: Sequence[dict[str, Any]], path: str | Path, fmt: str) -> Path:
    """Write ``rows`` as ``csv`` or ``json`` to ``path`` atomically."""
    if fmt not in ("csv", "json"):
        raise InputError(f"unknown export format {fmt!r}; valid: csv, json")
    atomic_write_text(path, to_csv(rows) if fmt == "csv" else to_json(rows))
    return Path(path)
