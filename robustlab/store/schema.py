"""Schema of the results store and its migrations: version N is reached from any earlier version, in one transaction.

v1 (the first layout) held one row per evaluation with the headline numbers and the full result as JSON; v2 adds
the run's preset, scale, protocol, sanity flags, timings, versions, config hash and published numbers, one row per
attack in ``attack_accuracy``, a content hash that makes recording the same result twice a no-op, and indexes; the
full result JSON (large: per-sample flags) moves to ``evaluation_json`` so leaderboard scans never read it
(``DROP COLUMN`` needs SQLite >= 3.35).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

SCHEMA_VERSION = 2

V1_SQL = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE evaluations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    run TEXT,
    dataset TEXT NOT NULL,
    method TEXT,
    threat_norm TEXT NOT NULL,
    threat_eps REAL NOT NULL,
    n INTEGER NOT NULL,
    clean_accuracy REAL NOT NULL,
    worst_case_accuracy REAL NOT NULL,
    result_json TEXT NOT NULL
);
INSERT INTO schema_version (version) VALUES (1);
"""

# Columns v2 adds to ``evaluations`` (name, SQL type); all nullable, so v1 rows stay valid before backfill.
V2_COLUMNS: tuple[tuple[str, str], ...] = (
    ("result_sha", "TEXT"), ("recorded_at", "REAL"), ("run_dir", "TEXT"), ("eval_file", "TEXT"), ("which", "TEXT"),
    ("model", "TEXT"), ("split", "TEXT"), ("preset", "TEXT"), ("scale", "TEXT"), ("protocol", "TEXT"),
    ("worst_case_n", "INTEGER"), ("sanity_ok", "INTEGER"), ("sanity_warnings", "TEXT"), ("sanity_json", "TEXT"),
    ("config_hash", "TEXT"), ("robustlab_version", "TEXT"), ("versions_json", "TEXT"), ("timings_json", "TEXT"),
    ("total_seconds", "REAL"), ("published_json", "TEXT"), ("paper_robust", "REAL"), ("paper_clean", "REAL"),
    ("paper_source", "TEXT"),
)

V2_SQL = """
CREATE TABLE attack_accuracy (
    eval_id INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    attack TEXT NOT NULL,
    accuracy REAL NOT NULL,
    PRIMARY KEY (eval_id, position)
);
CREATE TABLE evaluation_json (
    eval_id INTEGER PRIMARY KEY REFERENCES evaluations(id) ON DELETE CASCADE,
    result_json TEXT NOT NULL
);
INSERT INTO evaluation_json (eval_id, result_json) SELECT id, result_json FROM evaluations;
ALTER TABLE evaluations DROP COLUMN result_json;
CREATE UNIQUE INDEX evaluations_result_sha ON evaluations(result_sha);
CREATE INDEX evaluations_board ON evaluations(dataset, threat_norm, threat_eps, worst_case_accuracy);
CREATE INDEX evaluations_run_dir ON evaluations(run_dir);
"""


def _to_v1(conn: sqlite3.Connection) -> None:
    for statement in V1_SQL.strip().split(";"):
        if statement.strip():
            conn.execute(statement)


def _to_v2(conn: sqlite3.Connection) -> None:
    from robustlab.store.record import result_columns, result_sha

    for name, sql_type in V2_COLUMNS:
        conn.execute(f"ALTER TABLE evaluations ADD COLUMN {name} {sql_type}")
    for statement in V2_SQL.strip().split(";")[:1]:
        conn.execute(statement)
    rows = conn.execute("SELECT id, result_json FROM evaluations").fetchall()
    seen: dict[str, int] = {}
    for eval_id, text in rows:  # backfill what the stored result itself says (preset/scale were never recorded)
        doc = json.loads(text)
        cols = result_columns(doc)
        sha = result_sha(doc)
        if sha in seen:  # v1 had no uniqueness; keep the first copy of a duplicate
            conn.execute("DELETE FROM evaluations WHERE id = ?", (eval_id,))
            continue
        seen[sha] = eval_id
        cols.update(result_sha=sha, recorded_at=doc.get("created_at"))
        conn.execute(f"UPDATE evaluations SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?",
                     (*cols.values(), eval_id))
        conn.executemany("INSERT INTO attack_accuracy (eval_id, position, attack, accuracy) VALUES (?, ?, ?, ?)",
                         [(eval_id, i, a, float(acc)) for i, (a, acc) in enumerate(doc["robust_accuracy"].items())])
    for statement in V2_SQL.strip().split(";")[1:]:
        if statement.strip():
            conn.execute(statement)


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _to_v1, 2: _to_v2}
