"""Forward and forward + backward passes with the model's weights channels-last against the default layout.

This is what decides where AutoAttack uses channels-last weights (robustlab.attacks.memory_format): one forward pass
under ``torch.no_grad`` (how Square queries) and one forward + input-gradient pass (how APGD and FAB step), on
``--batch`` random images, the two layouts interleaved ``--repeats`` times, medians taken.

    .venv/bin/python benchmarks/perf/channels_last_passes.py [--run RUN] [--batch 100] [--repeats 15]
        [--out benchmarks/results/channels_last_passes.json]

Without ``--run`` the model is autoattack_floor.py's small CNN trained for a few seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from autoattack_floor import trained_tiny_cnn  # noqa: E402

from robustlab.attacks.base import attack_mode  # noqa: E402
from robustlab.attacks.memory_format import channels_last  # noqa: E402
from robustlab.io.atomic import atomic_write_json  # noqa: E402
from robustlab.runs.loading import load_trained_model  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "channels_last_passes.json"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained MNIST run folder (default: a small CNN trained here)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    model = load_trained_model(args.run)[0] if args.run else trained_tiny_cnn(300)
    x = torch.rand(args.batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {}
    with attack_mode(model):
        for _ in range(args.repeats + 1):  # the first round warms up and is dropped
            for layout in ("default", "channels_last"):
                with channels_last(model, x[:64], enabled=layout == "channels_last") as used:
                    assert used == (layout == "channels_last"), "the model refused the channels-last layout"
                    with torch.no_grad():
                        start = time.perf_counter()
                        model(x)
                        times.setdefault(f"forward/{layout}", []).append(time.perf_counter() - start)
                    x_req = x.clone().requires_grad_(True)
                    start = time.perf_counter()
                    torch.autograd.grad(model(x_req).sum(), x_req)
                    times.setdefault(f"forward_backward/{layout}", []).append(time.perf_counter() - start)
    med = {k: statistics.median(v[1:]) for k, v in times.items()}
    result = {
        "benchmark": "channels_last_passes", "model": str(args.run or "tiny-cnn"), "batch": args.batch,
        "repeats": args.repeats, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.processor() or "", "median_s": med,
        "channels_last_over_default": {p: med[f"{p}/channels_last"] / med[f"{p}/default"]
                                       for p in ("forward", "forward_backward")},
    }
    atomic_write_json(args.out, result)
    print(json.dumps(result["channels_last_over_default"], indent=1))
    return result


if __name__ == "__main__":
    main()
