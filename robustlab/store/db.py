"""The results store: one SQLite file (WAL, versioned schema) holding every evaluation.

Every write is one ``BEGIN IMMEDIATE`` transaction, so a crash mid-write rolls back only that write and concurrent
writers (processes) queue on SQLite's lock instead of losing rows. A file that is not SQLite, is SQLite but not a
results store, or has a newer schema is refused before anything is written to it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from robustlab.core.errors import RobustlabError
from robustlab.evaluation.result import EvaluationResult
from robustlab.store.record import RunInfo, row_for, run_info
from robustlab.store.schema import MIGRATIONS, SCHEMA_VERSION

DEFAULT_STORE = Path("runs") / "results.sqlite"
STORE_ENV = "ROBUSTLAB_STORE"
_SQLITE_MAGIC = b"SQLite format 3\x00"
# Columns the leaderboard and reports read (everything but the full result JSON).
BOARD_COLUMNS = (
    "id", "created_at", "recorded_at", "run", "run_dir", "eval_file", "which", "dataset", "split", "method", "model",
    "preset", "scale", "protocol", "threat_norm", "threat_eps", "n", "clean_accuracy", "worst_case_accuracy",
    "worst_case_n", "sanity_ok", "sanity_warnings", "config_hash", "robustlab_version", "total_seconds",
    "paper_robust", "paper_clean", "paper_source",
)


class StoreError(RobustlabError):
    """A results store that cannot be used (not SQLite, not a store, newer schema); the message says what to do."""


def default_store_path(runs_dir: str | Path | None = None) -> Path:
    """``$ROBUSTLAB_STORE`` when set, else ``results.sqlite`` in ``runs_dir`` (``runs/`` when not given), so the
    store lives beside the run folders it records."""
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env)
    return DEFAULT_STORE if runs_dir is None else Path(runs_dir) / DEFAULT_STORE.name


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise StoreError(f"results store {path} is a folder; pass a file path with --store or ${STORE_ENV}")
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
        if head != _SQLITE_MAGIC:
            raise StoreError(f"{path} is not a SQLite database (it starts with {head[:8]!r}); it was left untouched. "
                             f"Pass another path with --store or ${STORE_ENV}")


class ResultsStore:
    """Open (creating or migrating) the store at ``path``: ``store.record(result, run_dir)``, ``store.rows()``."""

    def __init__(self, path: str | Path | None = None, *, timeout: float = 60.0):
        self.path = Path(path) if path is not None else default_store_path()
        _check_file(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        try:
            self._check_version(self._version())  # read-only: a refused file is never written
            self.conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._retry(lambda: self.conn.execute("PRAGMA journal_mode = WAL"))
            self.conn.execute("PRAGMA synchronous = FULL")
            self.conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except BaseException:
            self.conn.close()
            raise

    # ------------------------------------------------------------------------------------------- schema
    def _version(self) -> int:
        try:
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a readable SQLite database ({exc}); it was left untouched") from None
        if "schema_version" not in tables:
            if tables - {"sqlite_sequence"}:
                raise StoreError(f"{self.path} is a SQLite database but not a robustlab results store (tables: "
                                 f"{', '.join(sorted(tables))}); it was left untouched. Pass another --store path")
            return 0
        row = self.conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has results-store schema v{version}, newer than this robustlab reads "
                             f"(v{SCHEMA_VERSION}); upgrade robustlab, or pass another --store path. "
                             "The file was left untouched")

    def _migrate(self) -> None:
        if self._version() == SCHEMA_VERSION:
            return
        with self.transaction():  # re-read under the write lock: another process may have migrated meanwhile
            version = self._version()
            self._check_version(version)
            for target in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[target](self.conn)
            if version < SCHEMA_VERSION:
                self.conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    @property
    def schema_version(self) -> int:
        """The schema version of the open file (always :data:`SCHEMA_VERSION` after opening)."""
        return self._version()

    def _retry(self, fn: Any, tries: int = 50) -> Any:
        for i in range(tries):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or i == tries - 1:
                    raise
                time.sleep(0.05 * (i + 1))
        return None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error."""
        self._retry(lambda: self.conn.execute("BEGIN IMMEDIATE"))
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -------------------------------------------------------------------------------------------- write
    def _insert(self, row: dict[str, Any]) -> int:
        found = self.conn.execute("SELECT id FROM evaluations WHERE result_sha = ?", (row["result_sha"],)).fetchone()
        if found:
            return int(found[0])
        row = dict(row)
        text = row.pop("result_json")
        cur = self.conn.execute(f"INSERT INTO evaluations ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                                tuple(row.values()))
        assert cur.lastrowid is not None  # every INSERT sets it
        eval_id = int(cur.lastrowid)
        self.conn.execute("INSERT INTO evaluation_json (eval_id, result_json) VALUES (?, ?)", (eval_id, text))
        attacks = json.loads(text)["robust_accuracy"]
        self.conn.executemany("INSERT INTO attack_accuracy (eval_id, position, attack, accuracy) VALUES (?, ?, ?, ?)",
                              [(eval_id, i, a, float(acc)) for i, (a, acc) in enumerate(attacks.items())])
        return eval_id

    def record(self, result: EvaluationResult | dict[str, Any], run_dir: str | Path | RunInfo | None = None,
               eval_file: str | Path | None = None) -> int:
        """Store one evaluation atomically and return its id (the existing id if this exact result is stored)."""
        return self.record_many([(result, run_dir, eval_file)])[0]

    def record_many(self, items: Iterable[tuple[Any, Any, Any]]) -> list[int]:
        """Store several ``(result, run_dir_or_RunInfo, eval_file)`` in one transaction (all or none)."""
        now = time.time()
        rows = []
        for result, run, eval_file in items:
            doc = result.to_dict() if isinstance(result, EvaluationResult) else result
            info = run if isinstance(run, RunInfo) else run_info(run)
            rows.append(row_for(doc, info, eval_file, now))
        with self.transaction():
            return [self._insert(r) for r in rows]

    def import_run(self, run_dir: str | Path) -> int:
        """Record every ``eval/*.json`` of ``run_dir`` not stored yet (evaluations made before the store existed);
        returns how many were new. Files that are not evaluation results are skipped."""
        run_dir = Path(run_dir)
        info = run_info(run_dir)
        items = []
        for path in sorted((run_dir / "eval").glob("*.json")):
            try:
                doc = json.loads(path.read_text())
                EvaluationResult(**doc)
            except (ValueError, TypeError, OSError):
                continue
            items.append((doc, info, path))
        before = self.count()
        if items:
            self.record_many(items)
        return self.count() - before

    # --------------------------------------------------------------------------------------------- read
    def count(self) -> int:
        """Number of stored evaluations."""
        return int(self.conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0])

    def get(self, eval_id: int) -> EvaluationResult:
        """The stored result, exactly as recorded."""
        row = self.conn.execute("SELECT result_json FROM evaluation_json WHERE eval_id = ?", (eval_id,)).fetchone()
        if row is None:
            raise StoreError(f"no evaluation with id {eval_id} in {self.path}")
        return EvaluationResult(**json.loads(row[0]))

    def rows(self, *, dataset: str | None = None, method: str | None = None, scale: str | None = None,
             run_dir: str | Path | None = None) -> list[dict[str, Any]]:
        """Stored evaluations (all columns but the full result), filtered by exact column values."""
        where, args = [], []
        for col, value in (("dataset", dataset), ("method", method), ("scale", scale)):
            if value is not None:
                where.append(f"{col} = ?")
                args.append(value)
        if run_dir is not None:
            where.append("run_dir = ?")
            args.append(str(Path(run_dir).resolve()))
        sql = f"SELECT {', '.join(BOARD_COLUMNS)} FROM evaluations"
        if where:
            sql += " WHERE " + " AND ".join(where)
        cur = self.conn.cursor()
        cur.row_factory = None  # plain tuples: much faster than sqlite3.Row for 10,000 rows
        out = [dict(zip(BOARD_COLUMNS, t)) for t in cur.execute(sql + " ORDER BY id", args).fetchall()]
        for r in out:
            w = r["sanity_warnings"]
            r["sanity_warnings"] = json.loads(w) if w and w != "[]" else []
        return out

    def distinct(self, column: str) -> list[str]:
        """Distinct non-null values of a filterable column (for error messages naming the valid values)."""
        if column not in ("dataset", "method", "scale", "protocol", "preset"):
            raise StoreError(f"column {column!r} is not filterable")
        return [r[0] for r in self.conn.execute(
            f"SELECT DISTINCT {column} FROM evaluations WHERE {column} IS NOT NULL ORDER BY {column}")]

    def attack_accuracies(self, ids: Iterable[int]) -> dict[int, list[tuple[str, float]]]:
        """Per-attack (cumulative) robust accuracy of each evaluation id, in protocol order."""
        ids = list(ids)
        out: dict[int, list[tuple[str, float]]] = {i: [] for i in ids}
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            marks = ", ".join("?" * len(chunk))
            for r in self.conn.execute("SELECT eval_id, attack, accuracy FROM attack_accuracy "
                                       f"WHERE eval_id IN ({marks}) ORDER BY eval_id, position", chunk):
                out[r[0]].append((r[1], r[2]))
        return out

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
