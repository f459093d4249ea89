"""CARSO inference cost relative to its classifier alone and to its floor: median time of a forward pass, and of a
forward + backward to the input (one attack step), for the CARSO model with E reconstructions, against the
classifier it wraps and against the passes CARSO cannot avoid, timed bare on the same batch: one classifier pass on
the B inputs (the representation), the decoder on B*E latents and the classifier on the B*E reconstructions
(forward, or forward + backward for the attack step). Timings are interleaved so machine load hits all alike.

    .venv/bin/python benchmarks/perf/carso_cost.py RUN [--ensemble-sizes 1 8 16] [--batch 100] [--repeats 5]
        [--threads 1] [--out benchmarks/results/carso_cost.json]
    .venv/bin/python benchmarks/perf/carso_cost.py --preset carso-mnist   # untrained weights: the cost is the same

RUN is a trained CARSO run folder (e.g. runs/small/carso-mnist-reduced); its classifier is the one it was built on.
Run it from the repository root: a CARSO run names its classifier's run folder as given at training time.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
from attack_overhead import bare_step, interleaved_medians

from robustlab.io.atomic import atomic_write_json
from robustlab.models import create_model
from robustlab.presets import load_preset
from robustlab.purification.carso import carso_of
from robustlab.runs.loading import load_trained_model

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "carso_cost.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, nargs="?")
    parser.add_argument("--preset", help="build the preset's CARSO with untrained weights instead of loading RUN")
    parser.add_argument("--ensemble-sizes", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if (args.run is None) == (args.preset is None):
        parser.error("give a CARSO run folder or --preset NAME")
    if args.preset is not None:
        p = load_preset(args.preset, "quick")
        assert p.train.model.name is not None and p.train.data.dataset is not None
        model, meta = create_model(p.train.model.name, p.train.data.dataset, **p.train.model.kwargs), {
            "dataset": p.train.data.dataset}
    else:
        model, meta = load_trained_model(args.run, "best", device="cpu")
    model.eval()
    net, _ = carso_of(model)
    classifier = net.classifier
    x = torch.rand(args.batch, *net.image_shape)
    y = torch.randint(0, net.num_classes, (args.batch,))

    def forward(m: torch.nn.Module, inputs: torch.Tensor = x) -> object:
        with torch.no_grad():
            return m(inputs)

    def forward_of(m: torch.nn.Module, inputs: torch.Tensor) -> object:
        with torch.no_grad():
            return m(inputs)

    def backward_of(m: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Forward + backward to the input of a module whose output is not logits (the decoder)."""
        leaf = inputs.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(m(leaf).float().sum(), leaf)
        return grad

    runs = {"classifier forward": lambda: forward(classifier),
            "classifier forward+backward": lambda: bare_step(classifier, x, y)}
    x_norm = model.normalize(x) if hasattr(model, "normalize") else x
    with torch.no_grad():
        cond = net.condition(x_norm)
    for e in args.ensemble_sizes:
        def set_e(e: int = e) -> None:
            net.ensemble_size = e
        runs[f"carso E={e} forward"] = lambda e=e: (set_e(e), forward(model))
        runs[f"carso E={e} forward+backward"] = lambda e=e: (set_e(e), bare_step(model, x, y))
        latents = torch.cat([torch.randn(len(x) * e, net.latent_dim), cond.repeat_interleave(e, dim=0)], dim=1)
        with torch.no_grad():
            recs = torch.sigmoid(net.decoder(latents)).view(len(x) * e, *net.image_shape)
        ys = y.repeat_interleave(e)
        runs[f"decoder B*E={len(x) * e} forward"] = lambda z=latents: forward_of(net.decoder, z)
        runs[f"decoder B*E={len(x) * e} forward+backward"] = lambda z=latents: backward_of(net.decoder, z)
        runs[f"classifier B*E={len(x) * e} forward"] = lambda r=recs: forward(classifier, r)
        runs[f"classifier B*E={len(x) * e} forward+backward"] = lambda r=recs, t=ys: bare_step(classifier, r, t)
    med = interleaved_medians(runs, args.repeats, torch.device("cpu"))
    ratios, floor_ratios = {}, {}
    for e in args.ensemble_sizes:
        be = len(x) * e
        for kind in ("forward", "forward+backward"):
            ratios[f"E={e} {kind}"] = med[f"carso E={e} {kind}"] / med[f"classifier {kind}"]
            floor = med[f"classifier {kind}"] + med[f"decoder B*E={be} {kind}"] + med[f"classifier B*E={be} {kind}"]
            floor_ratios[f"E={e} {kind}"] = med[f"carso E={e} {kind}"] / floor
    for k, v in ratios.items():
        print(f"{k:28s} {v:7.1f}x the classifier alone, {floor_ratios[k]:5.2f}x its floor")
    atomic_write_json(args.out, {
        "run": None if args.run is None else str(args.run), "dataset": meta.get("dataset"), "batch": args.batch,
        "repeats": args.repeats,
        "threads": args.threads, "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__, "median_seconds": med, "ratios": ratios, "floor_ratios": floor_ratios,
        "preset": args.preset,
    })


if __name__ == "__main__":
    main()
