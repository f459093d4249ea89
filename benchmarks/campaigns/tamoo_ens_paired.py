"""TA-MOO against its baselines on the ENS table, paired: every method attacks the same points and the per-point
A-All flags are kept, so the comparison is McNemar's on the discordant points, not two independent proportions.

``benchmarks/campaigns/tamoo_attack_tables.py`` keeps only the rates; with 13 vs 7 successes in 200 points the
unpaired 95% interval of the difference still contains 0, while the paired test can already decide if the successes
are nested (``benchmarks/checks/tamoo_sample_size.py``). The attack budget and the victims are tamoo_attack_tables'.

    OMP_NUM_THREADS=1 python benchmarks/campaigns/tamoo_ens_paired.py --victim-runs RUN1 RUN2 ... --n 400 \\
        [--methods tamoo uniform] [--out benchmarks/results/tamoo_ens_paired.json]

Cost on this CPU (one thread, 4 MNIST C&W CNN members, 100 steps): about 3.3 s per point for TA-MOO and MOO,
1.2 s for Uniform and MinMax (benchmarks/results/tamoo_ens_mnist.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "checks"))
from tamoo_attack_tables import build_attack  # noqa: E402
from tamoo_sample_size import mcnemar_p, newcombe  # noqa: E402

from robustlab.attacks.moo import METHODS  # noqa: E402
from robustlab.core.threat import ThreatModel  # noqa: E402
from robustlab.data import load_dataset  # noqa: E402
from robustlab.models.ensemble import Ensemble  # noqa: E402
from robustlab.presets import load_preset  # noqa: E402
from robustlab.runs.loading import load_trained_model  # noqa: E402


def flags_of(method: str, model: torch.nn.Module, threat: ThreatModel, args: argparse.Namespace
             ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Per-point A-All flags (n,), per-point per-member flags (n, K) and seconds, on the first n test points."""
    test = load_dataset(args.dataset, "test")
    n = min(args.n, len(test))
    torch.manual_seed(args.seed)
    all_flags, members, start = [], [], time.perf_counter()
    for lo in range(0, n, args.batch_size):
        idx = torch.arange(lo, min(lo + args.batch_size, n))
        x, y = test.float_images(idx).to(args.device), test.labels[idx].to(args.device)
        attack = build_attack("ens", model, threat, method, args)
        x_adv = attack(x, y)
        with torch.no_grad():
            fooled = (model.member_logits(x_adv).argmax(dim=2) != y).T.cpu()
        members.append(fooled)
        all_flags.append(fooled.all(dim=1))
    return torch.cat(all_flags), torch.cat(members), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--victim-runs", type=Path, nargs="+", required=True)
    ap.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist", "cifar10"])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--methods", nargs="+", default=["tamoo", "uniform"], choices=list(METHODS))
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--step-size", type=float, default=None)
    ap.add_argument("--lam", type=float, default=100.0)
    ap.add_argument("--inner-steps", type=int, default=10)
    ap.add_argument("--w-lr", type=float, default=0.005)
    ap.add_argument("--loss", choices=["ce", "cw", "kl"], default="ce")
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print(f"$ {command}\n# {platform.machine()} torch {torch.__version__} threads {torch.get_num_threads()}")
    preset = load_preset(f"tamoo-ens-{args.dataset}-small-cnn" if args.dataset != "cifar10"
                         else "tamoo-ens-cifar10-preact-resnet18", "quick")
    threat = ThreatModel(preset.eval.attacks[0].norm, preset.eval.attacks[0].eps)
    model = Ensemble([load_trained_model(r, "best", device=args.device)[0].eval() for r in args.victim_runs])
    flags, per_member, seconds = {}, {}, {}
    for method in args.methods:
        flags[method], per_member[method], seconds[method] = flags_of(method, model, threat, args)
        print(f"{method:8s} A-All {100 * float(flags[method].float().mean()):6.2f}  "
              f"A-Avg {100 * float(per_member[method].float().mean()):6.2f}  {seconds[method]:.0f} s")
    n = len(next(iter(flags.values())))
    pairs = {}
    if "tamoo" in flags:
        for base in (m for m in args.methods if m != "tamoo"):
            b = int((flags["tamoo"] & ~flags[base]).sum())
            c = int((~flags["tamoo"] & flags[base]).sum())
            lo, hi = newcombe(float(flags["tamoo"].sum()), float(flags[base].sum()), n)
            pairs[base] = {"tamoo_only": b, "baseline_only": c, "mcnemar_p": mcnemar_p(b, c),
                           "paired_difference_points": 100 * (b - c) / n, "unpaired_newcombe_95": [lo, hi]}
            print(f"TA-MOO vs {base}: b = {b} (TA-MOO only), c = {c} ({base} only), exact McNemar p = "
                  f"{mcnemar_p(b, c):.4f}; difference {100 * (b - c) / n:+.1f} points")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": command, "n": n, "threat": threat.to_dict(), "victims": [str(r) for r in args.victim_runs],
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k != "victim_runs"},
        "seconds": seconds, "pairs": pairs,
        "a_all_flags": {m: f.int().tolist() for m, f in flags.items()},
        "member_flags": {m: f.int().tolist() for m, f in per_member.items()},
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
