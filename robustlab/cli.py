"""The ``robustlab`` command line: parse, call the library, print. No logic lives here."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from robustlab.errors import RobustlabError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Adversarial robustness: train, attack, evaluate.")
console = Console()
err_console = Console(stderr=True)

RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Folder holding run folders.")]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when available), cpu, cuda or cuda:N.")]
SetOpt = Annotated[
    list[str], typer.Option("--set", help="Override, e.g. --set train.optimizer.lr=0.05 (repeatable).")
]
StoreOpt = Annotated[Path | None, typer.Option(
    "--store", help="Results store (SQLite); default $ROBUSTLAB_STORE, else results.sqlite in --runs-dir (runs/).")]
VariantOpt = Annotated[str | None, typer.Option(help="Row of a YAML file with variants (bundled rows are named "
                                                     "<file>-<variant>, see `robustlab presets`).")]


#: The exit code of every error the CLI reports itself (robustlab's errors, files it cannot read or write); the same
#: code click gives a usage error, so scripts need to check one number.
ERROR_EXIT = 2


class _ConsoleLogHandler(logging.Handler):
    """robustlab's log messages (a resumed run, a reused evaluation) as plain lines on the error console."""

    def emit(self, record: logging.LogRecord) -> None:
        err_console.print(self.format(record), markup=False, highlight=False, soft_wrap=True)


@app.callback()
def _setup() -> None:
    """Show robustlab's INFO messages once per process (every command runs through here)."""
    log = logging.getLogger("robustlab")
    if not any(isinstance(h, _ConsoleLogHandler) for h in log.handlers):
        log.addHandler(_ConsoleLogHandler())
    log.setLevel(logging.INFO)


def main() -> None:
    """Entry point: robustlab errors and files that cannot be read or written become one red line and exit code
    ``ERROR_EXIT``, not a traceback."""
    try:
        app()
    except (RobustlabError, OSError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(ERROR_EXIT)


def _overrides(pairs: list[str] | None, epochs: int | None, n: int | None = None) -> dict[str, Any]:
    from robustlab.presets import deep_merge, parse_overrides

    out = parse_overrides(pairs or [])
    if epochs is not None:
        out = deep_merge(out, {"train": {"epochs": epochs}})
    if n is not None:
        out = deep_merge(out, {"eval": {"n": n}})
    return out


def _result_table(title: str, result: Any, published: dict[str, Any] | None = None) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("accuracy", justify="right")
    for label, acc in result.summary_rows():
        table.add_row(label if label == "clean" else f"robust: {label}", f"{100 * acc:.2f}%")
    if len(result.robust_accuracy) > 1:
        table.add_row(f"worst case over all attacks (first {result.worst_case_n} points)",
                      f"{100 * result.worst_case_accuracy:.2f}%")
    for key in ("large_eps_accuracy",):
        if key in result.sanity:
            ok = "ok" if result.sanity["large_eps_collapsed"] else "[red]FAILED: does not collapse[/red]"
            table.add_row(f"sanity: {result.protocol[0]['name']} at eps={result.sanity['large_eps']}",
                          f"{100 * result.sanity[key]:.2f}% ({ok})")
    if "zero_grad_fraction" in result.sanity:
        zero, bad = result.sanity["zero_grad_fraction"], result.sanity["nonfinite_grad_fraction"]
        table.add_row("sanity: zero / non-finite input gradients", f"{100 * zero:.1f}% / {100 * bad:.1f}%")
    for key, acc in getattr(result, "eps_sweep", {}).items():
        table.add_row(f"eps sweep: first attack alone at eps={key} (first {result.eps_sweep_n} points)",
                      f"{100 * acc:.2f}%")
    for warning in result.sanity.get("warnings", []):
        table.add_row("[red]sanity warning[/red]", warning)
    for key, value in (published or {}).items():
        if key == "eps_sweep" and isinstance(value, dict):
            for eps, v in value.items():
                table.add_row(f"published: eps sweep at eps={eps}", f"{v}%")
        elif key != "source":
            table.add_row(f"published: {key}", f"{value}%")
    table.caption = f"{result.n} {result.dataset} {result.split} images; threat {result.threat}"
    return table


@app.command()
def train(
    preset: Annotated[str, typer.Argument(help="Preset name (see `robustlab presets`) or a YAML file.")],
    scale: Annotated[str, typer.Option(help="quick (CPU minutes), reduced (quick on 10k images for 3 epochs in "
                                            "fp32: the CPU budget of docs/results.md) or paper (published budget).")]
    = "quick",
    epochs: Annotated[int | None, typer.Option(help="Override the number of epochs.")] = None,
    set_: SetOpt = None,  # type: ignore[assignment]
    name: Annotated[str | None, typer.Option(help="Run name (folder under --runs-dir).")] = None,
    variant: VariantOpt = None,
    runs_dir: RunsDir = Path("runs"),
    fresh: Annotated[bool, typer.Option(help="Ignore an existing checkpoint and start over.")] = False,
    evaluate_after: Annotated[
        bool, typer.Option("--evaluate/--no-evaluate", help="Run the preset's evaluation after training.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    store: StoreOpt = None,
) -> None:
    """Train a preset (resumes automatically from the run folder's last checkpoint)."""
    from robustlab.presets import load_preset
    from robustlab.runs import write_preset_file
    from robustlab.training.trainer import Trainer

    p = load_preset(preset, scale, _overrides(set_, epochs), variant=variant)
    if name:
        p.train.name = name
    run_dir = runs_dir / p.train.name
    if fresh and (run_dir / "checkpoints").exists():
        import shutil

        shutil.rmtree(run_dir / "checkpoints")
    trainer = Trainer(p.train, run_dir, show_progress=progress)  # validates the config before anything is written
    write_preset_file(run_dir, p)
    summary = trainer.fit()
    console.print(f"trained [bold]{p.name}[/bold] ({scale}) in {summary.seconds:.0f}s -> {run_dir}")
    if evaluate_after:
        _evaluate_run(run_dir, p.eval, "best", progress, published=p.published, store=_store_for(store, runs_dir))


def _evaluate_run(run: Path, eval_cfg: Any, which: str, progress: bool, published: dict | None = None,
                  device: str = "auto", store: Path | None = None, out: Path | None = None) -> Any:
    """Evaluate a run folder's checkpoint (or a checkpoint file) under ``eval_cfg``; the result JSON goes to ``out``
    (default RUN/eval/<which>-<time>.json), whose folder is checked for writing before any attack runs."""
    from robustlab.data import load_dataset
    from robustlab.evaluation.protocol import run_protocol
    from robustlab.runs import resolve_checkpoint, run_folder_of
    from robustlab.training.trainer import load_trained_model
    from robustlab.utils.io import ensure_writable

    ckpt = resolve_checkpoint(run, which)
    if run.is_file():
        which = run.stem  # a checkpoint file: label results by its name
    folder = run_folder_of(run)
    if out is None:
        out = folder / "eval" / f"{which}-{datetime.now():%Y%m%d-%H%M%S-%f}.json"  # never overwrites a result
        state_dir = folder / "eval" / f"state-{which}"
    else:
        state_dir = out.parent / f"{out.stem}.state"
    ensure_writable(out.parent, "the evaluation result")
    model, meta = load_trained_model(ckpt, which, device)
    data = load_dataset(meta["dataset"], eval_cfg.split)
    result = run_protocol(model, data, eval_cfg, model_info={"checkpoint": str(run), "which": which, **meta},
                          show_progress=progress, state_dir=state_dir)
    console.print(_result_table(f"{run} ({which})", result, published))
    _save_result(result, out)
    console.print(f"result written to {out}")
    _record_in_store(result, folder, out, store)
    if result.eps_sweep:
        _plot_sweep(result, out.parent / "robust_accuracy_vs_eps.png", published, str(run))
    return result, out


def _save_result(result: Any, out: Path) -> None:
    """Write the result; if that fails after all the attacks ran, print it as JSON so it is not lost, then fail."""
    from robustlab.errors import OutputError

    try:
        result.save(out)
    except OSError as exc:
        print(json.dumps(result.to_dict(), sort_keys=True))
        raise OutputError(f"could not write the result to {out} ({exc.strerror or exc}); it was printed above as JSON. "
                          "Pass --out PATH to write it elsewhere next time") from None


def _store_for(store: Path | None, runs_dir: Path) -> Path:
    """The store of a command with ``--runs-dir``: ``--store``, else $ROBUSTLAB_STORE, else beside the runs."""
    from robustlab.store.db import default_store_path

    return store if store is not None else default_store_path(runs_dir)


def _record_in_store(result: Any, run_dir: Path, eval_file: Path, store: Path | None) -> None:
    """Record an evaluation in the results store; a store that cannot be used costs a warning, not the result."""
    from robustlab.store import ResultsStore

    try:
        with ResultsStore(store) as db:
            eval_id = db.record(result, run_dir, eval_file)
        console.print(f"recorded in the results store {db.path} (id {eval_id})")
    except RobustlabError as exc:
        err_console.print(f"[yellow]warning:[/yellow] not recorded in the results store: {exc}")


def _plot_sweep(result: Any, path: Path, published: dict | None, title: str) -> None:
    from robustlab.analysis.plots import plot_robust_accuracy_vs_eps
    from robustlab.errors import InputError

    pub = (published or {}).get("eps_sweep") or None
    try:
        plot_robust_accuracy_vs_eps(result.eps_sweep, path, published=pub, title=title)
    except InputError as exc:  # a malformed published sweep must not cost the measured plot
        err_console.print(f"[yellow]warning:[/yellow] published eps_sweep not plotted: {exc}")
        plot_robust_accuracy_vs_eps(result.eps_sweep, path, title=title)
    console.print(f"robust accuracy vs eps plotted to {path}")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder or checkpoint file.")],
    which: Annotated[str, typer.Option(help="best or last checkpoint of a run folder.")] = "best",
    protocol: Annotated[str, typer.Option(
        help="preset (the run's), pgd (PGD-50x3), autoattack-standard|plus|rand, or autoattack-custom "
        "with --set eval.autoattack.attacks=[apgd-ce,square].")] = "preset",
    preset: Annotated[str | None, typer.Option(help="Take the protocol from this preset instead of the run's.")] = None,
    scale: Annotated[str, typer.Option(help="Scale of --preset.")] = "quick",
    n: Annotated[int | None, typer.Option(min=1, help="Number of test points (default: the protocol's).")] = None,
    eps: Annotated[float | None, typer.Option(help="Evaluate at this eps instead (all attacks and the large-eps "
                                                   "check).")] = None,
    norm: Annotated[str | None, typer.Option(help="linf, l2 or l1: with --eps, for a run that names no threat "
                                                  "model.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the result JSON here (default RUN/eval/).")] = None,
    set_: SetOpt = None,  # type: ignore[assignment]
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    device: DeviceOpt = "auto",
    store: StoreOpt = None,
) -> None:
    """Clean and robust accuracy of a trained model on the test set; the result JSON goes to RUN/eval/ and the
    results store."""
    from robustlab.evaluation.defaults import protocol_for_run
    from robustlab.evaluation.protocol import EvalConfig
    from robustlab.presets import load_preset
    from robustlab.runs import resolve_checkpoint, run_folder_of
    from robustlab.training.config import parse_config

    resolve_checkpoint(run, which)  # a missing run or checkpoint is reported before anything else
    preset_eval = None if preset is None else load_preset(preset, scale).eval.model_dump(mode="json",
                                                                                          exclude_none=True)
    eval_dict, published = protocol_for_run(run_folder_of(run), protocol=protocol, preset_eval=preset_eval, eps=eps,
                                            norm=norm, overrides=_overrides(set_, None, n).get("eval", {}))
    _evaluate_run(run, parse_config(eval_dict, EvalConfig, "eval"), which, progress, published, device, store, out)


@app.command()
def attack(
    run: Annotated[Path, typer.Argument(help="Run folder or checkpoint file.")],
    out: Annotated[Path, typer.Option(help="Where to write the adversarial examples (.safetensors).")],
    name: Annotated[str, typer.Option("--attack", help="A registered attack (see list below) or autoattack-VERSION.")]
    = "pgd",
    eps: Annotated[float, typer.Option(help="Radius of the threat model.")] = 0.3,
    norm: Annotated[str, typer.Option(help="linf, l2 or l1.")] = "linf",
    n: Annotated[int, typer.Option(min=1, help="Attack the first N points of the split.")] = 100,
    split: Annotated[str, typer.Option(help="test or val.")] = "test",
    which: Annotated[str, typer.Option(help="best or last checkpoint of a run folder.")] = "best",
    set_: SetOpt = None,  # type: ignore[assignment]
    seed: Annotated[int, typer.Option(help="Seed for the attack's randomness.")] = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Craft adversarial examples and save them (float32 NCHW in [0,1]) with labels, indices and the protocol."""
    import torch

    from robustlab.attacks.autoattack import AutoAttack
    from robustlab.attacks.base import attack_mode, predict
    from robustlab.attacks.spec import build_attack
    from robustlab.checkpoint import save_tensors
    from robustlab.data import load_dataset
    from robustlab.presets import parse_overrides
    from robustlab.threat import ThreatModel
    from robustlab.training.config import AttackConfig, parse_config
    from robustlab.training.trainer import load_trained_model
    from robustlab.utils.device import model_device
    from robustlab.utils.rng import derive_seed

    model, meta = load_trained_model(run, which, device)
    data = load_dataset(meta["dataset"], split)
    k = min(n, len(data))
    dev = model_device(model)
    x, y = data.float_images(range(k)).to(dev), data.labels[:k].to(dev)
    torch.manual_seed(derive_seed(seed, "attack"))
    if name.startswith("autoattack-"):
        threat = ThreatModel(norm, eps)
        x_adv = AutoAttack(model, threat, version=name.split("-", 1)[1], seed=seed).run(x, y).x_adv
        protocol: dict[str, Any] = {"name": name, "norm": threat.norm, "eps": threat.eps, "seed": seed}
    else:
        settings = parse_overrides(set_ or []).get("attack", {})
        cfg = parse_config({"name": name, "norm": norm, "eps": eps, **settings}, AttackConfig, "attack")
        x_adv = torch.cat([build_attack(cfg, model)(x[i : i + 256], y[i : i + 256]) for i in range(0, k, 256)])
        protocol = {**cfg.model_dump(exclude_none=True), "seed": seed}
    with attack_mode(model):
        pred = predict(model, x_adv).argmax(dim=1)
    x_adv, y, pred = x_adv.cpu(), y.cpu(), pred.cpu()
    tensors = {"x_adv": x_adv.contiguous(), "labels": y.contiguous(), "predictions": pred.contiguous(),
               "indices": torch.arange(k)}
    meta_out = {"protocol": json.dumps(protocol), "dataset": meta["dataset"], "split": split,
                "model": meta.get("model", ""), "checkpoint": str(run)}
    save_tensors(out, tensors, meta_out)
    console.print(f"{k} adversarial examples ({protocol['name']}, {norm} eps={eps}) -> {out}; "
                  f"accuracy on them {100 * float((pred == y).float().mean()):.2f}%")


@app.command()
def reproduce(
    preset: Annotated[str, typer.Argument(help="Preset name (see `robustlab presets`) or a YAML file.")],
    scale: Annotated[str, typer.Option(help="quick (CPU minutes), reduced (quick on 10k images for 3 epochs in "
                                            "fp32: the CPU budget of docs/results.md) or paper (published budget).")]
    = "quick",
    device: DeviceOpt = "auto",
    runs_dir: RunsDir = Path("runs"),
    set_: SetOpt = None,  # type: ignore[assignment]
    variant: VariantOpt = None,
    reevaluate: Annotated[bool, typer.Option(help="Evaluate again even if a matching evaluation exists.")] = False,
    latent_plot: Annotated[bool, typer.Option(
        help="Also plot latent PCA for a model with encode() (always done for adr and ascl).")] = False,
    latent_n: Annotated[int, typer.Option(min=1, help="Test points in the latent plot.")] = 1000,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    store: StoreOpt = None,
) -> None:
    """Train a preset (resuming), evaluate it with its protocol, write reproduce.json/.md: measured vs published."""
    from robustlab.presets import load_preset
    from robustlab.reproduce import published_caveat, reproduce_run

    p = load_preset(preset, scale, _overrides(set_, None), variant=variant)
    caveat = published_caveat(load_preset(preset, scale, None, variant=variant).train, p.train) if set_ else None
    if caveat:
        console.print(f"[yellow]warning:[/yellow] {caveat}")
    p.train = p.train.model_copy(update={"device": device})
    run_dir = runs_dir / p.train.name
    report = reproduce_run(
        p, run_dir, evaluate=lambda: _evaluate_run(run_dir, p.eval, "best", progress, p.published, device,
                                                  _store_for(store, runs_dir)),
        device=device, progress=progress, reevaluate=reevaluate, latent_plot=latent_plot, latent_n=latent_n,
        log=console.print, caveat=caveat)
    console.print(_comparison_table(report))
    console.print(f"report written to {run_dir / 'reproduce.json'} and {run_dir / 'reproduce.md'}")


def _analysis_inputs(run: Path, n: int, which: str, device: str) -> tuple[Any, dict[str, Any], Any, Any]:
    """(model, checkpoint metadata, x, y) of the first ``n`` test points, for the ensemble analyses."""
    from robustlab.data import load_dataset
    from robustlab.training.trainer import load_trained_model
    from robustlab.utils.device import model_device

    model, meta = load_trained_model(run, which, device)
    data = load_dataset(meta["dataset"], "test")
    k = min(n, len(data))
    dev = model_device(model)
    return model.eval(), meta, data.float_images(range(k)).to(dev), data.labels[:k].to(dev)


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}") from exc


@app.command()
def detect(
    run: Annotated[Path, typer.Argument(help="Run folder or checkpoint of a model (an ensemble for 'members').")],
    eps: Annotated[str, typer.Option(help="Comma-separated radii, e.g. 0.1,0.2,0.3.")] = "0.3",
    norm: Annotated[str, typer.Option(help="linf, l2 or l1.")] = "linf",
    attacks: Annotated[str, typer.Option(help="Comma-separated registered attacks (e.g. pgd,mim,fgsm).")] = "pgd,mim",
    steps: Annotated[int, typer.Option(min=1, help="Iterations of the iterative attacks.")] = 40,
    step_size: Annotated[float | None, typer.Option(help="Step size (default eps / 10 per eps: set it to fix).")]
    = None,
    source: Annotated[str, typer.Option(help="ensemble (entropy of the ensemble prediction) or members.")]
    = "ensemble",
    n: Annotated[int, typer.Option(min=1, help="First N test points.")] = 1000,
    which: Annotated[str, typer.Option(help="best or last checkpoint of a run folder.")] = "best",
    device: DeviceOpt = "auto",
) -> None:
    """Entropy detector (CCE-DM): ROC and AUC per attack and eps; JSON and ROC plot in RUN/analysis/."""
    from robustlab.analysis.detection import DetectionResult, detection_experiment, plot_roc, save_detection
    from robustlab.models.ensemble import is_ensemble
    from robustlab.runs import run_folder_of

    model, _, x, y = _analysis_inputs(run, n, which, device)
    eps_values = _float_list(eps)
    out = run_folder_of(run) / "analysis"
    whose = f"{source} prediction" if is_ensemble(model) else "the model's prediction"
    table = Table(title=f"entropy detection ({whose}), AUC %, n={len(x)}")
    for col in ("attack", "eps", "clean kept", "adversarial", "AUC"):
        table.add_column(col, justify="right")
    table.add_column("note")
    rows = []
    for e in eps_values:  # one experiment per eps so the default step size follows eps
        specs = {a: {"name": a, **({} if a == "fgsm" else {"steps": steps, "step_size": step_size or e / 10})}
                 for a in (v.strip() for v in attacks.split(",") if v.strip())}
        rows += detection_experiment(model, x, y, specs, [e], norm=norm, source=source).rows  # type: ignore[arg-type]
    result = DetectionResult(source=source, only_successful=True, n=len(x), rows=rows)
    for r in rows:
        auc = "n/a" if r["roc"] is None else f"{100 * r['auc']:.1f}"
        table.add_row(r["attack"], f"{r['eps']:g}", str(r["n_clean"]), str(r["n_adversarial"]), auc, r.get("note", ""))
    console.print(table)
    save_detection(result, out / "detection.json")
    plot_roc(result, out / "detection_roc.png", title=f"entropy detector ({whose})")
    console.print(f"written {out / 'detection.json'} and {out / 'detection_roc.png'}")


@app.command()
def transfer(
    run: Annotated[Path, typer.Argument(help="Run folder or checkpoint of an ensemble.")],
    eps: Annotated[float, typer.Option(help="Radius of the threat model.")] = 0.3,
    norm: Annotated[str, typer.Option(help="linf, l2 or l1.")] = "linf",
    steps: Annotated[int, typer.Option(min=1, help="PGD iterations.")] = 20,
    step_size: Annotated[float | None, typer.Option(help="PGD step size (default eps / 10).")] = None,
    n: Annotated[int, typer.Option(min=1, help="First N test points.")] = 1000,
    which: Annotated[str, typer.Option(help="best or last checkpoint of a run folder.")] = "best",
    device: DeviceOpt = "auto",
) -> None:
    """Transferability inside an ensemble: the a^(i,j) matrix, T, nT, a_single and the S subsets (CCE A7)."""
    from robustlab.analysis.transferability import print_transferability, save_transferability, transferability
    from robustlab.attacks import create_attack
    from robustlab.runs import run_folder_of
    from robustlab.threat import ThreatModel

    model, _, x, y = _analysis_inputs(run, n, which, device)
    threat = ThreatModel(norm, eps)
    label = f"(PGD-{steps} {norm} eps={eps:g})"
    result = transferability(model, x, y, lambda m: create_attack("pgd", m, threat, steps=steps,
                                                                   step_size=step_size or eps / 10), label=label)
    print_transferability(result, console)
    path = save_transferability(result, run_folder_of(run) / "analysis" / "transferability.json")
    console.print(f"written {path}")


@app.command()
def atop(
    preset: Annotated[str, typer.Argument(help="AToP preset: atop-mnist, atop-fashion-mnist or atop-cifar10.")],
    classifier: Annotated[Path, typer.Option(help="Run folder of the trained classifier to defend.")],
    scale: Annotated[str, typer.Option(help="quick (CPU minutes) or paper (published budget).")] = "quick",
    transform: Annotated[str | None, typer.Option(help="Random transform: rt1, rt2 or rt3 (default: the preset's).")]
    = None,
    runs_dir: RunsDir = Path("runs"),
    set_: SetOpt = None,  # type: ignore[assignment]
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """AToP: pre-train and fine-tune the purifier in front of CLASSIFIER (resuming), then evaluate the defence with
    the pre-trained and the fine-tuned purifier under the preset's protocols (A: EoT end to end, B: BPDA, ...)."""
    from robustlab.presets import deep_merge, parse_overrides
    from robustlab.purification.atop.config import load_atop_preset
    from robustlab.purification.atop.run import run_atop

    overrides = parse_overrides(set_ or [])
    if transform is not None:
        overrides = deep_merge(overrides, {"atop": {"transform": {"name": transform}}})
    p = load_atop_preset(preset, scale, overrides)
    # the run folder is named after preset, transform and scale unless --set atop.name=... chose a name
    name = p.atop.name if "name" in overrides.get("atop", {}) else f"{preset}-{p.atop.transform.name}-{scale}"
    summary = run_atop(p.model_copy(update={"atop": p.atop.model_copy(update={"name": name})}), classifier,
                       runs_dir / name, show_progress=progress)
    table = Table(title=f"{name}: accuracy (%) on {p.eval.n} test points")
    for col in ("purifier", "protocol", "clean", "worst case", "per attack"):
        table.add_column(col)
    for phase, protocols in summary.items():
        for proto, r in protocols.items():
            per = ", ".join(f"{k} {100 * v:.1f}" for k, v in r["robust"].items())
            table.add_row(phase, proto, f"{100 * r['clean']:.1f}", f"{100 * r['worst_case']:.1f}", per)
    console.print(table)
    console.print(f"results in {runs_dir / name / 'eval'} and {runs_dir / name / 'atop_summary.json'}")


def _comparison_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"{report['preset']} ({report['scale']}): measured vs published (accuracy, %)")
    for col, justify in (("metric", "left"), ("measured", "right"), ("published", "right"), ("note", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in report["rows"]:
        measured = "[dim]not measured[/dim]" if row["measured"] is None else f"{row['measured']:.2f}"
        pub = "" if row["published"] is None else f"[cyan]{row['published']}[/cyan] (published)"
        table.add_row(row["metric"], measured, pub, row["note"])
    wt, mach = report["wall_times"], report["machine"]
    times = ", ".join(f"{k} {v:.0f}s" for k, v in wt.items() if k.endswith("_s") and isinstance(v, (int, float)))
    table.caption = (f"published: {report['published'].get('source', 'no source given')}\n"
                     f"{mach['device_name']}, torch {mach['torch']}, {mach['threads']} threads; {times}")
    return table


@app.command()
def leaderboard(
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    method: Annotated[str | None, typer.Option(help="Only this training method (objective name).")] = None,
    protocol: Annotated[str | None, typer.Option(
        help="Only protocols with this attack or family, e.g. autoattack-standard, pgd.")] = None,
    scale: Annotated[str | None, typer.Option(help="Only this preset scale (quick, reduced or paper).")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Also write the rows as CSV here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the rows as JSON here.")] = None,
    limit: Annotated[int, typer.Option(min=0, help="Show the top N of each table (0: all; exports hold all).")]
    = 20,
    scan: Annotated[Path | None, typer.Option(
        help="First record every eval/*.json of the run folders under this folder.")] = None,
    store: StoreOpt = None,
) -> None:
    """Stored evaluations per dataset and threat model, sorted by worst-case robust accuracy."""
    from robustlab.report import find_runs
    from robustlab.store import ResultsStore
    from robustlab.store.leaderboard import leaderboard_rows, render_tables, write_export

    with ResultsStore(store) as db:
        if scan is not None:
            added = sum(db.import_run(run) for run in find_runs(scan))
            console.print(f"recorded {added} new evaluation(s) from {scan}")
        rows = leaderboard_rows(db, dataset=dataset, method=method, protocol=protocol, scale=scale)
        where = db.path
    if not rows:
        console.print(f"no evaluations in {where}; `robustlab evaluate RUN` records them (or use --scan runs)")
    for table in render_tables(rows, limit or None):
        console.print(table)
    for path, fmt in ((csv_out, "csv"), (json_out, "json")):
        if path is not None:
            console.print(f"{len(rows)} rows written to {write_export(rows, path, fmt)}")


@app.command()
def report(
    run: Annotated[Path | None, typer.Argument(help="Run folder (or use --all).")] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Every run folder under --runs-dir, plus an index.")]
    = False,
    out: Annotated[Path | None, typer.Option(help="Output file for one run (default RUN/report.html).")] = None,
    runs_dir: RunsDir = Path("runs"),
    grid_n: Annotated[int, typer.Option(min=1, help="Test points in the adversarial example grid.")] = 8,
    grid_steps: Annotated[int, typer.Option(min=1, help="PGD steps for the adversarial example grid.")] = 20,
    device: DeviceOpt = "cpu",
    store: StoreOpt = None,
) -> None:
    """Self-contained HTML report of a run: config, curves, evaluations from the store, examples, sanity flags."""
    from robustlab.report import write_all_reports, write_run_report
    from robustlab.store import ResultsStore

    if (run is None) == (not all_runs):
        raise RobustlabError("pass either a run folder or --all (not both)")
    kwargs = {"grid_n": grid_n, "grid_steps": grid_steps, "device": device}
    with ResultsStore(store if run is not None else _store_for(store, runs_dir)) as db:
        if run is not None:
            console.print(f"report written to {write_run_report(run, db, out, **kwargs)}")
            return
        written, index = write_all_reports(runs_dir, db, **kwargs)
    console.print(f"{len(written)} report(s) written; index at {index}")


@app.command()
def data(
    name: Annotated[str | None, typer.Argument(help="Load this dataset once (from --root or --download) and cache "
                                                    "it, so later commands find it offline.")] = None,
    root: Annotated[Path | None, typer.Option(help="A folder holding the dataset (CIFAR-10: cifar-10-batches-py/).")]
    = None,
    download: Annotated[bool, typer.Option(help="Download (checksummed) when no offline source has it.")] = False,
) -> None:
    """Show which datasets are available and from which source (and how to get the missing ones); with NAME, fetch
    that dataset into the local cache."""
    from robustlab.data import describe_sources, load_dataset

    if name is not None:
        for split in ("train", "test"):
            loaded = load_dataset(name, split, root=root, download=download)
            console.print(f"{loaded.info.name} {split}: {len(loaded)} images from {loaded.source}")
    table = Table(title="datasets")
    for col in ("dataset", "available", "source / how to get it"):
        table.add_column(col)
    for row in describe_sources():
        table.add_row(row["name"], "yes" if row["available"] else "[red]no[/red]",
                      row["source"] if row["available"] else row["hint"])
    console.print(table)


@app.command()
def presets() -> None:
    """List the bundled presets."""
    from robustlab.presets import list_presets, load_preset

    table = Table(title="presets")
    table.add_column("name")
    table.add_column("description")
    for name in list_presets():
        table.add_row(name, load_preset(name, "quick").description)
    console.print(table)


@app.command()
def demo(
    runs_dir: RunsDir = Path("runs"),
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """The main job: train a robust MNIST SmallCNN in minutes, evaluate it honestly, print the table."""
    from robustlab.presets import load_preset
    from robustlab.runs import write_preset_file
    from robustlab.training.trainer import Trainer

    t0 = time.perf_counter()
    p = load_preset("demo", "quick")
    run_dir = runs_dir / p.train.name
    trainer = Trainer(p.train, run_dir, show_progress=progress)
    write_preset_file(run_dir, p)
    trainer.fit()
    t_train = time.perf_counter() - t0
    result, _ = _evaluate_run(run_dir, p.eval, "best", progress, store=_store_for(None, runs_dir))
    total = time.perf_counter() - t0
    pgd_acc = next(iter(result.robust_accuracy.values()))
    checks = {
        "clean >= 95%": result.clean_accuracy >= 0.95,
        "PGD-50x3 robust >= 70%": pgd_acc >= 0.70,
        "worst case (+ APGD-DLR) within 5 points of PGD-50x3": pgd_acc - result.worst_case_accuracy <= 0.05,
        "eps=0.5 accuracy < 10% (no masking)": bool(result.sanity.get("large_eps_collapsed")),
    }
    for label, ok in checks.items():
        console.print(f"  {'[green]PASS[/green]' if ok else '[red]FAIL[/red]'}  {label}")
    console.print(f"train {t_train:.0f}s, total {total:.0f}s; run folder {run_dir}")
    (run_dir / "demo.json").write_text(json.dumps({"checks": checks, "train_seconds": t_train, "total_seconds": total}))


if __name__ == "__main__":
    main()
