"""The ensemble analyses of a trained run (entropy detection, transferability) with the thesis's protocol for the run's
dataset as defaults: CIFAR-10 detection uses PGD/BIM/MIM-20 at eps 8/255 with step 1/255 (ch. 4 A8, Fig. 3) and
transferability PGD-20 at eps 8/255 with step 2/255 (T6); grayscale sets keep the run's training eps with 40 steps of
eps/10 (the thesis gives no MNIST protocol)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from robustlab.analysis.detection import DetectionResult, detection_experiment, plot_roc, save_detection
from robustlab.analysis.transferability import TransferabilityResult, save_transferability, transferability
from robustlab.attacks import create_attack
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel, canonical_norm
from robustlab.models.ensemble import is_ensemble
from robustlab.runs import load_run_points, run_folder_of, training_attack

#: eps of each dataset's standard threat model, when the run names none.
_DATASET_EPS = {"mnist": 0.3, "fashion-mnist": 0.1, "cifar10": 8 / 255}


@dataclass(frozen=True)
class AttackDefaults:
    """Defaults of an analysis for one run: radii, iterative attacks, steps and step size (None: eps / 10)."""

    eps: tuple[float, ...]
    attacks: tuple[str, ...]
    steps: int
    step_size: float | None


def _run_eps(run: Path, dataset: str) -> float:
    attack = training_attack(run_folder_of(run))
    return float(attack["eps"]) if attack else _DATASET_EPS.get(dataset, 0.3)


def detection_defaults(run: Path, dataset: str) -> AttackDefaults:
    """The detection protocol for ``dataset`` (the thesis's on CIFAR-10), at the run's training eps elsewhere."""
    if dataset == "cifar10":
        return AttackDefaults((8 / 255,), ("pgd", "bim", "mim"), 20, 1 / 255)
    return AttackDefaults((_run_eps(run, dataset),), ("pgd", "mim"), 40, None)


def transfer_defaults(run: Path, dataset: str) -> AttackDefaults:
    """The transferability protocol for ``dataset`` (T6 on CIFAR-10: PGD-20, eps 8/255, step 2/255)."""
    if dataset == "cifar10":
        return AttackDefaults((8 / 255,), ("pgd",), 20, 2 / 255)
    return AttackDefaults((_run_eps(run, dataset),), ("pgd",), 20, None)


@dataclass
class DetectionOutcome:
    """The detection result, whose prediction was scored, and the files written."""

    result: DetectionResult
    whose: str
    json_path: Path
    plot_path: Path


def run_detection(run: str | Path, *, eps: list[float] | None = None, attacks: list[str] | None = None,
                  steps: int | None = None, step_size: float | None = None, norm: str = "linf",
                  source: str = "ensemble", n: int = 1000, which: str = "best",
                  device: str = "auto") -> DetectionOutcome:
    """Entropy detection (CCE-DM) on the run's first ``n`` test points; unset options take :func:`detection_defaults`.
    Writes ``analysis/detection.json`` and ``analysis/detection_roc.png`` into the run folder."""
    run = Path(run)
    model, meta, x, y = load_run_points(run, n, which=which, device=device)
    d = detection_defaults(run, meta["dataset"])
    names = attacks or list(d.attacks)
    rows = []
    for e in eps or d.eps:  # one experiment per eps so that a step size of eps / 10 follows eps
        size = step_size or d.step_size or e / 10
        specs = {a: {"name": a, **({} if a == "fgsm" else {"steps": steps or d.steps, "step_size": size})}
                 for a in names}
        rows += detection_experiment(model, x, y, specs, [e], norm=norm, source=source).rows  # type: ignore[arg-type]
    result = DetectionResult(source=source, only_successful=True, n=len(x), rows=rows)
    whose = f"{source} prediction" if is_ensemble(model) else "the model's prediction"
    out = run_folder_of(run) / "analysis"
    json_path = save_detection(result, out / "detection.json")
    plot_path = plot_roc(result, out / "detection_roc.png", title=f"entropy detector ({whose})")
    return DetectionOutcome(result, whose, json_path, plot_path)


def run_transfer(run: str | Path, *, eps: float | None = None, steps: int | None = None,
                 step_size: float | None = None, norm: str = "linf", n: int = 1000, which: str = "best",
                 device: str = "auto") -> tuple[TransferabilityResult, Path]:
    """Transferability inside an ensemble run (a^(i,j), T, nT, a_single, S subsets); unset options take
    :func:`transfer_defaults`. Writes ``analysis/transferability.json``."""
    run = Path(run)
    model, meta, x, y = load_run_points(run, n, which=which, device=device)
    if not is_ensemble(model):
        raise InputError(f"{run} is not an ensemble: transferability compares the members of one")
    d = transfer_defaults(run, meta["dataset"])
    radius = eps if eps is not None else d.eps[0]
    k, size = steps or d.steps, step_size or d.step_size or radius / 10
    threat = ThreatModel(canonical_norm(norm), radius)
    result = transferability(model, x, y, lambda m: create_attack("pgd", m, threat, steps=k, step_size=size),
                             label=f"(PGD-{k} {norm} eps={radius:.4g} step={size:.4g})")
    return result, save_transferability(result, run_folder_of(run) / "analysis" / "transferability.json")
