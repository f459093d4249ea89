"""AutoAttack against its floor: each attack's time divided by the bare forward/backward passes it must make.

A counting wrapper records, per attack, every forward pass (its batch size) and how many backward passes went
through its output; those same passes are then replayed bare on the same points (forward-only ones under
``torch.inference_mode``, the others as forward + cross-entropy + input gradient, parameters frozen): the floor no
implementation making those passes can beat. pyautoattack 0.2.0 runs on the same model, points and wrapper (its own
pass counts are reported too). Ours, the floor and the reference are interleaved within each repeat and medians are
taken, so load hits all alike; each time is kept as wall time and as the process's CPU time (the steadier of the two
on a loaded machine). An attack's time runs from its first pass to the next attack's (its final evaluation included,
for both implementations); ``setup`` is what comes before the first attack (the clean pass and the checks on the
defence). Our AutoAttack runs its forward-only attacks (Square) with channels-last weights on CPU image batches
(``channels_last`` in the JSON), so our floor of those is replayed in that layout and the reference's
(``floor_default_layout``) in the default one: each implementation is divided by the floor of its passes as made.

Two modes: ``chain`` is AutoAttack standard as it runs (each attack on the points all earlier ones left robust; on a
non-robust model the later attacks get no points), ``alone`` runs each of its attacks by itself on every clean-correct
point, with the standard settings and seeds, so each attack's overhead is measured on a full batch.
``--survivors-of ATTACK`` gives alone mode the points our ATTACK leaves robust instead, the harder points a chain
hands on, with the repeats a single chain run lacks.

    .venv/bin/python benchmarks/perf/autoattack_floor.py [--run RUN] [--n 100] [--eps 0.3] [--norm linf]
        [--modes chain alone] [--alone ATTACK ...] [--survivors-of ATTACK] [--repeats 1] [--train-steps 300]
        [--out benchmarks/results/autoattack_floor.json]

Without ``--run`` the model is a small CNN trained for a few seconds (``--train-steps`` Adam steps, seed 0) on the
MNIST training split; with ``--run`` it is the trained run's model (``load_trained_model``) and its test split.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.attacks import attack_mode
from robustlab.attacks.autoattack import AutoAttack
from robustlab.attacks.memory_format import channels_last, channels_last_helps
from robustlab.attacks.registry import get_attack_class
from robustlab.core.threat import ThreatModel
from robustlab.data import load_dataset
from robustlab.io.atomic import atomic_write_json

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "autoattack_floor.json"
STANDARD = ["apgd-ce", "apgd-t", "fab-t", "square"]
# pyautoattack's attack object behind each attack of ``standard``
REF_ATTRIBUTE = {"apgd-ce": "apgd", "apgd-t": "apgd_targeted", "fab-t": "fab", "square": "square"}
REFERENCE_NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}  # the reference's names of the norms


class Clock(NamedTuple):
    """Wall seconds and this process's CPU seconds: with one thread the CPU time is the work done, which load from
    other processes on the machine inflates far less than the wall time."""

    wall: float
    cpu: float


def clock() -> Clock:
    """Now, on both clocks."""
    return Clock(time.perf_counter(), time.process_time())


class CountingModel(nn.Module):
    """Pass-through wrapper recording, per phase, each forward's batch size and the backward passes through it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.phase = "setup"
        self.calls: dict[str, list[list[int]]] = {}
        self.starts: list[tuple[str, Clock]] = []

    def enter(self, phase: str) -> None:
        """Start a phase (an attack): later passes are counted for it, and its start time is kept."""
        if phase != self.phase:
            self.phase = phase
            self.starts.append((phase, clock()))

    def reset(self) -> None:
        self.phase, self.calls, self.starts = "setup", {}, [("setup", clock())]

    def forward(self, x: Tensor) -> Tensor:
        out = self.inner(x)
        record = [int(x.shape[0]), 0]
        self.calls.setdefault(self.phase, []).append(record)
        if out.requires_grad:
            out.register_hook(lambda g, r=record: r.__setitem__(1, r[1] + 1))
        return out

    def phase_seconds(self, end: Clock) -> dict[str, Clock]:
        """Wall and CPU seconds from each phase's start to the next phase's start (the last one to ``end``)."""
        out: dict[str, Clock] = {}
        for (name, start), (_, stop) in zip(self.starts, [*self.starts[1:], ("end", end)], strict=True):
            so_far = out.get(name, Clock(0.0, 0.0))
            out[name] = Clock(so_far.wall + stop.wall - start.wall, so_far.cpu + stop.cpu - start.cpu)
        return out


def summary(calls: list[list[int]]) -> dict[str, int]:
    """Pass counts of one phase: forwards, forwards followed by a backward, backwards, and points passed forward."""
    return {"forward": len(calls), "forward_backward": sum(1 for _, b in calls if b),
            "backward": sum(b for _, b in calls), "points_forward": sum(n for n, _ in calls)}


def replay(model: nn.Module, calls: list[list[int]], x: Tensor, y: Tensor) -> Clock:
    """Wall and CPU seconds of the same passes made bare on the first points of ``x``: the floor of one phase."""
    start = clock()
    with attack_mode(model):
        for n, backwards in calls:
            if not backwards:
                with torch.inference_mode():
                    model(x[:n])
                continue
            x_req = x[:n].detach().requires_grad_(True)
            loss = F.cross_entropy(model(x_req), y[:n], reduction="sum")
            for k in range(backwards):
                torch.autograd.grad(loss, x_req, retain_graph=k < backwards - 1)
    end = clock()
    return Clock(end.wall - start.wall, end.cpu - start.cpu)


class _PhasedAutoAttack(AutoAttack):
    """Ours, telling the counting wrapper which attack runs."""

    counter: CountingModel

    def _run_attack(self, state: Any, a_index: int, name: str, *args: Any) -> None:  # type: ignore[override]
        self.counter.enter(name)
        super()._run_attack(state, a_index, name, *args)


def run_ours(counter: CountingModel, x: Tensor, y: Tensor, threat: ThreatModel, attacks: list[str]) -> dict[str, Any]:
    """Our AutoAttack standard (all attacks) or one of its attacks alone (its standard settings), timed per attack."""
    if attacks == STANDARD:
        aa = _PhasedAutoAttack(counter, threat, version="standard", seed=0, batch_size=len(x))
    else:
        settings = dict(AutoAttack(counter, threat, version="standard").plan)
        aa = _PhasedAutoAttack(counter, threat, version="custom", attacks=attacks, seed=0, batch_size=len(x),
                               attack_kwargs={a: settings[a] for a in attacks})
    aa.counter = counter
    counter.reset()
    result = aa.run(x, y)
    seconds = counter.phase_seconds(clock())
    return {"robust": result.robust_mask, "seconds": seconds, "calls": counter.calls}


def run_reference(counter: CountingModel, x: Tensor, y: Tensor, threat: ThreatModel,
                  attacks: list[str]) -> dict[str, Any]:
    """pyautoattack standard (restricted to ``attacks``) on the same wrapper, timed per attack the same way."""
    from pyautoattack import AutoAttack as Reference

    ref = Reference(counter, device=str(x.device), eps=threat.eps, norm=REFERENCE_NORMS[threat.norm], seed=0,
                    version="standard")
    ref.verbose = False
    ref.attacks_to_run = list(attacks)
    for name in attacks:
        obj = getattr(ref, REF_ATTRIBUTE[name])
        obj.perturb = _entering(counter, name, obj.perturb)
    counter.reset()
    x_adv, _ = ref.run_standard_evaluation(x, y, batch_size=len(x))
    seconds = counter.phase_seconds(clock())
    with torch.no_grad():
        robust = counter.inner(x_adv).argmax(1) == y
    return {"robust": robust, "seconds": seconds, "calls": counter.calls}


def _entering(counter: CountingModel, name: str, fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    def wrapped(*args: Any, **kwargs: Any) -> Tensor:
        counter.enter(name)
        return fn(*args, **kwargs)

    return wrapped


def tiny_cnn() -> nn.Module:
    """A small CNN for 28 x 28 grey images (two strided convolutions and a linear layer)."""
    return nn.Sequential(nn.Conv2d(1, 16, 5, stride=2, padding=2), nn.ReLU(), nn.Conv2d(16, 32, 5, stride=2, padding=2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


def trained_tiny_cnn(steps: int) -> nn.Module:
    """The small CNN after ``steps`` Adam steps (batch 128, seed 0) on MNIST's training split: a few seconds."""
    torch.manual_seed(0)
    model = tiny_cnn()
    train = load_dataset("mnist", "train")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(train), (128,), generator=gen)
        loss = F.cross_entropy(model(train.float_images(idx)), train.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--run`` and ``--which``: the model under test (these benchmarks share the choice)."""
    parser.add_argument("--run", type=Path, help="a trained run folder (default: a small CNN trained here)")
    parser.add_argument("--which", default="best", help="checkpoint of --run")


def benchmark_model(run: Path | None, which: str, device: str, train_steps: int = 300) -> tuple[nn.Module, str, str]:
    """The model under test, its dataset and its label: the run's trained model, else the small CNN trained here."""
    if run is not None:
        from robustlab.runs.loading import load_trained_model

        model, meta = load_trained_model(run, which, device)
        return model, meta["dataset"], str(run)
    return trained_tiny_cnn(train_steps).to(device), "mnist", "tiny-cnn"


def test_points(dataset: str, n: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """The first ``n`` points of the dataset's test split, as floats in [0, 1], on ``device``."""
    test = load_dataset(dataset, "test")
    return test.float_images(range(n)).to(device), test.labels[:n].to(device)


def correctly_classified(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Which points the model labels right (the clean-correct filter, or robust after an attack's points)."""
    with torch.no_grad():
        return model(x).argmax(1) == y


def classes_of(model: nn.Module, x: Tensor) -> int:
    """How many classes the model scores (one forward pass on the first point)."""
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the JSON result atomically and say where."""
    atomic_write_json(path, report)
    print(f"wrote {path}")


def bench(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, attacks: list[str],
          repeats: int) -> dict[str, Any]:
    """Interleaved ours / floor / reference, ``repeats`` times; per attack the median seconds and the ratios."""
    counter = CountingModel(model)
    phases = ["setup", *attacks]  # setup: the clean pass and the checks on the defence before the attacks
    times: dict[str, dict[str, list[Clock]]] = {
        a: {"ours": [], "floor": [], "floor_default_layout": [], "reference": []} for a in phases}
    ours: dict[str, Any] = {}
    ref: dict[str, Any] = {}
    channels_last_used = channels_last_helps(model, x)  # what our AutoAttack's default does on this model and data
    forward_only = {a for a in attacks if get_attack_class(a).forward_only}  # the attacks it does it for
    for _ in range(repeats):
        ours = run_ours(counter, x, y, threat, attacks)
        for a in phases:
            with channels_last(model, x[:64], enabled=channels_last_used and a in forward_only):
                times[a]["floor"].append(replay(model, ours["calls"].get(a, []), x, y))
            times[a]["floor_default_layout"].append(replay(model, ours["calls"].get(a, []), x, y))
        ref = run_reference(counter, x, y, threat, attacks)
        for a in phases:
            times[a]["ours"].append(ours["seconds"].get(a, Clock(0.0, 0.0)))
            times[a]["reference"].append(ref["seconds"].get(a, Clock(0.0, 0.0)))
    out: dict[str, Any] = {"robust_accuracy": {"ours": float(ours["robust"].float().mean()),
                                               "reference": float(ref["robust"].float().mean())},
                           "same_flags": bool((ours["robust"] == ref["robust"]).all()),
                           "channels_last": channels_last_used, "attacks": {}}
    for a in phases:
        calls = ours["calls"].get(a, [])
        points = max((n for n, _ in calls), default=0)  # the batch; its first pass is a 1-point probe
        out["attacks"][a] = {"points": points, "passes": summary(calls),
                             "reference_passes": summary(ref["calls"].get(a, []))}
        for kind, suffix in (("wall", ""), ("cpu", "_cpu")):
            med = {k: statistics.median(getattr(c, kind) for c in v) if points else 0.0 for k, v in times[a].items()}
            out["attacks"][a] |= {
                f"median{suffix}_s": med,
                f"ours_over_floor{suffix}": _ratio(med["ours"], med["floor"]),
                f"reference_over_floor{suffix}": _ratio(med["reference"], med["floor_default_layout"]),
                f"ours_over_reference{suffix}": _ratio(med["ours"], med["reference"]),
            }
        if points:  # each repeat's own ratio (its runs were adjacent in time): the median and the range
            paired = {name: sorted(t.cpu / f.cpu for t, f in zip(times[a][num], times[a][den], strict=True))
                      for name, num, den in (("ours_over_floor", "ours", "floor"),
                                             ("reference_over_floor", "reference", "floor_default_layout"))}
            out["attacks"][a]["paired_cpu"] = {k: {"median": statistics.median(v), "min": v[0], "max": v[-1]}
                                               for k, v in paired.items()}
    return out


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--n", type=int, default=100, help="test points")
    parser.add_argument("--eps", type=float, default=0.3, help="radius in --norm")
    parser.add_argument("--norm", choices=tuple(REFERENCE_NORMS), default="linf",
                        help="threat norm; both run AutoAttack standard's settings for it")
    parser.add_argument("--modes", nargs="+", choices=("chain", "alone"), default=["chain", "alone"])
    parser.add_argument("--alone", nargs="+", choices=STANDARD, default=STANDARD, help="attacks run alone")
    parser.add_argument("--survivors-of", choices=STANDARD,
                        help="alone: attack only the points our ATTACK (standard settings) leaves robust, as a chain "
                             "would, but with repeats")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats (median taken)")
    parser.add_argument("--train-steps", type=int, default=300, help="Adam steps of the default model")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (with --run: auto too)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    model, dataset, label = benchmark_model(args.run, args.which, args.device, args.train_steps)
    device = next(model.parameters()).device
    threat = ThreatModel(args.norm, args.eps)
    x, y = test_points(dataset, args.n, device)
    correct = correctly_classified(model, x, y)
    report: dict[str, Any] = {
        "benchmark": "autoattack_floor", "model": label, "dataset": dataset, "n": args.n, "eps": args.eps,
        "norm": args.norm, "repeats": args.repeats, "device": str(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "load_before": os.getloadavg(), "clean_accuracy": float(correct.float().mean()), "modes": {},
    }
    if "chain" in args.modes:
        report["modes"]["chain"] = bench(model, x, y, threat, STANDARD, args.repeats)
    if "alone" in args.modes:
        xc, yc = x[correct], y[correct]
        if args.survivors_of:
            xc, yc = survivors(model, xc, yc, threat, args.survivors_of)
            if yc.numel() == 0:
                parser.error(f"our {args.survivors_of} leaves no point robust: alone mode has nothing to attack")
            report["survivors_of"] = {"attack": args.survivors_of, "points": int(yc.numel())}
        report["modes"]["alone"] = {a: bench(model, xc, yc, threat, [a], args.repeats) for a in args.alone}
    report["load_after"] = os.getloadavg()
    print(f"{'mode':<7}{'attack':<15}{'points':>7}{'ours s':>9}{'floor s':>9}{'ours/floor':>11}{'ref/floor':>10}"
          f"{'ours/ref':>9}   CPU time: {'ours/floor':>10}{'ref/floor':>10}{'ours/ref':>9}   paired ours/floor")
    for mode, res in report["modes"].items():
        rows = (list(res["attacks"].items()) if mode == "chain" else
                [(f"{a}/{p}" if p == "setup" else a, r["attacks"][p]) for a, r in res.items() for p in r["attacks"]])
        for a, r in rows:
            m = r["median_s"]
            print(f"{mode:<7}{a:<15}{r['points']:>7}{m['ours']:>9.3f}{m['floor']:>9.3f}{_fmt(r['ours_over_floor']):>11}"
                  f"{_fmt(r['reference_over_floor']):>10}{_fmt(r['ours_over_reference']):>9}             "
                  f"{_fmt(r['ours_over_floor_cpu']):>10}{_fmt(r['reference_over_floor_cpu']):>10}"
                  f"{_fmt(r['ours_over_reference_cpu']):>9}   {_span(r.get('paired_cpu', {}).get('ours_over_floor'))}")
    write_report(args.out, report)
    return report


def survivors(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, attack: str) -> tuple[Tensor, Tensor]:
    """The points our ``attack``, with AutoAttack standard's settings for the norm, leaves robust."""
    settings = dict(AutoAttack(model, threat, version="standard").plan)[attack]
    robust = correctly_classified(model, get_attack_class(attack)(model, threat, **settings)(x, y), y)
    return x[robust], y[robust]


def _fmt(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _span(paired: dict[str, float] | None) -> str:
    return "-" if paired is None else f"{paired['median']:.3f}x ({paired['min']:.3f}-{paired['max']:.3f})"


if __name__ == "__main__":
    main()
