"""Our L1 attacks vs the reference implementation (``pyautoattack``): the L1-box projection, APGD-CE (with and
without the large-eps schedule), APGD-T and FAB-T at AutoAttack's L1 ``standard`` settings, on a small CNN fitted in
seconds on synthetic 1x8x8 images (no data set needed).

Reports the projection's largest difference and time on a CIFAR-sized batch, and per attack, radius and seed the
robust accuracy of each implementation.

    .venv/bin/python benchmarks/checks/l1_vs_reference.py [--n 200] [--seeds 2]
        [--out benchmarks/results/l1_vs_reference.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks.apgd import APGD, APGDTargeted
from robustlab.attacks.fab import FABTargeted
from robustlab.core.threat import ThreatModel, project_l1_box

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "l1_vs_reference.json"


def synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy copies of 10 fixed random 1x8x8 prototypes: learnable in seconds, not trivially robust."""
    g = torch.Generator().manual_seed(seed)
    protos = 0.2 + 0.6 * torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(123))
    y = torch.randint(0, 10, (n,), generator=g)
    return (protos[y] + 0.2 * torch.randn(n, 1, 8, 8, generator=g)).clamp(0, 1), y


def fitted_model() -> nn.Module:
    """A two-conv CNN, 3 epochs of Adam on 512 synthetic images."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(16 * 16, 10))
    x, y = synthetic(512, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(3):
        for i in range(0, len(x), 128):
            opt.zero_grad()
            F.cross_entropy(model(x[i : i + 128]), y[i : i + 128]).backward()
            opt.step()
    return model.eval().requires_grad_(False)


def projection_check() -> dict:
    """Largest coordinate difference and seconds of both projections on 500 CIFAR-sized perturbations."""
    from pyautoattack.autopgd_base import L1_projection

    g = torch.Generator().manual_seed(0)
    x = torch.rand(500, 3, 32, 32, generator=g)
    d = torch.randn(x.shape, generator=g)
    start = time.perf_counter()
    ours = project_l1_box(d, x, 12.0)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    ref = d + L1_projection(x, d, 12.0)
    ref_s = time.perf_counter() - start
    return {"max_abs_diff": float((ours - ref).abs().max()), "seconds_ours": ours_s, "seconds_reference": ref_s}


def attack_pairs(model: nn.Module, threat: ThreatModel, seed: int) -> dict[str, tuple]:
    """Ours and the reference's attack at AutoAttack's L1 settings (and APGD-CE without the schedule)."""
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
    from pyautoattack.fab_pt import FABAttack_PT

    ref = {"norm": "L1", "eps": threat.eps, "seed": seed, "device": "cpu"}
    return {
        "apgd-ce": (APGD(model, threat, seed=seed), APGDAttack(model, **ref)),
        "apgd-ce-largereps": (APGD(model, threat, seed=seed, use_largereps=True),
                              APGDAttack(model, use_largereps=True, **ref)),
        "apgd-t-largereps": (APGDTargeted(model, threat, n_target_classes=5, seed=seed, use_largereps=True),
                             APGDAttack_targeted(model, n_target_classes=5, use_largereps=True, **ref)),
        "fab-t": (FABTargeted(model, threat, n_target_classes=9, seed=seed),
                  FABAttack_PT(model, targeted=True, n_target_classes=9, **ref)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = fitted_model()
    x, y = synthetic(args.n, seed=2)

    def accuracy(x_adv: torch.Tensor) -> float:
        with torch.no_grad():
            return float((model(x_adv).argmax(1) == y).float().mean())

    rows = []
    for eps in (1.0, 2.0):
        threat = ThreatModel("l1", eps)
        for seed in range(args.seeds):
            runs = attack_pairs(model, threat, seed)
            for name, (ours, ref) in runs.items():
                start = time.perf_counter()
                ours_acc = accuracy(ours(x, y))
                ours_s = time.perf_counter() - start
                start = time.perf_counter()
                ref_acc = accuracy(ref.perturb(x, y))
                ref_s = time.perf_counter() - start
                rows.append({"attack": name, "eps": eps, "seed": seed, "ours": ours_acc, "reference": ref_acc,
                             "seconds_ours": ours_s, "seconds_reference": ref_s})
                print(f"{name:18s} eps={eps:g} seed={seed}: ours {ours_acc:.3f}  reference {ref_acc:.3f}  "
                      f"({ours_s:.1f} s / {ref_s:.1f} s)", flush=True)
    result = {"clean_accuracy": accuracy(x), "n": args.n, "projection": projection_check(), "attacks": rows,
              "machine": f"{platform.machine()}, torch {torch.__version__}, 1 thread"}
    print(json.dumps(result["projection"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
