"""Tabular robustness table: standard, PGD-AT and TRADES MLPs on the shuttle table, each evaluated on the first
1,000 test rows (clean, PGD-50, AutoAttack custom APGD-CE + FAB-T at L-inf eps 0.05 of each feature's range), with
plain and balanced accuracy (the mean per-class recall: 7% of the rows are anomalies), and Square run as a black-box
check on the rows viewed as 1 x 1 x d images (Square itself takes only N x C x H x W).

    OMP_NUM_THREADS=1 nice python benchmarks/campaigns/tabular_table.py --scale quick \\
        --out benchmarks/results/tabular_table.json

``--extra-eps`` re-runs the whole protocol (PGD-50 and AutoAttack, step sizes scaled with the radius) on the same
models at other radii (default 0.1, where the eps sweep shows the standard model losing normal rows too).
Each row is trained into ``<runs>/tabular-shuttle-<variant>-<scale>`` (reused when its best checkpoint exists). The
balanced numbers are computed here from the evaluation's per-point flags and the test labels; the evaluation result
format itself carries plain accuracy only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.attacks.square import Square
from robustlab.core.threat import ThreatModel
from robustlab.data import load_dataset
from robustlab.evaluation.config import EvalConfig
from robustlab.evaluation.protocol import run_protocol
from robustlab.evaluation.result import EvaluationResult
from robustlab.io.atomic import atomic_write_json
from robustlab.presets import load_preset
from robustlab.runs.loading import load_trained_model
from robustlab.training.trainer import Trainer

VARIANTS = ("standard", "pgd-at", "trades")


class RowsAsImages(nn.Module):
    """A table model seen as an image model: 1 x 1 x d "images" are flattened back to d-feature rows."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the rows held in ``x`` (N x 1 x 1 x d)."""
        return self.model(x.flatten(1))


def balanced(correct: Tensor, labels: Tensor) -> float:
    """Mean over the classes present of the fraction of that class's points that are correct (balanced accuracy)."""
    recalls = [float(correct[labels == c].float().mean()) for c in labels.unique()]
    return sum(recalls) / len(recalls)


def per_class(correct: Tensor, labels: Tensor) -> dict[str, float]:
    """Accuracy within each class present (its recall)."""
    return {str(int(c)): float(correct[labels == c].float().mean()) for c in labels.unique()}


def at_eps(cfg: EvalConfig, eps: float) -> EvalConfig:
    """The protocol ``cfg`` at radius ``eps``: every attack's eps (step sizes scaled alike), AutoAttack's; no sweep."""
    attacks = []
    for a in cfg.attacks:
        update: dict[str, Any] = {"eps": eps}
        if a.step_size is not None:
            update["step_size"] = a.step_size * eps / a.eps
        attacks.append(a.model_copy(update=update))
    aa = None if cfg.autoattack is None else cfg.autoattack.model_copy(update={"eps": eps})
    return cfg.model_copy(update={"attacks": attacks, "autoattack": aa, "eps_sweep": [], "large_eps": None})


def trained(name: str, scale: str, runs: Path, epochs: int | None, train_subset: int | None) -> tuple[nn.Module, Any,
                                                                                                        float]:
    """Train (or reuse) preset ``name`` at ``scale``; (model in eval mode, preset, training seconds)."""
    preset = load_preset(name, scale)
    update: dict[str, Any] = {"name": f"{name}-{scale}", "device": "cpu"}
    if epochs is not None:
        update["epochs"] = epochs
    cfg = preset.train.model_copy(update=update)
    if train_subset is not None:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"train_subset": train_subset})})
    run_dir = runs / cfg.name
    seconds = 0.0
    if not (run_dir / "checkpoints" / "best.safetensors").exists():
        t0 = time.perf_counter()
        Trainer(cfg, run_dir, show_progress=False).fit()
        seconds = time.perf_counter() - t0
    model, _ = load_trained_model(run_dir, "best", device="cpu")
    return model.eval(), preset, seconds


def square_check(model: nn.Module, x: Tensor, y: Tensor, robust: Tensor, eps: float, queries: int) -> dict[str, Any]:
    """Square (L-inf, ``queries`` queries) on the rows every earlier attack failed on, viewed as 1 x 1 x d images:
    how many more it breaks (a black-box attack beating the white-box ones would point at masked gradients)."""
    idx = robust.nonzero().squeeze(1)
    if idx.numel() == 0:
        return {"queries": queries, "attacked": 0, "broken": 0}
    wrapped = RowsAsImages(model).eval()
    attack = Square(wrapped, ThreatModel("linf", eps), queries=queries, seed=0)
    images = x[idx].reshape(len(idx), 1, 1, -1)
    adv = attack(images, y[idx])
    with torch.no_grad():
        still = wrapped(adv).argmax(1) == y[idx]
    linf = float((adv - images).abs().max())
    return {"queries": queries, "attacked": int(len(idx)), "broken": int((~still).sum()), "max_linf": linf}


def row(variant: str, result: EvaluationResult, labels: Tensor, extra: dict[str, Any]) -> dict[str, Any]:
    """One table row: plain and balanced accuracy, clean and under each attack, and the worst case."""
    clean = torch.tensor(result.per_sample["clean"])
    worst = clean.clone()
    attacks: dict[str, Any] = {}
    for name, flags in result.per_sample.items():
        if name == "clean":
            continue
        mask = torch.tensor(flags)
        worst[: len(mask)] &= mask
        attacks[name] = {"accuracy": result.robust_accuracy[name], "balanced": balanced(mask, labels[: len(mask)])}
    return {
        "variant": variant,
        "n": result.n,
        "anomalies": int((labels == 1).sum()),
        "clean": result.clean_accuracy,
        "clean_balanced": balanced(clean, labels),
        "clean_per_class": per_class(clean, labels),
        "robust": float(worst.float().mean()),
        "robust_balanced": balanced(worst, labels),
        "robust_per_class": per_class(worst, labels),
        "attacks": attacks,
        "eps_sweep": result.eps_sweep,
        "sanity_warnings": result.sanity.get("warnings", []),
        **extra,
    }


def main() -> None:
    """Train and evaluate every row, then write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="quick")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--runs", type=Path, default=Path("runs/tabular"))
    parser.add_argument("--n", type=int, default=1000, help="test rows evaluated (the first n)")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    parser.add_argument("--train-subset", type=int, default=None, help="train on the first rows only")
    parser.add_argument("--square-queries", type=int, default=1000)
    parser.add_argument("--extra-eps", type=float, nargs="*", default=[0.1], help="radii the protocol is re-run at")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tabular_table.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    test = load_dataset("shuttle", "test")
    rows = []
    for variant in args.variants:
        name = f"tabular-shuttle-{variant}"
        model, preset, train_s = trained(name, args.scale, args.runs, args.epochs, args.train_subset)
        cfg = preset.eval.model_copy(update={"n": args.n})
        if cfg.autoattack is not None:
            cfg = cfg.model_copy(update={"autoattack": cfg.autoattack.model_copy(update={"n": args.n})})
        t0 = time.perf_counter()
        result = run_protocol(model, test, cfg)
        eval_s = time.perf_counter() - t0
        n = result.n
        x, y = test.float_images(torch.arange(n)), test.labels[:n]
        worst = torch.tensor(result.per_sample["clean"])
        for flags in result.per_sample.values():
            worst[: len(flags)] &= torch.tensor(flags)
        eps = float(result.threat["eps"])
        square = square_check(model, x, y, worst, eps, args.square_queries)
        r = row(variant, result, y, {"train_seconds": train_s, "eval_seconds": eval_s, "square": square})
        print(f"{variant:9s} eps {eps:g}  clean {r['clean']:.3f} (balanced {r['clean_balanced']:.3f})  robust "
              f"{r['robust']:.3f} (balanced {r['robust_balanced']:.3f})  square broke {square['broken']}/"
              f"{square['attacked']}  train {train_s:.0f}s eval {eval_s:.0f}s", flush=True)
        r["at_eps"] = {}
        for extra in args.extra_eps:
            res = run_protocol(model, test, at_eps(cfg, extra))
            w = torch.tensor(res.per_sample["clean"])
            for flags in res.per_sample.values():
                w[: len(flags)] &= torch.tensor(flags)
            sq = square_check(model, x, y, w, extra, args.square_queries)
            r["at_eps"][repr(extra)] = row(variant, res, y, {"square": sq})
            e = r["at_eps"][repr(extra)]
            print(f"{variant:9s} eps {extra:g}  robust {e['robust']:.3f} (balanced {e['robust_balanced']:.3f})  "
                  f"square broke {sq['broken']}/{sq['attacked']}", flush=True)
        rows.append(r)
    atomic_write_json(args.out, {
        "what": "shuttle table (river 0.26.1 shuttle.csv.gz, ODDS binary), MLP 128-128, L-inf eps in units of each "
                "feature's train+val range; robust = worst case over PGD-50 and AutoAttack custom (APGD-CE, FAB-T); "
                "balanced = mean per-class recall",
        "scale": args.scale, "epochs_override": args.epochs, "train_subset": args.train_subset,
        "threads": torch.get_num_threads(), "test_rows": args.n, "eps": eps, "rows": rows,
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
