"""CARSO under the paper's classifier-only protocol beside the adaptive end-to-end one, for the default inference
settings and the v1 ablations (z = 0, vote, softmax-sum, E = 4), on one trained CARSO.

The ablations differ only in inference settings (``sampling``, ``ensemble_size``, ``aggregation``; read from the
carso-mnist preset's variants), so one set of weights serves every row: each row sets them on the loaded model.

``classifier-only``: AutoAttack standard on the wrapped classifier alone (once; seed 0; state file in the output
folder, so an interrupted run resumes), its points then judged by one fresh pass of every row's CARSO. A point the
row gets wrong clean counts as not robust, as everywhere in an evaluation.

``end-to-end --variant V``: the adaptive protocol on row V: APGD-CE-20 then APGD-DLR-20, each with EoT 4, crafted on
the smooth ``logit`` view and judged on the deployed aggregation (AutoAttack rand's attacks through the surrogate),
worst case pointwise, and the large-eps check (0.95 in L-inf, 4 eps in L2 and L1). A deterministic row (z = 0) gets
EoT 1: averaging identical gradients is the same attack.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/campaigns/carso_protocol_gap.py RUN classifier-only [--n 500]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/campaigns/carso_protocol_gap.py RUN end-to-end --variant z0
    ... RUN classifier-only --norm l2   (a carso-mnist-l2 run; --eps defaults to the preset's radius)

Outputs: ``<out>/classifier_only.json`` and ``<out>/end_to_end_<variant>.json`` (default out:
benchmarks/results/carso_protocol_gap/).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustlab.attacks.base import attack_mode, predict
from robustlab.core.config import parse_config
from robustlab.core.rng import derive_seed
from robustlab.data import load_dataset
from robustlab.evaluation.classifier_only import judge_seed, run_classifier_only
from robustlab.evaluation.config import AutoAttackConfig, EvalConfig
from robustlab.evaluation.protocol import run_protocol
from robustlab.io.atomic import atomic_write_json
from robustlab.presets import load_preset
from robustlab.purification.carso import carso_of
from robustlab.runs.loading import load_trained_model

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "carso_protocol_gap"
PRESET = "carso-mnist"
ABLATIONS = ("z0", "vote", "softmax", "e4")
INFERENCE = ("sampling", "ensemble_size", "aggregation")  # the settings a v1 ablation changes
_TRAINED: weakref.WeakKeyDictionary[nn.Module, dict[str, Any]] = weakref.WeakKeyDictionary()  # settings as loaded
DEFAULT_EPS = {"linf": 0.3, "l2": 2.0, "l1": 10.0}  # carso-mnist and carso-mnist-norms (Tramer & Boneh's radii)


def inference_rows() -> dict[str, dict[str, Any]]:
    """Row name -> inference settings: the preset's own, then each ablation's (from the preset file's variants)."""
    base = load_preset(PRESET, "quick").train.model.kwargs
    rows = {"default": {}}
    for name in ABLATIONS:
        kwargs = load_preset(PRESET, "quick", variant=name).train.model.kwargs
        rows[name] = {k: kwargs[k] for k in INFERENCE if k in kwargs and kwargs.get(k) != base.get(k)}
    return rows


def set_inference(model: nn.Module, settings: dict[str, Any]) -> dict[str, Any]:
    """Put ``settings`` on the CARSO inside ``model`` (the run's own for the rest); the settings in force."""
    net, _ = carso_of(model)
    trained = _TRAINED.setdefault(net, {key: getattr(net, key) for key in INFERENCE})  # as loaded, before any change
    full = {**trained, **settings}
    for key, value in full.items():
        setattr(net, key, value)
    return full


def _fresh_pass(model: nn.Module, x: torch.Tensor, seed: int, batch_size: int) -> torch.Tensor:
    """Predicted labels of one seeded stochastic pass of ``model`` (the global generator is restored after)."""
    with torch.random.fork_rng(devices=[]), attack_mode(model), torch.no_grad():
        torch.manual_seed(seed)
        return predict(model, x, batch_size).argmax(dim=1)


def classifier_only(model: nn.Module, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> dict[str, Any]:
    """AutoAttack standard on the classifier once; its points judged by every row."""
    rows = inference_rows()
    clean = {}
    for name, settings in rows.items():
        set_inference(model, settings)
        clean[name] = _fresh_pass(model, x, derive_seed(0, "clean", name), args.batch_size) == y
    set_inference(model, rows["default"])
    aa = AutoAttackConfig(version="standard", norm=args.norm, eps=args.eps)
    t0 = time.perf_counter()
    outcome = run_classifier_only(model, x, y, torch.ones_like(y, dtype=torch.bool), aa, seed=0,
                                  batch_size=args.batch_size,
                                  state_file=args.out / "classifier_only_autoattack.state.safetensors")
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {"classifier": {"clean": _mean(outcome.autoattack.clean),
                                          "autoattack_standard": _mean(outcome.on_classifier),
                                          "after": {k: _mean(v) for k, v in outcome.autoattack.robust.items()}},
                           "rows": {}, "autoattack_seconds": seconds}
    for name, settings in rows.items():
        in_force = set_inference(model, settings)
        judged = _fresh_pass(model, outcome.x_adv, judge_seed(0), args.batch_size) == y
        out["rows"][name] = {"settings": in_force, "clean": _mean(clean[name]),
                             "classifier_only_judged_on_carso": _mean(clean[name] & judged)}
    return out


def end_to_end(model: nn.Module, args: argparse.Namespace) -> dict[str, Any]:
    """The adaptive protocol on one row."""
    settings = set_inference(model, inference_rows()[args.variant])
    eot = 1 if settings["sampling"] == "mean" else 4
    attacks = [{"name": name, "norm": args.norm, "eps": args.eps, "steps": 20, "eot_samples": eot,
                "surrogate": "logit"} for name in ("apgd-ce", "apgd-dlr")]
    cfg = parse_config({"n": args.n, "batch_size": args.batch_size, "attacks": attacks, "large_eps": args.large_eps},
                       EvalConfig)
    t0 = time.perf_counter()
    result = run_protocol(model, load_dataset("mnist", "test"), cfg, show_progress=True)
    return {"settings": settings, "seconds": time.perf_counter() - t0, "clean": result.clean_accuracy,
            "robust_accuracy": result.robust_accuracy, "worst_case": result.worst_case_accuracy,
            "sanity": result.sanity, "timings": result.timings, "per_sample": result.per_sample}


def _mean(mask: torch.Tensor) -> float:
    return float(mask.float().mean())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a trained carso-mnist run folder")
    parser.add_argument("part", choices=("classifier-only", "end-to-end"))
    parser.add_argument("--variant", default="default", choices=("default", *ABLATIONS))
    parser.add_argument("--n", type=int, default=500, help="first test points")
    parser.add_argument("--norm", choices=tuple(DEFAULT_EPS), default="linf")
    parser.add_argument("--eps", type=float, help="radius (default: 0.3, 2.0, 10 for linf, l2, l1)")
    parser.add_argument("--large-eps", type=float, help="collapse check radius (default: 0.95 in linf, else 4 eps)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--which", default="best")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.eps = DEFAULT_EPS[args.norm] if args.eps is None else args.eps
    if args.large_eps is None:
        args.large_eps = 0.95 if args.norm == "linf" else 4 * args.eps
    args.out.mkdir(parents=True, exist_ok=True)
    model, _ = load_trained_model(args.run, args.which, "cpu")
    report: dict[str, Any] = {"run": str(args.run), "which": args.which, "n": args.n, "norm": args.norm,
                              "eps": args.eps, "large_eps": args.large_eps,
                              "threads": torch.get_num_threads(), "torch": torch.__version__,
                              "machine": platform.processor() or platform.machine(), "load_before": os.getloadavg()}
    if args.part == "classifier-only":
        test = load_dataset("mnist", "test")
        idx = torch.arange(args.n)
        report.update(classifier_only(model, test.float_images(idx), test.labels[idx], args))
        path = args.out / "classifier_only.json"
    else:
        report.update(end_to_end(model, args))
        path = args.out / f"end_to_end_{args.variant}.json"
    report["load_after"] = os.getloadavg()
    atomic_write_json(path, report)
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
