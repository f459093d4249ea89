"""Which ADR term destabilises ADR-ADV training? Latent growth in short runs of ADR variants from one start.

Each variant trains the ADR CNN on the first N MNIST training images with Adam 1e-3 and the quick preset's PGD-10
(eps warmed up linearly over the run's first half), and prints train accuracy, the ADR terms and the mean absolute
latent every ``--log-every`` steps. The run that keeps accuracy rising and the latent bounded is a stable recipe.

    .venv/bin/python benchmarks/campaigns/adr_mnist_latent_growth.py --steps 80 --variants text code lc gb smt warmup
        [--out benchmarks/results/adr_mnist_latent_growth.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from robustlab.data.registry import load_dataset
from robustlab.models.latent import latent_and_logits
from robustlab.models.registry import create_model
from robustlab.training.objectives.base import ObjectiveConfig, create_objective

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "adr_mnist_latent_growth.json"
# The ADR-ADV preset as it was when docs/results.md's table was measured: the clean latent detached in L_lc (the
# objective's default then; stop_grad_clean is False by default now), so every variant states it.
BASE = {"base": "adv", "lambda_lc": 1.0, "lambda_gb": 1.0, "lambda_smt": 1.0, "lambda_conf": 0.0, "gb_scale": "max",
        "stop_grad_clean": True}
VARIANTS: dict[str, dict] = {
    "adv": {"lambda_lc": 0.0, "lambda_gb": 0.0, "lambda_smt": 0.0},  # ADR-None: CE(adv) + CE(clean)
    "text": {},  # the preset then: clean-clean global pairs with gradient on both sides, L_lc's clean side detached
    "code": {"global_pairs": "clean-adv", "conf_on": "adv"},  # the released code's pairs (clean side detached)
    "lc": {"lambda_gb": 0.0, "lambda_smt": 0.0},
    "gb": {"lambda_lc": 0.0, "lambda_smt": 0.0},
    "smt": {"lambda_lc": 0.0, "lambda_gb": 0.0},
    "lc-nosg": {"lambda_gb": 0.0, "lambda_smt": 0.0, "stop_grad_clean": False},
    "text-nosg": {"stop_grad_clean": False},  # the text: no stop-gradient anywhere
    "warmup": {"lambda_warmup_epochs": 1.0},
    "code-warmup": {"global_pairs": "clean-adv", "conf_on": "adv", "lambda_warmup_epochs": 1.0},
}


def run(variant: str, steps: int, n: int, log_every: int, seed: int) -> list[dict]:
    torch.manual_seed(seed)
    data = load_dataset("mnist", "train", val_size=5000)
    x_all, y_all = data.images[:n].float() / 255.0, data.labels[:n]
    model = create_model("adr-cnn", "mnist")
    params = {**BASE, **VARIANTS[variant]}
    attack = {"name": "pgd", "norm": "linf", "eps": 0.3, "steps": 10, "step_size": 0.05}
    epochs = steps * 128 / n
    obj = create_objective(ObjectiveConfig(name="adr", attack=attack, params=params, eps_warmup_epochs=epochs / 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    log, t0 = [], time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, n, (128,), generator=gen)
        x, y = x_all[idx], y_all[idx]
        obj.set_progress(step * 128 / n)
        model.train()
        loss, m = obj(model, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % log_every == 0:
            with torch.no_grad():
                z, _ = latent_and_logits(model, x, None)
            row = {"variant": variant, "step": step + 1, "loss": round(m["loss"], 3),
                   **{k: round(m[k], 4) for k in ("acc", "adv_acc", "lc", "gb", "smt")},
                   "latent_mean_abs": round(float(z.abs().mean()), 4), "s": round(time.perf_counter() - t0, 1)}
            print(json.dumps(row), flush=True)
            log.append(row)
    return log


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=["text", "code", "lc", "gb", "smt"], choices=sorted(VARIANTS))
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out
    results = json.loads(out.read_text()) if out.exists() else {}
    for v in args.variants:
        results[v] = run(v, args.steps, args.n, args.log_every, args.seed)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(out)


if __name__ == "__main__":
    main()
