"""The ``robustlab`` command line: parse, call the library, print. No logic lives here."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from robustlab.core.errors import RobustlabError

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
    from robustlab.core.dicts import deep_merge
    from robustlab.presets import parse_overrides

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
    extra = getattr(result, "classifier_only", None) or {}
    for key, acc in (extra.get("accuracy") or {}).items():
        table.add_row(f"[yellow]not robustness:[/yellow] {key}", f"{100 * acc:.2f}%")
    for key in ("large_eps_accuracy",):
        if key in result.sanity:
            ok = "ok" if result.sanity["large_eps_collapsed"] else "[red]FAILED: does not collapse[/red]"
            check = (result.sanity.get("large_eps_attack")
                     or f"{result.protocol[0]['name']} at eps={result.sanity['large_eps']}")
            table.add_row(f"sanity: {check}",
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
    table.caption = f"{result.n} points of {result.dataset} ({result.split}); threat {result.threat}"
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
    from robustlab.app.evaluate import evaluate_run, store_for
    from robustlab.app.train import train_preset

    p, run_dir, summary = train_preset(preset, scale, overrides=_overrides(set_, epochs), variant=variant, name=name,
                                       runs_dir=runs_dir, fresh=fresh, show_progress=progress)
    console.print(f"trained [bold]{p.name}[/bold] ({scale}) in {summary.seconds:.0f}s -> {run_dir}")
    if evaluate_after:
        _print_outcome(evaluate_run(run_dir, p.eval, published=p.published, store=store_for(store, runs_dir),
                                    show_progress=progress), f"{run_dir} (best)", p.published)


def _print_outcome(outcome: Any, title: str, published: dict[str, Any] | None = None) -> None:
    """The result table, where the result went, and any notes (a store that could not be used, say); under
    torchrun only the main process prints."""
    if not outcome.main:
        return
    console.print(_result_table(title, outcome.result, published))
    console.print(f"result written to {outcome.path}")
    if outcome.store_id is not None:
        console.print(f"recorded in the results store {outcome.store_path} (id {outcome.store_id})")
    if outcome.sweep_plot is not None:
        console.print(f"robust accuracy vs eps plotted to {outcome.sweep_plot}")
    for note in outcome.notes:
        err_console.print(f"[yellow]warning:[/yellow] {note}")


ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="A model that is not a robustlab run: path/to/file.py:NAME or package.module:NAME (a class or a "
    "function returning an nn.Module).")]
WeightsOpt = Annotated[Path | None, typer.Option(
    help="Weights of --model: .safetensors, or a PyTorch state dict (.pt/.pth, read with weights_only=True).")]
DataOpt = Annotated[str | None, typer.Option(
    help="Data for --model: a dataset name (its test split), an .npz (x, y), a .csv table or an image folder.")]
ModelArgOpt = Annotated[list[str], typer.Option("--model-arg", help="Keyword argument of --model, k=v (repeatable).")]
MeanOpt = Annotated[str | None, typer.Option(help="Per-channel mean the model expects its inputs normalised with "
                                                  "(comma-separated; needs --std).")]
StdOpt = Annotated[str | None, typer.Option(help="Per-channel std, with --mean.")]
LabelColumnOpt = Annotated[str, typer.Option(help="Label column of a .csv table.")]


def _radius(text: str | float) -> float:
    """A radius given as a number or a fraction (``8/255``)."""
    num, _, den = str(text).partition("/")
    try:
        return float(num) / (float(den) if den else 1.0)
    except (ValueError, ZeroDivisionError):
        raise typer.BadParameter(f"expected a number or a fraction such as 8/255, got {text!r}") from None


def _model_args(pairs: list[str] | None) -> dict[str, Any]:
    """``["width=16", "act=relu"]`` -> keyword arguments, values read as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--model-arg takes KEY=VALUE, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


@app.command()
def evaluate(
    run: Annotated[Path | None, typer.Argument(help="Run folder or checkpoint file (or use --model).")] = None,
    which: Annotated[str, typer.Option(help="best or last checkpoint of a run folder.")] = "best",
    protocol: Annotated[str, typer.Option(
        help="preset (the run's; autoattack-standard for --model), pgd (PGD-50x3), autoattack-standard|plus|rand, or "
        "autoattack-custom with --set eval.autoattack.attacks=[apgd-ce,square], or classifier-only (CARSO: the "
        "preset's (or default) protocol plus the paper's AutoAttack on the classifier alone, judged on CARSO, "
        "reported apart and never in the worst case).")] = "preset",
    preset: Annotated[str | None, typer.Option(help="Take the protocol from this preset instead of the run's.")] = None,
    scale: Annotated[str, typer.Option(help="Scale of --preset.")] = "quick",
    n: Annotated[int | None, typer.Option(min=1, help="Number of test points (default: the protocol's).")] = None,
    eps: Annotated[float | None, typer.Option(parser=_radius, help="Evaluate at this eps instead "
                                              "(all attacks and the large-eps "
                                                   "check); required with --model.")] = None,
    norm: Annotated[str | None, typer.Option(help="linf, l2 or l1: with --eps, for a model or run that names no "
                                                  "threat model.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the result JSON here (default RUN/eval/, or a new folder "
                                                  "under ./evals/ for --model).")] = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    data: DataOpt = None,
    model_arg: ModelArgOpt = None,  # type: ignore[assignment]
    mean: MeanOpt = None,
    std: StdOpt = None,
    label_column: LabelColumnOpt = "label",
    set_: SetOpt = None,  # type: ignore[assignment]
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    device: DeviceOpt = "auto",
    store: StoreOpt = None,
) -> None:
    """Clean and robust accuracy of a trained run, or of your own model (--model/--weights/--data), on a test set;
    the result JSON goes to RUN/eval/ (or ./evals/) and the results store."""
    from robustlab.app.evaluate import evaluate_run, evaluate_user_model, resolve_protocol
    from robustlab.presets import load_preset

    overrides = _overrides(set_, None, n)
    stray = sorted(set(overrides) - {"eval"})
    if stray:
        raise RobustlabError(f"evaluate takes --set eval.KEY=VALUE only, got {', '.join(stray)}")
    if model is not None:
        from robustlab.core.dicts import deep_merge
        from robustlab.evaluation.defaults import protocol_for_model

        if run is not None or data is None or eps is None:
            raise RobustlabError("with --model, pass --data and --eps (and --norm; default linf), and no RUN")
        name = "autoattack-standard" if protocol == "preset" else protocol
        proto = deep_merge(protocol_for_model(name, f"{norm or 'linf'}:{eps}"), overrides.get("eval", {}))
        outcome = evaluate_user_model(
            model, data, weights=weights, args=_model_args(model_arg), mean=mean, std=std, protocol=proto,
            device=device, out=out, store=store, label_column=label_column, show_progress=progress)
        _print_outcome(outcome, f"{model} on {data}")
        return
    if run is None:
        raise RobustlabError("pass a run folder or checkpoint, or --model FILE.py:NAME with --weights and --data")
    preset_eval = None if preset is None else load_preset(preset, scale).eval.model_dump(mode="json",
                                                                                          exclude_none=True)
    cfg, published = resolve_protocol(run, which=which, protocol=protocol, preset_eval=preset_eval, eps=eps, norm=norm,
                                      overrides=overrides.get("eval", {}))
    outcome = evaluate_run(run, cfg, which=which, published=published, device=device, store=store, out=out,
                           show_progress=progress, data=data)
    _print_outcome(outcome, f"{run} ({outcome.result.model.get('which', which)})", published)


@app.command("convert-weights")
def convert_weights(
    src: Annotated[Path, typer.Argument(help="A PyTorch state dict (.pt/.pth), read with weights_only=True.")],
    dst: Annotated[Path, typer.Argument(help="The .safetensors file to write.")],
) -> None:
    """Convert a PyTorch state dict to safetensors (weights that load without running any code)."""
    from robustlab.runs.user_model import convert_weights as convert

    console.print(f"written {convert(src, dst)}")


@app.command()
def attack(
    run: Annotated[Path | None, typer.Argument(help="Run folder or checkpoint file (or use --model).")] = None,
    out: Annotated[Path, typer.Option(help="Where to write the adversarial examples (.safetensors).")] = Path(
        "adversarial.safetensors"),
    name: Annotated[str, typer.Option("--attack", help="A registered attack (see list below) or autoattack-VERSION.")]
    = "pgd",
    eps: Annotated[float, typer.Option(parser=_radius, help="Radius of the threat model (a number or "
                                                                        "a fraction such as 8/255).")] = 0.3,
    norm: Annotated[str, typer.Option(help="linf, l2 or l1.")] = "linf",
    n: Annotated[int, typer.Option(min=1, help="Attack the first N points of the split.")] = 100,
    split: Annotated[str, typer.Option(help="test or val.")] = "test",
    which: Annotated[str, typer.Option(help="best or last checkpoint of a run folder.")] = "best",
    set_: SetOpt = None,  # type: ignore[assignment]
    seed: Annotated[int, typer.Option(help="Seed for the attack's randomness.")] = 0,
    device: DeviceOpt = "auto",
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    data: DataOpt = None,
    model_arg: ModelArgOpt = None,  # type: ignore[assignment]
    mean: MeanOpt = None,
    std: StdOpt = None,
    label_column: LabelColumnOpt = "label",
) -> None:
    """Craft adversarial examples and save them (float32 NCHW in [0,1]) with labels, indices and the protocol."""
    from robustlab.app.attack import attack_run
    from robustlab.presets import parse_overrides

    settings = parse_overrides(set_ or []).get("attack", {})
    crafted = attack_run(run, out, attack=name, norm=norm, eps=eps, n=n, split=split, which=which, settings=settings,
                         seed=seed, device=device, model=model, weights=weights, data=data,
                         model_args=_model_args(model_arg), mean=mean, std=std, label_column=label_column)
    console.print(f"{crafted.n} adversarial examples ({crafted.protocol['name']}, {norm} eps={eps}) -> {crafted.path}; "
                  f"accuracy on them {100 * crafted.accuracy:.2f}%")


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
    from robustlab.app.evaluate import evaluate_run, store_for
    from robustlab.app.reproduce import published_caveat, reproduce_run
    from robustlab.presets import load_preset

    p = load_preset(preset, scale, _overrides(set_, None), variant=variant)
    caveat = published_caveat(load_preset(preset, scale, None, variant=variant).train, p.train) if set_ else None
    if caveat:
        console.print(f"[yellow]warning:[/yellow] {caveat}")
    p.train = p.train.model_copy(update={"device": device})
    run_dir = runs_dir / p.train.name
    report = reproduce_run(
        p, run_dir, evaluate=lambda: _evaluated(evaluate_run(run_dir, p.eval, published=p.published, device=device,
                                                             store=store_for(store, runs_dir), show_progress=progress),
                                                f"{run_dir} (best)", p.published),
        device=device, progress=progress, reevaluate=reevaluate, latent_plot=latent_plot, latent_n=latent_n,
        log=console.print, caveat=caveat)
    console.print(_comparison_table(report))
    console.print(f"report written to {run_dir / 'reproduce.json'} and {run_dir / 'reproduce.md'}")


def _evaluated(outcome: Any, title: str, published: dict[str, Any]) -> tuple[Any, Path]:
    """Print an evaluation and hand (result, path) back to the reproduce job."""
    _print_outcome(outcome, title, published)
    return outcome.result, outcome.path


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}") from exc


@app.command()
def detect(
    run: Annotated[Path, typer.Argument(help="Run folder or checkpoint of a model (an ensemble for 'members').")],
    eps: Annotated[str | None, typer.Option(help="Comma-separated radii, e.g. 0.1,0.2,0.3 (default: the run's "
                                                 "training eps; 8/255 on CIFAR-10).")] = None,
    norm: Annotated[str, typer.Option(help="linf, l2 or l1.")] = "linf",
    attacks: Annotated[str | None, typer.Option(help="Comma-separated registered attacks (default: pgd,mim; "
                                                     "pgd,bim,mim on CIFAR-10 as the thesis).")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Iterations (default 40; 20 on CIFAR-10).")] = None,
    step_size: Annotated[float | None, typer.Option(help="Step size (default eps / 10; 1/255 on CIFAR-10).")]
    = None,
    source: Annotated[str, typer.Option(help="ensemble (entropy of the ensemble prediction) or members.")]
    = "ensemble",
    n: Annotated[int, typer.Option(min=1, help="First N test points.")] = 1000,
    which: Annotated[str, typer.Option(help="best or last checkpoint of a run folder.")] = "best",
    device: DeviceOpt = "auto",
) -> None:
    """Entropy detector (CCE-DM): ROC and AUC per attack and eps; JSON and ROC plot in RUN/analysis/."""
    from robustlab.app.analysis import run_detection

    names = None if attacks is None else [a.strip() for a in attacks.split(",") if a.strip()]
    outcome = run_detection(run, eps=None if eps is None else _float_list(eps), attacks=names, steps=steps,
                            step_size=step_size, norm=norm, source=source, n=n, which=which, device=device)
    table = Table(title=f"entropy detection ({outcome.whose}), AUC %, n={outcome.result.n}")
    for col in ("attack", "eps", "clean kept", "adversarial", "AUC"):
        table.add_column(col, justify="right")
    table.add_column("note")
    for r in outcome.result.rows:
        auc = "n/a" if r["roc"] is None else f"{100 * r['auc']:.1f}"
        table.add_row(r["attack"], f"{r['eps']:.4g}", str(r["n_clean"]), str(r["n_adversarial"]), auc,
                      r.get("note", ""))
    console.print(table)
    console.print(f"written {outcome.json_path} and {outcome.plot_path}")


@app.command()
def transfer(
    run: Annotated[Path, typer.Argument(help="Run folder or checkpoint of an ensemble.")],
    eps: Annotated[float | None, typer.Option(help="Radius (default: the run's training eps; 8/255 on CIFAR-10).")]
    = None,
    norm: Annotated[str, typer.Option(help="linf, l2 or l1.")] = "linf",
    steps: Annotated[int | None, typer.Option(min=1, help="PGD iterations (default 20).")] = None,
    step_size: Annotated[float | None, typer.Option(help="PGD step size (default eps / 10; 2/255 on CIFAR-10).")]
    = None,
    n: Annotated[int, typer.Option(min=1, help="First N test points.")] = 1000,
    which: Annotated[str, typer.Option(help="best or last checkpoint of a run folder.")] = "best",
    device: DeviceOpt = "auto",
) -> None:
    """Transferability inside an ensemble: the a^(i,j) matrix, T, nT, a_single and the S subsets (CCE A7)."""
    from robustlab.analysis.transferability import print_transferability
    from robustlab.app.analysis import run_transfer

    result, path = run_transfer(run, eps=eps, steps=steps, step_size=step_size, norm=norm, n=n, which=which,
                                device=device)
    print_transferability(result, console)
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
    from robustlab.app.atop import run_atop_preset
    from robustlab.presets import parse_overrides

    p, run_dir, summary = run_atop_preset(preset, classifier, scale=scale, transform=transform,
                                          overrides=parse_overrides(set_ or []), runs_dir=runs_dir,
                                          show_progress=progress)
    name = run_dir.name
    table = Table(title=f"{name}: accuracy (%) on {p.eval.n} test points")
    for col in ("purifier", "protocol", "clean", "worst case", "per attack"):
        table.add_column(col)
    for phase, protocols in summary.items():
        for proto, r in protocols.items():
            per = ", ".join(f"{k} {100 * v:.1f}" for k, v in r["robust"].items())
            table.add_row(phase, proto, f"{100 * r['clean']:.1f}", f"{100 * r['worst_case']:.1f}", per)
    console.print(table)
    console.print(f"results in {run_dir / 'eval'} and {run_dir / 'atop_summary.json'}")


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
    versus = report.get("budget_vs_published") or {}
    warn = f"\n[yellow]{versus['note']}[/yellow]" if versus.get("comparable") is False else ""
    table.caption = (f"published: {report['published'].get('source', 'no source given')}\n"
                     f"{mach['device_name']}, torch {mach['torch']}, {mach['threads']} threads; {times}{warn}")
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
    from robustlab.app.evaluate import store_for
    from robustlab.report import write_all_reports, write_run_report
    from robustlab.store import ResultsStore

    if (run is None) == (not all_runs):
        raise RobustlabError("pass either a run folder or --all (not both)")
    kwargs = {"grid_n": grid_n, "grid_steps": grid_steps, "device": device}
    with ResultsStore(store if run is not None else store_for(store, runs_dir)) as db:
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
            unit = "rows" if len(loaded.info.shape) == 1 else "images"
            console.print(f"{loaded.info.name} {split}: {len(loaded)} {unit} from {loaded.source}")
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
    from robustlab.app.demo import run_demo

    outcome = run_demo(runs_dir, show_progress=progress)
    console.print(_result_table(f"{outcome.run_dir} (best)", outcome.result))
    for label, ok in outcome.checks.items():
        console.print(f"  {'[green]PASS[/green]' if ok else '[red]FAIL[/red]'}  {label}")
    console.print(f"train {outcome.train_seconds:.0f}s, total {outcome.total_seconds:.0f}s; run folder "
                  f"{outcome.run_dir}")


if __name__ == "__main__":
    main()
