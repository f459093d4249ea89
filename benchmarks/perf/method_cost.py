"""Cost of each robust-training method's own terms: one training step relative to PGD-AT with the same attack.

Every method crafts with the same PGD-k (k = 10, eps 0.3, step 0.05) on the same batch and model, then takes an
optimizer step through its real objective; ``ratio`` = median step time / PGD-AT's (CE on adversarial only).
So 1.0 means the method adds nothing beyond PGD-AT's k+1 passes (ADR runs on its own CNN and is compared with
PGD-AT + clean CE on that CNN); TRADES/MART add a clean forward, ADR a second
view and pairwise terms, AWP a proxy step, UDR its pull and dual update. Timings are interleaved (load hits all
methods alike) and the median of ``--repeats`` is taken.

    .venv/bin/python benchmarks/perf/method_cost.py [--model cw-cnn] [--repeats 5] [--threads 2]
        [--family single|ensemble] [--out benchmarks/results/method_cost.json]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from attack_overhead import interleaved_medians

from robustlab.models import create_model
from robustlab.training.objectives import create_objective
from robustlab.training.objectives.base import ObjectiveConfig

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "method_cost.json"
CODE_SOFT_BALL = {"pull_cost": "pixel-hinge", "tau_over_step": 1.0, "lam_period": 10, "lam_clamp": False,
                  "lam_distance": "mean-abs", "clip_every_step": True}
METHODS: dict[str, tuple[str, dict]] = {
    "pgd-at": ("pgd-at", {}),
    "pgd-at (+clean CE)": ("pgd-at", {"natural_weight": 1.0}),
    "trades": ("trades", {"beta": 1.0}),
    "mart": ("mart", {"beta": 1.0}),
    "awp-at": ("awp-at", {}),
    "udr-pgd": ("udr-pgd", {"natural_weight": 1.0, "udr": CODE_SOFT_BALL}),
    "udr-trades": ("udr-trades", {"beta": 1.0, "udr": CODE_SOFT_BALL}),
    "udr-mart": ("udr-mart", {"beta": 1.0, "udr": CODE_SOFT_BALL}),
    "pgd-at (+clean CE) [adr-cnn]": ("pgd-at", {"natural_weight": 1.0}),
    "adr (adv base)": ("adr", {}),
    "adr (trades base)": ("adr", {"base": "trades"}),
    "ascl (leaked-ls)": ("ascl", {"strategy": "leaked-ls"}),
}
# --family ensemble: 2-member C&W CNN ensembles relative to ADV (one C&W CNN, CE(x) + CE(x_a)); the thesis
# reports CCE at about 3.3x ADV per epoch for 2 members.
TWO_MEMBERS = {"member": "cw-cnn", "k": 2}
ENSEMBLE_METHODS: dict[str, tuple[str, dict, dict | None]] = {
    "adv": ("pgd-at", {"natural_weight": 1.0}, None),
    "adv-en (2)": ("adv-en", {"natural_weight": 1.0}, TWO_MEMBERS),
    "adp (2)": ("adp", {"alpha": 2.0, "beta": 0.5}, TWO_MEMBERS),
    "cce-rm (2)": ("cce", {"variant": "rm"}, TWO_MEMBERS),
    "cce-dm (2)": ("cce", {"variant": "dm"}, TWO_MEMBERS),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cw-cnn")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--family", choices=["single", "ensemble"], default="single")
    parser.add_argument("--out", type=Path, default=None, help=f"default {DEFAULT_OUT} (_ensemble for that family)")
    args = parser.parse_args()
    if args.out is None:
        args.out = DEFAULT_OUT.with_name("method_cost_ensemble.json") if args.family == "ensemble" else DEFAULT_OUT
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = torch.rand(args.batch, 1, 28, 28), torch.randint(0, 10, (args.batch,))
    attack = {"name": "pgd", "norm": "linf", "eps": 0.3, "steps": 10, "step_size": 0.05}
    runs = {}
    if args.family == "ensemble":
        table = {k: (v[0], v[1], v[2]) for k, v in ENSEMBLE_METHODS.items()}
    else:
        table = {k: (v[0], v[1], None) for k, v in METHODS.items()}
    for label, (name, params, members) in table.items():
        on_adr_cnn = name == "adr" or "[adr-cnn]" in label  # ADR's own CNN: compare it with ADV on that CNN
        if members is not None:
            model = create_model("ensemble", "mnist", **members)
        else:
            model = create_model("adr-cnn" if on_adr_cnn else args.model, "mnist")
        objective = create_objective(ObjectiveConfig(name=name, attack=attack, params=params))
        head = objective.modules(model, x[:2])
        trainable = [p for p in model.parameters()] + ([] if head is None else list(head.parameters()))
        opt = torch.optim.SGD(trainable, lr=0.01, momentum=0.9)

        def step(model=model, objective=objective, opt=opt) -> None:  # noqa: ANN001
            model.train()
            loss, _ = objective(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            objective.after_step(model)

        runs[label] = step
    seconds = interleaved_medians(runs, args.repeats, x.device)
    if args.family == "ensemble":
        ratios = {k: v / seconds["adv"] for k, v in seconds.items()}
    else:
        adv_on_adr_cnn = seconds["pgd-at (+clean CE) [adr-cnn]"]
        ratios = {k: v / (adv_on_adr_cnn if k.startswith("adr") else seconds["pgd-at"]) for k, v in seconds.items()}
    report = {"benchmark": "method_cost", "family": args.family, "model": args.model, "batch": args.batch,
              "attack": attack,
              "threads": args.threads, "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(),
              "seconds": seconds, "ratio_to_pgd_at": ratios,
              "note": "ensemble rows are relative to ADV (one C&W CNN, CE(x) + CE(x_a))" if args.family == "ensemble"
              else "adr rows are relative to PGD-AT with the clean CE term on adr-cnn (ADR's own model)"}
    for k, v in report["ratio_to_pgd_at"].items():
        print(f"{k:22s} {seconds[k] * 1000:8.1f} ms  {v:5.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
