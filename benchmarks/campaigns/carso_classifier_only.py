"""CARSO on MNIST at a tiny CPU budget: the end-to-end protocol beside the paper's classifier-only one, with the
layers chosen by ``layers: auto``. A pipeline measurement, not a reproduction (classifier and purifier are trained for
minutes on 4,096 images).

    .venv/bin/python benchmarks/campaigns/carso_classifier_only.py [--root /tmp/carso_classifier_only] [--n 100]
        [--aa-n N] [--out benchmarks/results/carso_classifier_only.json]

1. A C&W CNN PGD-AT classifier (mnist-pgd-at quick recipe on the first 4,096 images, 3 epochs, PGD-5, fp32).
2. carso-mnist's quick recipe over it with ``layers: auto`` (4 layers; the chosen ones and the per-layer TwoNN
   dimensions, clean and adversarial, are printed and saved).
3. carso-mnist's quick end-to-end protocol on the first ``n`` test points, plus ``classifier_only``: AutoAttack
   standard (reference settings) on the classifier alone, judged on CARSO. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from robustlab.core.config import parse_config
from robustlab.data import load_dataset
from robustlab.evaluation.config import EvalConfig
from robustlab.evaluation.protocol import run_protocol
from robustlab.io.atomic import atomic_write_json
from robustlab.presets import load_preset
from robustlab.runs.loading import load_trained_model
from robustlab.training.config import TrainConfig
from robustlab.training.trainer import Trainer

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "carso_classifier_only.json"


def _train(cfg: dict, run: Path) -> float:
    """Train (or resume, or find finished) the run; seconds spent here."""
    t0 = time.perf_counter()
    Trainer(parse_config(cfg, TrainConfig), run, show_progress=False).fit()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/carso_classifier_only"))
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--aa-n", type=int, default=None, help="classifier-only AutoAttack points (default: n)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    clf = load_preset("mnist-pgd-at", "quick").train.model_dump(mode="json")
    clf.update(epochs=3, bf16=False, name="clf")
    clf["data"]["train_subset"] = 4096
    clf["objective"]["attack"].update(steps=5, step_size=0.1)
    clf["validation"]["n"] = 200
    t_clf = _train(clf, args.root / "clf")
    preset = load_preset("carso-mnist", "quick")
    carso = preset.train.model_dump(mode="json")
    carso["name"] = "carso"
    carso["model"]["kwargs"].update(classifier=str(args.root / "clf"), layers="auto", auto_layers=4)
    t_carso = _train(carso, args.root / "carso")
    model, _ = load_trained_model(args.root / "carso", which="last")
    kw = model.model_spec["kwargs"]
    print("layers chosen:", kw["layers"])
    for name, (clean, adv) in kw["layers_auto"]["intrinsic_dim"].items():
        print(f"  {name}: TwoNN clean {clean:.2f} adversarial {adv:.2f}")
    ev = preset.eval.model_dump(mode="json", exclude_none=True)
    ev.update(n=args.n, classifier_only={"version": "standard", "norm": "linf", "eps": 0.3, "n": args.aa_n or args.n})
    if ev.get("autoattack"):
        ev["autoattack"]["n"] = args.aa_n or args.n
    data = load_dataset("mnist", "test")
    t0 = time.perf_counter()
    result = run_protocol(model, data, parse_config(ev, EvalConfig))
    t_eval = time.perf_counter() - t0
    summary = {"n": result.n, "clean": result.clean_accuracy, "end_to_end": result.robust_accuracy,
               "worst_case": result.worst_case_accuracy, "classifier_only": result.classifier_only["accuracy"],
               "layers": kw["layers"], "layers_auto": kw["layers_auto"],
               "sanity_warnings": result.sanity.get("warnings"),
               "seconds": {"classifier": t_clf, "carso": t_carso, "evaluation": t_eval}}
    print(json.dumps(summary, indent=2))
    atomic_write_json(args.out, summary)


if __name__ == "__main__":
    main()
