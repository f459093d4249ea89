"""TA-MOO attack tables (thesis ch. 4 Part B, Tables 1 / 5 / 6): train or load the victims of a tamoo preset family,
run TA-MOO against Uniform, MinMax and MOO with one budget, and write the success rates and the published numbers
to a JSON file.

    python benchmarks/campaigns/tamoo_attack_tables.py --table ens --dataset mnist --scale quick --n 64 --steps 10 \\
        --out ens.json

Victims: ``tamoo-ens-<dataset>-*`` (all members, as one Ensemble) for ``ens``; ``tamoo-uni-eot-<dataset>`` for
``uni`` and ``eot``. Each is trained into ``<runs>/<preset>-<scale>`` (resumed / reused when present). The attack
budget is the paper's (100 steps of eps/4, lambda 100, K = 10 inner steps of lr 0.005) unless overridden.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from robustlab.attacks.moo import METHODS, EnsembleMOO, TransformMOO, UniversalMOO
from robustlab.core.threat import ThreatModel
from robustlab.data import load_dataset
from robustlab.io.atomic import atomic_write_json
from robustlab.models.ensemble import Ensemble
from robustlab.presets import list_presets, load_preset
from robustlab.runs.loading import load_trained_model
from robustlab.training.trainer import Trainer


def victim_presets(table: str, dataset: str) -> list[str]:
    """The preset names of a table's victims on ``dataset``."""
    if table == "ens":
        names = [p for p in list_presets() if p.startswith(f"tamoo-ens-{dataset}-")]
    else:
        names = [f"tamoo-uni-eot-{dataset}"]
    if not names or any(n not in list_presets() for n in names):
        raise SystemExit(f"no tamoo {table} victims for dataset {dataset!r}")
    return names


def trained_victim(name: str, scale: str, runs: Path, max_steps: int | None, device: str) -> tuple[Any, Any]:
    """Train (or resume / reuse) the victim preset and return (model in eval mode, preset)."""
    preset = load_preset(name, scale)
    cfg = preset.train.model_copy(update={"name": f"{name}-{scale}", "device": device})
    if max_steps is not None:
        cfg = cfg.model_copy(update={"max_steps_per_epoch": max_steps})
    run_dir = runs / cfg.name
    if not (run_dir / "checkpoints" / "best.safetensors").exists():
        Trainer(cfg, run_dir, show_progress=False).fit()
    model, _ = load_trained_model(run_dir, "best", device=device)
    return model.eval(), preset


def build_attack(table: str, model: torch.nn.Module, threat: ThreatModel, method: str, args: argparse.Namespace):
    """One attack of the table with the shared budget."""
    common: dict[str, Any] = {"method": method, "steps": args.steps, "step_size": args.step_size or threat.eps / 4,
                              "lam": args.lam, "inner_steps": args.inner_steps, "w_lr": args.w_lr}
    if table == "ens":
        return EnsembleMOO(model, threat, loss=args.loss or "ce", **common)
    if table == "uni":
        return UniversalMOO(model, threat, group_size=args.group_size, loss=args.loss or "cw", **common)
    return TransformMOO(model, threat, stochastic=args.stochastic, loss=args.loss or "cw",
                        grad_memory=args.grad_memory, generator=torch.Generator().manual_seed(args.seed), **common)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", choices=["ens", "uni", "eot"], required=True)
    ap.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist", "cifar10"])
    ap.add_argument("--scale", default="quick", choices=["quick", "paper"])
    ap.add_argument("--n", type=int, default=1000, help="test points (UNI: a multiple of --group-size)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--step-size", type=float, default=None, help="default eps / 4 (2/255 at 8/255)")
    ap.add_argument("--lam", type=float, default=100.0)
    ap.add_argument("--inner-steps", type=int, default=10)
    ap.add_argument("--w-lr", type=float, default=0.005)
    ap.add_argument("--loss", choices=["ce", "cw", "kl"], default=None, help="ENS: ce; UNI / EoT: cw")
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--stochastic", action="store_true")
    ap.add_argument("--grad-memory", action="store_true")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--max-train-steps", type=int, default=None, help="cap steps per epoch (smoke runs)")
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--victim-runs", type=Path, nargs="+", default=None,
                    help="trained run folders to attack instead of the preset victims (ENS: all, as one Ensemble; "
                         "UNI / EoT: the first); the threat model stays the dataset's preset one")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    names = victim_presets(args.table, args.dataset)
    if args.victim_runs:
        preset = load_preset(names[0], args.scale)
        members = [load_trained_model(r, "best", device=args.device)[0].eval() for r in args.victim_runs]
        names = [str(r) for r in args.victim_runs]
    else:
        victims = [trained_victim(n, args.scale, args.runs, args.max_train_steps, args.device) for n in names]
        preset, members = victims[0][1], [m for m, _ in victims]
    model = Ensemble(members) if args.table == "ens" else members[0]
    threat = ThreatModel(preset.eval.attacks[0].norm, preset.eval.attacks[0].eps)
    test = load_dataset(args.dataset, "test")
    n = min(args.n, len(test))
    batch = args.batch_size - args.batch_size % args.group_size if args.table == "uni" else args.batch_size
    results: dict[str, Any] = {}
    for method in args.methods:
        torch.manual_seed(args.seed)
        flags, start = [], time.perf_counter()
        for lo in range(0, n - (n % args.group_size if args.table == "uni" else 0), batch):
            idx = torch.arange(lo, min(lo + batch, n))
            x = test.float_images(idx).to(args.device)
            y = test.labels[idx].to(args.device)
            attack = build_attack(args.table, model, threat, method, args)
            x_adv = attack(x, y)
            rates = attack.success(x_adv, y) if args.table == "ens" else attack.success(x_adv, x, y)
            flags.append((rates, len(idx)))
        total = sum(k for _, k in flags)
        results[method] = {
            "a_all": sum(r.a_all * k for r, k in flags) / total,
            "a_avg": sum(r.a_avg * k for r, k in flags) / total,
            "per_task": [sum(r.per_task[i] * k for r, k in flags) / total for i in range(len(flags[0][0].per_task))],
            "seconds": time.perf_counter() - start,
        }
        print(f"{method:8s} A-All {results[method]['a_all']:6.2f}  A-Avg {results[method]['a_avg']:6.2f}")
    atomic_write_json(args.out, {
        "table": args.table, "dataset": args.dataset, "scale": args.scale, "n": n, "victims": names,
        "threat": threat.to_dict(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": results, "published": preset.published,
    })


if __name__ == "__main__":
    main()
