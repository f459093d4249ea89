"""How many test points separate TA-MOO from a baseline on the ENS table, and what they cost on this CPU.

Reads a ``benchmarks/campaigns/tamoo_attack_tables.py --table ens`` result (default
``benchmarks/results/tamoo_ens_mnist.json``: 200 points, A-All successes TA-MOO 13, MinMax 13, MOO 8, Uniform 7) and,
for TA-MOO against each baseline:

* unpaired: the Newcombe (Wilson-score) 95% interval of the A-All difference at the measured n, and the n (the same
  for both methods) at which it would exclude 0 if the observed rates held;
* paired (both attacks on the same points, McNemar): the result depends on the discordant points (TA-MOO-only b,
  baseline-only c), which the table does not record. Two bounds: "nested" (every baseline success is also a TA-MOO
  success: c = 0, b = the difference) and "independent" (successes uncorrelated: b = n p1 (1 - p2), c = n p2 (1 - p1));
  the exact two-sided McNemar p-value at the measured n and the n at which p < 0.05, b and c scaled with n;
* cost: seconds per point per method from the result's timings (one thread), for the extra points.

    python benchmarks/checks/tamoo_sample_size.py [--result benchmarks/results/tamoo_ens_mnist.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
from pathlib import Path

Z = 1.959963984540054  # two-sided 95%
DEFAULT_RESULT = Path(__file__).resolve().parents[1] / "results" / "tamoo_ens_mnist.json"


def wilson(k: float, n: int) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion k / n."""
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return centre - half, centre + half


def newcombe(k1: float, k2: float, n: int) -> tuple[float, float]:
    """Newcombe's hybrid score 95% interval of p1 - p2 for two independent proportions on n points each."""
    p1, p2 = k1 / n, k2 / n
    l1, u1 = wilson(k1, n)
    l2, u2 = wilson(k2, n)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: 2 P(Bin(b + c, 1/2) <= min(b, c)), capped at 1."""
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(b, c) + 1)) / 2**m
    return min(1.0, 2 * tail)


def first_n(test, n0: int, limit: int = 200_000) -> int | None:
    """Smallest n >= n0 (in steps of 10) for which ``test(n)`` holds; None if not by ``limit``."""
    n = n0
    while n <= limit:
        if test(n):
            return n
        n += 10
    return None


def compare(k1: int, k2: int, n: int) -> dict[str, object]:
    """TA-MOO's k1 successes against a baseline's k2 on the same n points."""
    p1, p2 = k1 / n, k2 / n
    out: dict[str, object] = {"k_tamoo": k1, "k_baseline": k2, "n": n, "newcombe_95": newcombe(k1, k2, n)}
    if k1 == k2:
        out["note"] = "observed difference 0: no n excludes a tie; see n_for_difference"
        return out
    out["unpaired_n"] = first_n(lambda m: newcombe(p1 * m, p2 * m, m)[0] > 0 or newcombe(p1 * m, p2 * m, m)[1] < 0, n)
    nested = (k1 - k2, 0) if k1 > k2 else (0, k2 - k1)
    indep = (n * p1 * (1 - p2), n * p2 * (1 - p1))
    for name, (b, c) in (("nested", nested), ("independent", indep)):
        out[f"paired_{name}_b_c"] = (round(b, 2), round(c, 2))
        out[f"paired_{name}_p"] = mcnemar_p(round(b), round(c))
        out[f"paired_{name}_n"] = first_n(lambda m, b=b, c=c: mcnemar_p(round(b * m / n), round(c * m / n)) < 0.05, n)
    return out


def n_for_difference(p1: float, p2: float) -> int:
    """Points per method for a 95% (Wald) interval of p1 - p2 to exclude 0 with independent samples."""
    return math.ceil(Z * Z * (p1 * (1 - p1) + p2 * (1 - p2)) / (p1 - p2) ** 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--result", type=Path, default=DEFAULT_RESULT)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print(f"$ {command}\n# {platform.machine()} {platform.python_version()}")
    res = json.loads(args.result.read_text())
    n = int(res["n"])
    runs = res["results"]
    k = {m: round(r["a_all"] * n / 100) for m, r in runs.items()}
    sec = {m: r["seconds"] / n for m, r in runs.items()}
    print(f"{args.result.name}: n = {n}, A-All successes {k}, seconds per point {{"
          + ", ".join(f"{m}: {s:.2f}" for m, s in sec.items()) + "}")
    report: dict[str, object] = {"command": command, "result": str(args.result), "n": n, "successes": k,
                                 "seconds_per_point": sec, "pairs": {}}
    for base in ("uniform", "moo", "minmax"):
        if base not in k or "tamoo" not in k:
            continue
        c = compare(k["tamoo"], k[base], n)
        pair_cost = sec["tamoo"] + sec[base]
        for key in ("unpaired_n", "paired_nested_n", "paired_independent_n"):
            if c.get(key) is not None:
                c[key[:-2] + "_extra_cpu_minutes"] = max(0, c[key] - n) * pair_cost / 60
        report["pairs"][base] = c
        lo, hi = c["newcombe_95"]
        line = f"TA-MOO {k['tamoo']} vs {base} {k[base]} / {n}: 95% CI of the A-All difference [{100 * lo:+.1f}, " \
               f"{100 * hi:+.1f}] points"
        if "note" in c:
            print(line + "; " + c["note"])
            continue
        print(line)
        print(f"  unpaired: CI excludes 0 from n = {c['unpaired_n']} per method "
              f"(+{c.get('unpaired_extra_cpu_minutes', 0):.0f} CPU-min for the pair)")
        for name in ("nested", "independent"):
            print(f"  paired, {name} (b, c) = {c[f'paired_{name}_b_c']}: McNemar p = {c[f'paired_{name}_p']:.3f} "
                  f"at n = {n}; p < 0.05 from n = {c[f'paired_{name}_n']} "
                  f"(+{c.get(f'paired_{name}_extra_cpu_minutes', 0):.0f} CPU-min)")
    if "minmax" in k:
        p = k["tamoo"] / n
        report["n_for_difference"] = {f"{d:g}pt": n_for_difference(p + d / 100, p) for d in (1, 2, 3)}
        print("TA-MOO vs MinMax: points per method for a 95% interval to exclude 0 if the true A-All gap were "
              + ", ".join(f"{d} ({report['n_for_difference'][d]})" for d in report["n_for_difference"])
              + f" at a {100 * p:.1f}% base rate")
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
