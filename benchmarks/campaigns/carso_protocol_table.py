"""The table of ``carso_protocol_gap.py`` results: per CARSO run and inference row, clean accuracy, the paper's
classifier-only number and the end-to-end worst case side by side, with exact paired tests between rows.

    .venv/bin/python benchmarks/campaigns/carso_protocol_table.py OUT_DIR [OUT_DIR ...] [--base DIR]

Each OUT_DIR is one run's ``--out`` folder (``classifier_only.json``, ``end_to_end_<row>.json``). Paired tests compare
each end-to-end row's worst-case flags with the ``--base`` folder's ``default`` row on the same points (exact
two-sided sign test on the discordant points); rows run on fewer points than the base are compared on the points they
share (every run takes the first n test points), and the base's worst case on those points is shown beside.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def worst_case_flags(result: dict[str, Any]) -> list[bool]:
    """Per point: clean-correct and robust to every attack of the end-to-end protocol."""
    flags = result["per_sample"]
    keys = [k for k in flags if k != "clean"]
    return [all(flags[k][i] for k in ["clean", *keys]) for i in range(len(flags["clean"]))]


def sign_test(a: list[bool], b: list[bool]) -> tuple[int, int, float]:
    """(points only ``a`` keeps, points only ``b`` keeps, exact two-sided p of the sign test on those)."""
    only_a = sum(x and not y for x, y in zip(a, b, strict=True))
    only_b = sum(y and not x for x, y in zip(a, b, strict=True))
    n, k = only_a + only_b, min(only_a, only_b)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return only_a, only_b, p


def rows(folder: Path) -> list[dict[str, Any]]:
    """One entry per inference row found in ``folder``."""
    co_path = folder / "classifier_only.json"
    co = json.loads(co_path.read_text()) if co_path.exists() else None
    names = list(co["rows"]) if co else []
    names += [p.stem.removeprefix("end_to_end_") for p in sorted(folder.glob("end_to_end_*.json"))
              if p.stem.removeprefix("end_to_end_") not in names]
    out = []
    for name in names:
        e2e_path = folder / f"end_to_end_{name}.json"
        e2e = json.loads(e2e_path.read_text()) if e2e_path.exists() else None
        out.append({"folder": folder.name, "row": name, "classifier_only": co, "end_to_end": e2e,
                    "co_row": co["rows"].get(name) if co else None})
    return out


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--base", type=Path, help="folder whose default row the paired tests compare with")
    args = parser.parse_args(argv)
    base_flags = None
    if args.base is not None and (args.base / "end_to_end_default.json").exists():
        base_flags = worst_case_flags(json.loads((args.base / "end_to_end_default.json").read_text()))
    print("| run | row | points end to end | CARSO clean | classifier-only, judged on CARSO | end to end: APGD-CE "
          "| + APGD-DLR (worst case) | large-eps check "
          "| vs base on the same points: base worst case; kept only here / only there (p) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for folder in args.folders:
        for r in rows(folder):
            co, e2e = r["co_row"], r["end_to_end"]
            clean = e2e["clean"] if e2e else (co["clean"] if co else None)
            cum = list(e2e["robust_accuracy"].values()) if e2e else [None, None]
            large = e2e["sanity"].get("large_eps_accuracy") if e2e else None
            paired = ""
            if e2e and base_flags is not None:
                ours = worst_case_flags(e2e)
                n = min(len(ours), len(base_flags))
                a, b, p = sign_test(ours[:n], base_flags[:n])
                paired = f"n = {n}: {_pct(sum(base_flags[:n]) / n)}; {a} / {b} (p = {p:.3g})"
            print(f"| {r['folder']} | {r['row']} | {e2e['n'] if e2e else '—'} | {_pct(clean)} | "
                  f"{_pct(co['classifier_only_judged_on_carso'] if co else None)} | {_pct(cum[0])} | "
                  f"{_pct(e2e['worst_case'] if e2e else None)} | {_pct(large)} | {paired} |")
    for folder in args.folders:
        path = folder / "classifier_only.json"
        if path.exists():
            clf = json.loads(path.read_text())["classifier"]
            print(f"\n{folder.name}: classifier alone {_pct(clf['clean'])} clean, AutoAttack standard "
                  f"{_pct(clf['autoattack_standard'])} (after each attack: "
                  + ", ".join(f"{k} {_pct(v)}" for k, v in clf["after"].items()) + ")")


if __name__ == "__main__":
    main()
