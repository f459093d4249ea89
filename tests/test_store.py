"""Results store and leaderboard: round trip, concurrent writers, migration from schema v1, refusals, sort/filters."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robustlab.cli import app
from robustlab.core.errors import InputError
from robustlab.store import ResultsStore, StoreError, protocol_label, protocol_matches
from robustlab.store.leaderboard import leaderboard_rows, render_tables, to_csv, to_json
from robustlab.store.schema import SCHEMA_VERSION
from tests._store_fixtures import make_result, make_run

# The first schema, written out here (not imported) so the migration test does not depend on the code it tests.
V1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE evaluations (id INTEGER PRIMARY KEY AUTOINCREMENT, created_at REAL NOT NULL, run TEXT,
  dataset TEXT NOT NULL, method TEXT, threat_norm TEXT NOT NULL, threat_eps REAL NOT NULL, n INTEGER NOT NULL,
  clean_accuracy REAL NOT NULL, worst_case_accuracy REAL NOT NULL, result_json TEXT NOT NULL);
INSERT INTO schema_version (version) VALUES (1);
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_and_run_columns(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r1", method="trades", preset="udr-x", scale="paper")
    result = make_result(clean=0.97, attacks={"pgd-40 linf eps=0.3": 0.93}, aa=False, warnings=["w1"])
    result.robust_accuracy["autoattack-standard linf eps=0.3 n=100: square"] = 0.91
    result.protocol.append({"name": "autoattack-standard", "norm": "linf", "eps": 0.3, "version": "standard"})
    result.worst_case_accuracy = 0.91
    with ResultsStore(tmp_path / "s.sqlite") as store:
        eval_id = store.record(result, run, tmp_path / "eval.json")
        back = store.get(eval_id)
        assert back.to_dict() == result.to_dict()  # exact round trip of every field
        assert list(back.robust_accuracy) == list(result.robust_accuracy)  # and of the protocol order
        assert store.record(result, run) == eval_id and store.count() == 1  # same result twice: stored once
        (row,) = store.rows()
        assert store.attack_accuracies([eval_id])[eval_id] == list(result.robust_accuracy.items())
    assert (row["run"], row["method"], row["preset"], row["scale"]) == ("r1", "trades", "udr-x", "paper")
    assert row["protocol"] == "pgd-40 + autoattack-standard"
    assert row["worst_case_accuracy"] == 0.91 and row["clean_accuracy"] == 0.97 and row["n"] == 100
    assert row["sanity_ok"] == 0 and row["sanity_warnings"] == ["w1"]
    # published counterpart of the worst case: the lowest published number among attacks the protocol ran
    assert (row["paper_robust"], row["paper_clean"]) == (90.0, 99.5)
    assert row["config_hash"] == "abc123" and row["robustlab_version"] == "0.1.0" and row["total_seconds"] == 1.5
    with sqlite3.connect(tmp_path / "s.sqlite") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_paper_numbers_only_at_the_presets_threat_model(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", eps=0.3)
    with ResultsStore(tmp_path / "s.sqlite") as store:
        store.record(make_result(eps=0.3), run)
        store.record(make_result(eps=0.4), run)  # `evaluate --eps 0.4`: the paper's numbers do not apply
        rows = {r["threat_eps"]: r for r in store.rows()}
    assert rows[0.3]["paper_robust"] == 94.3  # pgd only: the published pgd number
    assert rows[0.4]["paper_robust"] is None and rows[0.4]["paper_clean"] is None


def _writer(path: str, writer: int, count: int) -> None:
    store = ResultsStore(path)
    for i in range(count):
        store.record(make_result(tag=f"{writer}-{i}", clean=i / count))
    store.close()


def test_two_concurrent_writer_processes_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, w, 200)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    with ResultsStore(path) as store:
        tags = [store.get(r["id"]).sanity["tag"] for r in store.rows()]
        n_attack_rows = store.conn.execute("SELECT COUNT(*) FROM attack_accuracy").fetchone()[0]
    assert sorted(tags) == sorted(f"{w}-{i}" for w in range(2) for i in range(200))
    assert n_attack_rows == 400


def test_failed_write_rolls_back_the_whole_transaction(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "s.sqlite") as store:
        store.record(make_result(tag="kept"))
        bad = make_result(tag="bad").to_dict()
        del bad["threat"]  # fails while building the rows, after a good one
        with pytest.raises(KeyError):
            store.record_many([(make_result(tag="lost"), None, None), (bad, None, None)])
        with pytest.raises(sqlite3.IntegrityError), store.transaction() as conn:  # fails inside the transaction
            conn.execute("INSERT INTO evaluations (created_at, dataset, threat_norm, threat_eps, n, clean_accuracy, "
                         "worst_case_accuracy) VALUES (1, 'm', 'linf', 0.3, 1, 1, 1)")
            conn.execute("INSERT INTO evaluation_json (eval_id, result_json) VALUES (1, '{}')")  # duplicate key
        assert [store.get(r["id"]).sanity["tag"] for r in store.rows()] == ["kept"]


def test_migration_from_schema_v1(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    a = make_result(tag="a", attacks={"pgd-40 linf eps=0.3": 0.6, "apgd-dlr-100 linf eps=0.3": 0.55},
                    warnings=["masked?"]).to_dict()
    b = make_result(tag="b", dataset="cifar10", eps=8 / 255).to_dict()
    with sqlite3.connect(path) as raw:
        raw.executescript(V1)
        for doc, run, method in ((a, "run-a", "pgd-at"), (b, "run-b", "trades"), (a, "run-a", "pgd-at")):
            raw.execute("INSERT INTO evaluations (created_at, run, dataset, method, threat_norm, threat_eps, n, "
                        "clean_accuracy, worst_case_accuracy, result_json) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (doc["created_at"], run, doc["dataset"], method, "linf", doc["threat"]["eps"], doc["n"],
                         doc["clean_accuracy"], doc["worst_case_accuracy"], json.dumps(doc)))
    with ResultsStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 2
        rows = store.rows()
        assert [(r["run"], r["method"], r["dataset"]) for r in rows] == [("run-a", "pgd-at", "mnist"),
                                                                         ("run-b", "trades", "cifar10")]
        ra = rows[0]
        assert ra["protocol"] == "pgd-40 + apgd-dlr-100" and ra["sanity_ok"] == 0 and ra["worst_case_n"] == 100
        assert ra["preset"] is None  # v1 never recorded the preset: left empty, not invented
        assert store.attack_accuracies([ra["id"]])[ra["id"]] == [("pgd-40 linf eps=0.3", 0.6),
                                                                 ("apgd-dlr-100 linf eps=0.3", 0.55)]
        assert store.get(ra["id"]).to_dict() == a
        store.record(make_result(tag="new"))  # the migrated file takes new results, with the duplicate check
        assert store.record(b) == rows[1]["id"] and store.count() == 3


def test_refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    path.write_bytes(b"id,accuracy\n1,0.5\n" * 10)
    before = _sha(path)
    with pytest.raises(StoreError, match="not a SQLite database.*untouched"):
        ResultsStore(path)
    assert _sha(path) == before


def test_refuses_a_foreign_sqlite_file_and_a_newer_schema(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as raw:
        raw.execute("CREATE TABLE users (name TEXT)")
    before = _sha(foreign)
    with pytest.raises(StoreError, match="not a robustlab results store.*users"):
        ResultsStore(foreign)
    assert _sha(foreign) == before
    newer = tmp_path / "newer.sqlite"
    ResultsStore(newer).close()
    with sqlite3.connect(newer) as raw:
        raw.execute("UPDATE schema_version SET version = 7")
    raw.close()
    before = _sha(newer)
    with pytest.raises(StoreError, match="schema v7, newer than this robustlab reads \\(v2\\)"):
        ResultsStore(newer)
    assert _sha(newer) == before


def test_store_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUSTLAB_STORE", str(tmp_path / "env.sqlite"))
    with ResultsStore() as store:
        assert store.path == tmp_path / "env.sqlite"
    assert (tmp_path / "env.sqlite").exists()


def test_protocol_labels_and_matching() -> None:
    label = protocol_label([{"name": "pgd", "steps": 50, "restarts": 3, "threat": {"norm": "linf", "eps": 0.3}},
                            {"name": "autoattack-standard", "norm": "linf", "eps": 0.3}])
    assert label == "pgd-50x3 + autoattack-standard"
    two = [{"name": "apgd-dlr", "steps": 100, "restarts": 1}, {"name": "square"}]
    assert protocol_label(two) == "apgd-dlr-100 + square"
    # protocols that differ in a setting (here the step size) never share a label
    stepped = protocol_label([{"name": "pgd", "steps": 50, "restarts": 3, "step_size": 0.01}])
    assert stepped == "pgd-50x3 step_size=0.01" and stepped != label.split(" + ")[0]
    atop = [{"protocol": "A", "name": "apgd-ce-20 eot=4 linf eps=0.3", "steps": 20}]  # a whole label as name
    assert protocol_label(atop) == "apgd-ce-20 eot=4"
    assert protocol_matches(label, "pgd") and protocol_matches(label, "autoattack-standard")
    assert protocol_matches(label, "autoattack") and protocol_matches(label, label)
    assert not protocol_matches(label, "apgd") and not protocol_matches(label, "autoattack-plus")


@pytest.fixture()
def board(tmp_path: Path) -> ResultsStore:
    """Seven results: two datasets, two mnist threat models, two methods, two scales, two protocols."""
    runs = {name: make_run(tmp_path, name, method=m, scale=s) for name, m, s in (
        ("a", "pgd-at", "quick"), ("b", "trades", "quick"), ("c", "trades", "paper"), ("d", "pgd-at", "paper"))}
    store = ResultsStore(tmp_path / "board.sqlite")
    store.record(make_result(attacks={"pgd-40 linf eps=0.3": 0.70}, clean=0.98), runs["a"])
    store.record(make_result(attacks={"pgd-40 linf eps=0.3": 0.80}, aa=True, worst=0.75, clean=0.97), runs["b"])
    store.record(make_result(attacks={"pgd-40 linf eps=0.3": 0.75}, clean=0.99), runs["c"])  # ties b, more clean
    store.record(make_result(attacks={"pgd-40 linf eps=0.3": 0.40}, warnings=["x"]), runs["d"])
    store.record(make_result(eps=0.1, attacks={"pgd-40 linf eps=0.1": 0.95}), runs["a"])
    store.record(make_result(dataset="cifar10", eps=8 / 255, attacks={"pgd-40 linf eps=0.03137": 0.5}), runs["b"])
    store.record(make_result(dataset="cifar10", eps=8 / 255, attacks={"pgd-40 linf eps=0.03137": 0.55}), runs["d"])
    yield store
    store.close()


def test_leaderboard_sorted_by_worst_case_within_dataset_and_threat(board: ResultsStore) -> None:
    rows = leaderboard_rows(board)
    got = [(r["dataset"], r["threat_eps"], r["run"], r["rank"], r["worst_case_accuracy"]) for r in rows]
    assert got == [("cifar10", 8 / 255, "d", 1, 0.55), ("cifar10", 8 / 255, "b", 2, 0.5),
                   ("mnist", 0.1, "a", 1, 0.95),
                   ("mnist", 0.3, "c", 1, 0.75), ("mnist", 0.3, "b", 2, 0.75),  # tie broken by clean accuracy
                   ("mnist", 0.3, "a", 3, 0.70), ("mnist", 0.3, "d", 4, 0.40)]


def test_leaderboard_filters(board: ResultsStore) -> None:
    def runs(**f: str) -> list[str]:
        return [r["run"] for r in leaderboard_rows(board, **f)]

    assert runs(dataset="mnist", method="trades") == ["c", "b"]
    assert runs(scale="paper") == ["d", "c", "d"]
    assert runs(protocol="autoattack-standard") == ["b"]
    assert runs(protocol="pgd", dataset="cifar10") == ["d", "b"]
    with pytest.raises(InputError, match="method 'madry'.*stored values: pgd-at, trades"):
        leaderboard_rows(board, method="madry")
    with pytest.raises(InputError, match="protocol 'square'.*pgd-40 \\+ autoattack-standard"):
        leaderboard_rows(board, protocol="square")


def test_leaderboard_exports_and_published_column(board: ResultsStore) -> None:
    rows = leaderboard_rows(board, dataset="mnist")
    recs = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert [(r["run"], float(r["worst_case_accuracy"])) for r in recs] == [
        (r["run"], r["worst_case_accuracy"]) for r in rows]
    doc = json.loads(to_json(rows))
    assert "not measured here" in doc["paper"]
    by_run = {(r["run"], r["threat_eps"]): r for r in doc["rows"]}
    assert by_run[("b", 0.3)]["paper_robust"] == 90.0  # AutoAttack ran: the published AutoAttack number
    assert by_run[("a", 0.3)]["paper_robust"] == 94.3 and by_run[("a", 0.1)]["paper_robust"] is None
    from rich.console import Console

    console = Console(width=250, record=True)
    for table in render_tables(rows):
        console.print(table)
    text = console.export_text()
    assert "94.30" in text and "paper" in text and "published counterpart" in text and "1 warn" in text
    assert "94.30*" in text and "not the paper's budget" in text  # a quick-scale run marks the published number


def test_leaderboard_command(board: ResultsStore, tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["leaderboard", "--store", str(board.path), "--dataset", "cifar10",
                                   "--csv", str(tmp_path / "b.csv"), "--json", str(tmp_path / "b.json")],
                             env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "cifar10" in out.output and "55.00" in out.output and "mnist" not in out.output
    assert len(json.loads((tmp_path / "b.json").read_text())["rows"]) == 2
    assert len((tmp_path / "b.csv").read_text().splitlines()) == 3
    bad = CliRunner().invoke(app, ["leaderboard", "--store", str(board.path), "--dataset", "svhn"])
    assert bad.exit_code != 0 and "stored values: cifar10, mnist" in str(bad.exception)
