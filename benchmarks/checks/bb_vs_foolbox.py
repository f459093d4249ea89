"""Brendel & Bethge: robustlab's implementation against foolbox 3.3.4's reference, on MNIST, L2 and L-inf.

MNIST ``small-cnn`` trained for one Adam epoch on the first ``--train`` training images (no checkpoint is shipped),
the first ``--n`` correctly classified test images. Both attacks start from the same adversarial points (robustlab's
blended-uniform-noise start, foolbox's default start attack re-implemented; passed to foolbox as
``starting_points``), run ``--steps`` steps with foolbox's defaults (lr 1e-3, 20 decays by 0.5, momentum 0.8,
overshoot 1.1, 10 bisections) on the same batch, so the trust radii match; a second part (``_own_starts``) lets each
start from its own default blended-noise start (different random draws). Reported per norm: median found norm of
each, the median per-image ratio robustlab / foolbox, and the robust accuracy each implies at one eps (robust iff
the found norm > eps). foolbox (with numba and its other imports) is used here only, never by robustlab:

    pip install --no-deps foolbox==3.3.4 eagerpy && pip install numba scipy GitPython requests
    .venv/bin/python benchmarks/checks/bb_vs_foolbox.py [--out benchmarks/results/bb_vs_foolbox.json] [--n 32]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.attacks.bb import BrendelBethge
from robustlab.core.threat import ThreatModel, lp_norm

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "bb_vs_foolbox.json"
EPS = {"l2": 1.5, "linf": 0.1}


def train_mnist(n_train: int, seed: int) -> nn.Module:
    """small-cnn after one epoch of Adam (lr 1e-3, batch 64) on the first ``n_train`` MNIST training images."""
    from robustlab.data import load_dataset
    from robustlab.models import create_model

    data = load_dataset("mnist", "train").subset(n_train)
    torch.manual_seed(seed)
    model = create_model("small-cnn", "mnist")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    x_all, y_all = data.float_images(), data.labels
    for i in torch.randperm(len(data)).split(64):
        opt.zero_grad()
        F.cross_entropy(model(x_all[i]), y_all[i]).backward()
        opt.step()
    return model.eval()


def summary(values: Tensor) -> dict | None:
    """Median, min and max of a 1-D tensor, as floats (None when empty)."""
    if values.numel() == 0:
        return None
    return {"median": float(values.median()), "min": float(values.min()), "max": float(values.max())}


def run_norm(model: nn.Module, x: Tensor, y: Tensor, norm: str, steps: int) -> dict:
    """Both implementations from the same start; norms, their ratio and the robust accuracy at ``EPS[norm]``."""
    import foolbox as fb

    for p in model.parameters():
        p.requires_grad_(False)
    ours = BrendelBethge(model, ThreatModel(norm, EPS[norm]), steps=steps)
    start = ours._start(x, y, None)  # noqa: SLF001  (the shared start, so that only the steps differ)
    with torch.no_grad():
        ok = model(start).argmax(1) != y
    x, y, start = x[ok], y[ok], start[ok]
    t0 = time.perf_counter()
    fixed = BrendelBethge(model, ThreatModel(norm, EPS[norm]), steps=steps, init_attack=_Given(model, start))
    x_ours, found = fixed.minimal_perturbation(x, y)
    ours_s = time.perf_counter() - t0
    fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0))
    cls = fb.attacks.L2BrendelBethgeAttack if norm == "l2" else fb.attacks.LinfinityBrendelBethgeAttack
    t0 = time.perf_counter()
    x_fb = cls(steps=steps).run(fmodel, x, fb.criteria.Misclassification(y), starting_points=start)
    fb_s = time.perf_counter() - t0
    with torch.no_grad():
        fb_adv = model(x_fb).argmax(1) != y
    n_ours, n_fb = lp_norm(x_ours - x, norm), lp_norm(x_fb - x, norm)
    both = found & fb_adv
    eps = EPS[norm]
    return {
        "n": len(y), "start_norm": summary(lp_norm(start - x, norm)),
        "robustlab_found": float(found.float().mean()), "foolbox_adversarial": float(fb_adv.float().mean()),
        "robustlab_norm": summary(n_ours[found]), "foolbox_norm": summary(n_fb[fb_adv]),
        "ratio_robustlab_over_foolbox": summary(n_ours[both] / n_fb[both]),
        "eps": eps, "robust_accuracy_robustlab": float((~found | (n_ours > eps)).float().mean()),
        "robust_accuracy_foolbox": float((~fb_adv | (n_fb > eps)).float().mean()),
        "robustlab_seconds": ours_s, "foolbox_seconds": fb_s,
    }


def run_own_starts(model: nn.Module, x: Tensor, y: Tensor, norm: str, steps: int, seed: int) -> dict:
    """Each implementation from its own default start (foolbox draws its noise from torch's global generator)."""
    import foolbox as fb

    t0 = time.perf_counter()
    ours = BrendelBethge(model, ThreatModel(norm, EPS[norm]), steps=steps, seed=seed)
    x_ours, found = ours.minimal_perturbation(x, y)
    ours_s = time.perf_counter() - t0
    torch.manual_seed(seed)
    cls = fb.attacks.L2BrendelBethgeAttack if norm == "l2" else fb.attacks.LinfinityBrendelBethgeAttack
    t0 = time.perf_counter()
    x_fb = cls(steps=steps).run(fb.PyTorchModel(model, bounds=(0.0, 1.0)), x, fb.criteria.Misclassification(y))
    fb_s = time.perf_counter() - t0
    with torch.no_grad():
        fb_adv = model(x_fb).argmax(1) != y
    n_ours, n_fb = lp_norm(x_ours - x, norm), lp_norm(x_fb - x, norm)
    both, eps = found & fb_adv, EPS[norm]
    return {
        "n": len(y), "robustlab_found": float(found.float().mean()),
        "foolbox_adversarial": float(fb_adv.float().mean()),
        "robustlab_norm": summary(n_ours[found]), "foolbox_norm": summary(n_fb[fb_adv]),
        "ratio_robustlab_over_foolbox": summary(n_ours[both] / n_fb[both]),
        "ratio_of_medians": float(n_ours[both].median() / n_fb[both].median()) if both.any() else None,
        "eps": eps, "robust_accuracy_robustlab": float((~found | (n_ours > eps)).float().mean()),
        "robust_accuracy_foolbox": float((~fb_adv | (n_fb > eps)).float().mean()),
        "robustlab_seconds": ours_s, "foolbox_seconds": fb_s,
    }


class _Given(nn.Module):
    """A stand-in start attack returning fixed points (B&B accepts any ``init_attack`` callable on ``(x, y, t)``)."""

    def __init__(self, model: nn.Module, points: Tensor) -> None:
        super().__init__()
        self.model, self.points = model, points

    def forward(self, x: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
        return self.points


def main() -> None:
    """Train, attack with both implementations, write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--norms", default="l2,linf")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", default="shared,own", help="shared: same starts; own: each its default start")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from robustlab.data import load_dataset

    model = train_mnist(args.train, args.seed)
    test = load_dataset("mnist", "test").subset(1000)
    x, y = test.float_images(), test.labels
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    x, y = x[correct][: args.n], y[correct][: args.n]
    report: dict = {"benchmark": "bb_vs_foolbox", "torch": torch.__version__, "python": platform.python_version(),
                    "threads": args.threads, "train_images": args.train, "steps": args.steps,
                    "clean_accuracy_1000": float(correct.float().mean())}
    parts = args.parts.split(",")
    for norm in args.norms.split(","):
        if "shared" in parts:
            report[norm] = run_norm(model, x, y, norm, args.steps)
            print(norm, json.dumps(report[norm], indent=2), flush=True)
        if "own" in parts:
            report[f"{norm}_own_starts"] = run_own_starts(model, x, y, norm, args.steps, args.seed)
            print(norm, "own starts", json.dumps(report[f"{norm}_own_starts"], indent=2), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
