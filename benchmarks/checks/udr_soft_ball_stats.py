"""Table 5 of the UDR chapter on a CIFAR-shaped toy: perturbation statistics of PGD and of UDR-PGD's soft balls.

Thesis Table 5 (CIFAR-10, eps = 0.031): per-pixel mean |delta|, L-inf, and the share of pixels with |delta| within
0.9 eps / eps / 1.1 eps, for PGD (0.0270, 0.031, 19.7% / 100% / 100%), UDR-PGD at epoch 0 (0.0278, 0.031, 18.9% /
100% / 100%) and UDR-PGD at epoch 200 (0.0301, 0.034, 19.5% / 22.1% / 100%). CIFAR-10 is not on this machine, so
the data are synthetic CIFAR-shaped images (10 classes, a smooth colour template per class plus noise, in [0, 1])
and the model a small CNN. The attacks are the presets' own training objectives at paper scale (10 steps of 2/255
at eps 8/255): ``udr-cifar10-pgd-at`` (PGD), ``udr-cifar10-udr-pgd`` (the released code's soft ball, the rows'
setting) and ``udr-cifar10-udr-pgd-thesis-l2`` (the text's literal L2 soft ball).

Phases: the statistics on the untrained model (epoch 0: lambda = 1), then each objective trains its own copy of the
model for ``--epochs`` epochs (lambda moves by Eq. 19 / the code's rule), and the statistics are taken again on the
trained models at their own lambda; finally the code soft ball is measured on the UDR-trained model at fixed lambdas
(what a longer run reaches), with the lambda at which the code's update stops (mean |delta| = eps) and a lower
bound on the iterations the measured drift needs to get there. ``ce`` is the mean cross-entropy of the examples
(attack strength).

    OMP_NUM_THREADS=1 python benchmarks/checks/udr_soft_ball_stats.py [--epochs 3] [--n-train 2048]
        [--out benchmarks/results/udr_soft_ball_stats.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.presets import load_preset
from robustlab.training.objectives import create_objective
from robustlab.training.objectives.udr import perturbation_stats

ROWS = {"pgd": "udr-cifar10-pgd-at", "udr-code": "udr-cifar10-udr-pgd", "udr-literal": "udr-cifar10-udr-pgd-thesis-l2"}
TABLE5 = {"pgd": (0.0270, 0.031, 0.197, 1.0, 1.0), "udr epoch 0": (0.0278, 0.031, 0.189, 1.0, 1.0),
          "udr epoch 200": (0.0301, 0.034, 0.195, 0.221, 1.0)}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "udr_soft_ball_stats.json"


def synthetic_cifar(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-shaped (n, 3, 32, 32) images in [0, 1]: a smooth 4x4 colour template per class, upsampled, plus noise."""
    g = torch.Generator().manual_seed(seed)
    templates = F.interpolate(torch.rand(10, 3, 4, 4, generator=torch.Generator().manual_seed(0)), size=32,
                              mode="bilinear", align_corners=False)
    y = torch.randint(0, 10, (n,), generator=g)
    x = 0.25 + 0.5 * templates[y] + 0.15 * torch.randn(n, 3, 32, 32, generator=g)
    return x.clamp(0.0, 1.0), y


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(32 * 8 * 8, 10))


def objective(row: str):
    return create_objective(load_preset(ROWS[row], "paper").train.objective)


def measure(obj, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 1) -> dict[str, float]:
    """Table 5's statistics (|delta| / eps where relative) and the CE of the examples, on a fixed seed."""
    eps = obj.cfg.attack.eps
    torch.manual_seed(seed)
    x_adv = obj.craft(model.eval(), x, y)
    s = perturbation_stats(x_adv, x, eps)
    with torch.no_grad():
        ce = float(F.cross_entropy(model(x_adv), y))
    return {"mean_abs": s["udr_mean_abs"], "mean_abs_over_eps": s["udr_mean_abs"] / eps, "linf": s["udr_linf"],
            "linf_max": float((x_adv - x).abs().max()), "le_0p9eps": s["udr_frac_le_0p9eps"],
            "le_eps": s["udr_frac_le_1p0eps"], "le_1p1eps": s["udr_frac_le_1p1eps"], "ce": ce,
            "lambda": obj.state_dict().get("udr_lambda")}


def train(obj, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int) -> dict[str, object]:
    """SGD (the preset's paper optimiser: lr 0.01, momentum 0.9, weight decay 3.5e-3) on the objective's loss."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=3.5e-3)
    lams, gaps = [], []
    g = torch.Generator().manual_seed(7)
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - batch + 1, batch):
            idx = order[i : i + batch]
            obj.set_progress(epoch + i / len(x))
            model.train()
            loss, metrics = obj(model, x[idx], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            obj.after_step(model)
            if "udr_lambda" in metrics:
                lams.append(metrics["udr_lambda"])
                gaps.append(obj.cfg.attack.eps - metrics["udr_distance"])
    return {"steps": len(lams) or epochs * (len(x) // batch), "lambda_trace_first_last": lams[:1] + lams[-1:],
            "mean_gap": sum(gaps) / len(gaps) if gaps else None}


def equilibrium_lambda(sweep: dict[str, dict[str, float]]) -> float | None:
    """Lambda at which the code's update stops (mean |d| = eps), interpolated linearly in the lambda sweep."""
    pts = sorted((float(k), v["mean_abs_over_eps"]) for k, v in sweep.items())
    for (l0, m0), (l1, m1) in zip(pts, pts[1:]):
        if (m0 - 1.0) * (m1 - 1.0) <= 0 and m0 != m1:
            return l0 + (1.0 - m0) * (l1 - l0) / (m1 - m0)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=2048)
    ap.add_argument("--n-eval", type=int, default=256)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lambdas", type=float, nargs="+", default=[1.0, 0.95, 0.9, 0.85, 0.8, 0.7])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    machine = f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__} threads " \
              f"{torch.get_num_threads()}".strip()
    print(f"$ {command}\n# {machine}")
    x_tr, y_tr = synthetic_cifar(args.n_train, seed=1)
    x_ev, y_ev = synthetic_cifar(args.n_eval, seed=2)
    base = small_cnn()
    out: dict[str, object] = {"command": command, "machine": machine, "settings": vars(args) | {"out": str(args.out)},
                              "table5": TABLE5, "start": {}, "trained": {}, "lambda_sweep": {}}
    start = time.perf_counter()
    for row in ROWS:
        out["start"][row] = measure(objective(row), base, x_ev, y_ev)
    trained = {}
    for row in ROWS:
        obj, model = objective(row), copy.deepcopy(base)
        info = train(obj, model, x_tr, y_tr, args.epochs, args.batch)
        with torch.no_grad():
            clean = float((model.eval()(x_ev).argmax(1) == y_ev).float().mean())
        out["trained"][row] = {**measure(obj, model, x_ev, y_ev), **info, "clean_acc": clean}
        trained[row] = (obj, model)
    obj, model = trained["udr-code"]
    state = obj.state_dict()
    for lam in args.lambdas:
        obj.load_state_dict({**state, "udr_lambda": lam})
        out["lambda_sweep"][str(lam)] = measure(obj, model, x_ev, y_ev)
    obj.load_state_dict(state)
    gap = out["trained"]["udr-code"]["mean_gap"]
    p = obj.params.udr
    lam_star = equilibrium_lambda(out["lambda_sweep"])
    if gap and gap > 0 and lam_star is not None:
        # the code's rule: every lam_period iterations, lambda -= lam_lr * (eps - mean |d|); the gap shrinks to 0 as
        # lambda reaches lam_star (mean |d| = eps), so the iterations at today's gap are a lower bound
        out["lambda_equilibrium"] = lam_star
        out["iterations_to_equilibrium_lower_bound"] = (1.0 - lam_star) * p.lam_period / (p.lam_lr * gap)
        out["cifar10_iterations_200_epochs"] = 200 * 391
    out["seconds"] = time.perf_counter() - start

    def row_line(name: str, r: dict) -> str:
        lam = "" if r.get("lambda") is None else f"  lambda {r['lambda']:.5f}"
        return (f"{name:28s} mean|d|/eps {r['mean_abs_over_eps']:.3f}  Linf {r['linf']:.4f} (max {r['linf_max']:.4f})"
                f"  <=0.9eps {100 * r['le_0p9eps']:5.1f}%  <=eps {100 * r['le_eps']:5.1f}%  <=1.1eps "
                f"{100 * r['le_1p1eps']:5.1f}%  CE {r['ce']:.3f}{lam}")

    eps = objective("pgd").cfg.attack.eps
    print(f"eps = {eps:.4f}; Table 5 (CIFAR-10): " + "; ".join(
        f"{k}: mean|d|/eps {v[0] / 0.031:.3f} Linf {v[1]} <=0.9eps {100 * v[2]:.1f}% <=eps {100 * v[3]:.1f}% "
        f"<=1.1eps {100 * v[4]:.1f}%" for k, v in TABLE5.items()))
    for phase in ("start", "trained"):
        print(f"-- {phase}" + (f" ({args.epochs} epochs on {args.n_train} images)" if phase == "trained" else ""))
        for row, r in out[phase].items():
            print(row_line(row, r))
    print("-- code soft ball on the UDR-trained model at fixed lambda")
    for lam, r in out["lambda_sweep"].items():
        print(row_line(f"lambda {lam}", r))
    if "lambda_equilibrium" in out:
        print(f"lambda settles where mean|d| = eps: lambda* = {lam_star:.3f} (interpolated from the sweep); at the "
              f"measured gap eps - mean|d| = {gap:.5f} the code's rule (lr {p.lam_lr} every {p.lam_period} "
              f"iterations) needs >= {out['iterations_to_equilibrium_lower_bound']:.0f} iterations to get there "
              f"(CIFAR-10, 200 epochs of batch 128: {out['cifar10_iterations_200_epochs']})")
    print(f"seconds {out['seconds']:.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
