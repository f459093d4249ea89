"""Speed of the results store: leaderboard render with 10,000 stored evaluations (target < 1 s) and the HTML
report of a run with 100 epochs of metrics.

    .venv/bin/python benchmarks/perf/store_speed.py [--n 10000] [--epochs 100] [--repeats 3]
        [--out benchmarks/results/store_speed.json]

The leaderboard time is what ``robustlab leaderboard`` spends after start-up: open the store, query, sort, build
and print the rich tables (to a string) with the command's default of the top 20 rows per table; ``--limit 0``
times printing every row. The report time is ``build_run_report`` for a tiny trained MLP run whose
metrics.jsonl is replaced by ``--epochs`` synthetic epoch rows and which has one stored evaluation with a 6-point
eps sweep (training curves, sweep plot, PGD-20 grid on 8 MNIST test points, sanity tables).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "store_speed.json"


def fill_store(path: Path, n: int) -> float:
    from _store_fixtures import make_result, make_run

    from robustlab.store import ResultsStore
    from robustlab.store.record import run_info

    rng = random.Random(0)
    root = path.parent
    infos = [run_info(make_run(root, f"run{i}", method=m, scale=s, eps=e))
             for i, (m, s, e) in enumerate([(m, s, e) for m in ("pgd-at", "trades", "udr-pgd", "mart")
                                            for s in ("quick", "paper") for e in (0.1, 0.3)])]
    t0 = time.perf_counter()
    with ResultsStore(path) as store:
        for start in range(0, n, 1000):
            items = []
            for i in range(start, min(n, start + 1000)):
                info = infos[i % len(infos)]
                eps = info.preset_threat["eps"]
                ds = "mnist" if i % 3 else "cifar10"
                attacks = {f"pgd-40 linf eps={eps}": rng.random(), f"apgd-dlr-100 linf eps={eps}": rng.random()}
                items.append((make_result(dataset=ds, eps=eps, clean=rng.random(), attacks=attacks, tag=str(i),
                                          aa=i % 2 == 0, created_at=1.7e9 + i), info, None))
            store.record_many(items)
    return time.perf_counter() - t0


def time_leaderboard(path: Path, limit: int) -> float:
    from rich.console import Console

    from robustlab.store import ResultsStore
    from robustlab.store.leaderboard import leaderboard_rows, render_tables

    t0 = time.perf_counter()
    with ResultsStore(path) as store:
        rows = leaderboard_rows(store)
    console = Console(file=io.StringIO(), width=200)
    for table in render_tables(rows, limit or None):
        console.print(table)
    return time.perf_counter() - t0


def report_run(root: Path, epochs: int) -> Path:
    from _training_helpers import tiny_config

    from robustlab.training.trainer import Trainer

    run = root / "runs" / "bench"
    Trainer(tiny_config(epochs=1), run, show_progress=False).fit()
    rows = [{"epoch": e, "lr": 0.001, "train_loss": 2.3 / (1 + e), "train_adv_acc": e / (epochs + 1),
             "val_clean_acc": 0.5 + e / (4 * epochs), "val_robust_acc": e / (2 * epochs)} for e in range(epochs)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = (run / "config.yaml").read_text().replace("epochs: 1\n", f"epochs: {epochs}\n")
    (run / "config.yaml").write_text(cfg)
    state = json.loads((run / "checkpoints" / "last.json").read_text())
    (run / "checkpoints" / "last.json").write_text(json.dumps({**state, "epoch": epochs}))
    return run


def time_report(run: Path, store_path: Path) -> float:
    from _store_fixtures import make_result

    from robustlab.report import build_run_report
    from robustlab.store import ResultsStore

    with ResultsStore(store_path) as store:
        result = make_result(eps=0.1)
        result.eps_sweep = {repr(e): 1 - e for e in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)}
        store.record(result, run)
        t0 = time.perf_counter()
        build_run_report(run, store)
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=20, help="rows shown per table (0: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fill = fill_store(root / "board.sqlite", args.n)
        board = [time_leaderboard(root / "board.sqlite", args.limit) for _ in range(args.repeats)]
        run = report_run(root, args.epochs)
        report = [time_report(run, root / "report.sqlite") for _ in range(args.repeats)]
    out = {"evaluations": args.n, "fill_seconds": round(fill, 2),
           "leaderboard_limit": args.limit, "leaderboard_seconds": [round(t, 3) for t in board],
           "report_epochs": args.epochs,
           "report_seconds": [round(t, 3) for t in report], "cpus": os.cpu_count(),
           "load_average": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(out, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
