"""``robustlab report``: one self-contained HTML page per run folder (config, training curves, evaluations from the
results store, robust accuracy vs eps, an adversarial example grid, sanity flags), and an index over all runs.

A run still training (or stopped early) and a run with no evaluation get a notice saying so; the page shows
whatever exists. The run's ``eval/*.json`` files are recorded in the store first (a no-op when already there), so
the page's numbers are the store's.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from robustlab.core.errors import InputError, RobustlabError
from robustlab.evaluation.labels import CLASSIFIER_ONLY
from robustlab.io.atomic import atomic_write_text, read_jsonl
from robustlab.report import html as H
from robustlab.store.db import ResultsStore

REPORT_NAME = "report.html"
TRANSFER_N = 64  # test points for an ensemble's transferability matrix


@dataclass
class RunState:
    """What a run folder holds right now."""

    run_dir: Path
    config_text: str = ""
    preset_text: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    preset: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    epochs_done: int | None = None
    epochs_total: int | None = None
    checkpoint: str | None = None

    @property
    def training_incomplete(self) -> bool:
        """True when fewer epochs are checkpointed than the config asks for (still training or stopped)."""
        return self.epochs_total is not None and (self.epochs_done or 0) < self.epochs_total


def is_run_folder(path: Path) -> bool:
    """A folder the trainer or ``evaluate`` wrote into (config.yaml, checkpoints/ or eval/)."""
    return path.is_dir() and any((path / p).exists() for p in ("config.yaml", "checkpoints", "eval"))


def read_run(run_dir: str | Path) -> RunState:
    """Read config, preset, metrics and checkpoint progress of ``run_dir``."""
    run_dir = Path(run_dir)
    if not is_run_folder(run_dir):
        raise InputError(f"{run_dir} is not a run folder (no config.yaml, checkpoints/ or eval/ in it); "
                         "pass a folder under runs/ or use --all")
    st = RunState(run_dir)
    for name, attr in (("config.yaml", "config"), ("preset.yaml", "preset")):
        if (run_dir / name).exists():
            text = (run_dir / name).read_text()
            setattr(st, f"{attr}_text", text)
            doc = yaml.safe_load(text)
            setattr(st, attr, doc if isinstance(doc, dict) else {})
    st.metrics = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "epoch" in r]
    if isinstance(st.config.get("epochs"), int):
        st.epochs_total = st.config["epochs"]
    last = run_dir / "checkpoints" / "last.json"
    if last.exists():
        st.epochs_done = int(json.loads(last.read_text()).get("epoch", 0))
    for which in ("best", "last"):
        if (run_dir / "checkpoints" / f"{which}.safetensors").exists():
            st.checkpoint = which
            break
    return st


def _plot_png(plot: Any, *args: Any, **kwargs: Any) -> bytes:
    """Run one of ``robustlab.analysis.plots``' functions into a temporary file and return the PNG bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = plot(*args, Path(tmp) / "plot.png", **kwargs)
        return Path(path).read_bytes()


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


# ------------------------------------------------------------------------------------------------ sections
def _status_section(st: RunState, evals: list[dict[str, Any]]) -> list[str]:
    out = []
    if st.training_incomplete:
        out.append(H.notice(f"Training is not finished: {st.epochs_done or 0} of {st.epochs_total} epochs are "
                            "checkpointed (the run is still training, or was stopped; `robustlab train` resumes it). "
                            "This page shows what exists so far."))
    if not evals:
        out.append(H.notice(f"No evaluation of this run is recorded: run `robustlab evaluate {st.run_dir}` "
                            "to measure clean and robust accuracy."))
    return out


def _config_section(st: RunState) -> list[str]:
    out = ["<h2>Configuration</h2>"]
    if not st.config_text and not st.preset_text:
        return [*out, H.notice("No config.yaml or preset.yaml in this run folder.")]
    if st.preset:
        out.append(f"<p>Preset <b>{H.esc(st.preset.get('preset', '?'))}</b>, scale "
                   f"<b>{H.esc(st.preset.get('scale', '?'))}</b>.</p>")
    if st.config_text:
        out += ["<h3>config.yaml</h3>", H.pre(st.config_text)]
    if st.preset_text:
        out += ["<h3>preset.yaml (evaluation protocol and published numbers)</h3>", H.pre(st.preset_text)]
    return out


def _curves_section(st: RunState) -> list[str]:
    from robustlab.analysis.plots import plot_training_curves

    out = ["<h2>Training curves</h2>"]
    if not st.metrics:
        return [*out, H.notice("metrics.jsonl has no epoch yet.")]
    png = _plot_png(plot_training_curves, st.metrics, title=st.run_dir.name)
    return [*out, H.png_img(png, "training curves"), f"<p>{len(st.metrics)} epochs from metrics.jsonl.</p>"]


def _evaluations_section(evals: list[dict[str, Any]], attacks: dict[int, list[tuple[str, float]]],
                         classifier_only: dict[int, dict[str, Any]] | None = None) -> list[str]:
    out = ["<h2>Evaluations</h2>"]
    if not evals:
        return [*out, H.notice("None recorded.")]
    rows, attrs = [], []
    for e in evals:
        paper = "" if e["paper_robust"] is None else f"{e['paper_robust']:.2f} (published" + (
            ", at the paper's budget, not this run's)" if e.get("scale") not in (None, "paper") else ")")
        sanity = "ok" if e["sanity_ok"] else f"{len(e['sanity_warnings'])} warning(s)"
        rows.append([
            H.cell(e["id"], num=True, col="id"),
            H.cell(f"{datetime.fromtimestamp(e['created_at']):%Y-%m-%d %H:%M:%S}"),
            H.cell(e["which"] or ""), H.cell(e["protocol"] or "?", col="protocol"),
            H.cell(f"{e['threat_norm']} eps={e['threat_eps']:.4g}"), H.cell(e["n"], num=True, col="n"),
            H.cell(_pct(e["clean_accuracy"]), num=True, col="clean_accuracy"),
            H.cell(_pct(e["worst_case_accuracy"]), num=True, col="worst_case_accuracy"),
            H.cell(paper, num=True, css="published", col="paper_robust"),
            H.cell(sanity, css="ok" if e["sanity_ok"] else "bad", col="sanity"),
        ])
        attrs.append(f'data-eval-id="{e["id"]}"')
    out.append(H.table(["id", "evaluated", "checkpoint", "protocol", "threat", "n", "clean %", "worst case %",
                        "paper % (published)", "sanity"], rows, table_id="evaluations", row_attrs=attrs))
    out.append("<p>Worst case: pointwise over every attack of the protocol. Paper: the preset's published "
               "counterpart, copied from the paper, not measured here.</p>")
    for e in evals:
        per = attacks.get(e["id"], [])
        body = [[H.cell(a), H.cell(_pct(acc), num=True, col="attack_accuracy")] for a, acc in per]
        out.append(f"<h3>Evaluation {e['id']}: accuracy after each attack (cumulative)</h3>")
        out.append(H.table(["attack", "robust accuracy %"], body, table_id=f"attacks-{e['id']}"))
        extra = (classifier_only or {}).get(e["id"])
        if extra:
            out.append(f"<h3>Evaluation {e['id']}: classifier-only protocol (not this model's robustness)</h3>")
            out.append(f"<p>{H.esc(extra.get('measures', ''))}.</p>")
            body = [[H.cell(a), H.cell(_pct(acc), num=True, col="classifier_only_accuracy")]
                    for a, acc in (extra.get("accuracy") or {}).items()]
            out.append(H.table(["protocol", "accuracy %"], body, table_id=f"classifier-only-{e['id']}"))
    return out


def _sweep_section(store: ResultsStore, evals: list[dict[str, Any]], st: RunState) -> list[str]:
    from robustlab.analysis.plots import plot_robust_accuracy_vs_eps

    out = ["<h2>Robust accuracy vs eps</h2>"]
    shown = 0
    for e in evals:
        result = store.get(e["id"])
        if not result.eps_sweep:
            continue
        pub = (st.preset.get("published") or {}).get("eps_sweep") if e["paper_robust"] is not None else None
        title = f"evaluation {e['id']}: {result.eps_sweep_attack and result.eps_sweep_attack.get('name') or ''}"
        try:
            png = _plot_png(plot_robust_accuracy_vs_eps, result.eps_sweep, published=pub or None, title=title)
        except InputError:  # a malformed published sweep must not cost the measured curve
            png = _plot_png(plot_robust_accuracy_vs_eps, result.eps_sweep, title=title)
        out.append(H.png_img(png, f"robust accuracy vs eps, evaluation {e['id']}"))
        shown += 1
    if not shown:
        out.append(H.notice("No evaluation of this run has an eps sweep (set eval.eps_sweep in the preset)."))
    return out


def _sanity_section(store: ResultsStore, evals: list[dict[str, Any]]) -> list[str]:
    out = ["<h2>Sanity checks</h2>"]
    if not evals:
        return [*out, H.notice("No evaluation, so no sanity checks.")]
    for e in evals:
        sanity = store.get(e["id"]).sanity
        out.append(f"<h3>Evaluation {e['id']}</h3>")
        for w in sanity.get("warnings", []):
            out.append(H.notice(w, "error"))
        rows = [[H.cell(k), H.cell(v, num=isinstance(v, (int, float)) and not isinstance(v, bool))]
                for k, v in sorted(sanity.items()) if k != "warnings"]
        out.append(H.table(["check", "value"], rows) if rows else H.notice("This evaluation ran no sanity check."))
    return out


@dataclass
class _Attacked:
    """The run's model, its first test points and the threat model the report's attacks use."""

    model: Any
    x: Any
    y: Any
    threat: Any
    checkpoint: str


def _load_attacked(st: RunState, evals: list[dict[str, Any]], n: int, device: str) -> _Attacked | str:
    """The model and ``n`` test points for the report's own attacks, or a notice saying why there are none."""
    from robustlab.core.threat import ThreatModel
    from robustlab.data import load_dataset
    from robustlab.runs.loading import load_trained_model
    from robustlab.utils.device import model_device

    if st.checkpoint is None:
        return "No checkpoint yet, so no adversarial examples."
    if evals:
        norm, eps = evals[-1]["threat_norm"], evals[-1]["threat_eps"]
    else:
        attack = (st.config.get("objective") or {}).get("attack") or {}
        norm, eps = attack.get("norm"), attack.get("eps")
    if norm is None or eps is None:
        return "No threat model known (no evaluation and no training attack)."
    try:
        model, meta = load_trained_model(st.run_dir, st.checkpoint, device)
        data = load_dataset(meta["dataset"], "test")
    except RobustlabError as exc:
        return f"Could not load the model or its test set: {exc}"
    k = min(n, len(data))
    dev = model_device(model)
    return _Attacked(model, data.float_images(range(k)).to(dev), data.labels[:k].to(dev), ThreatModel(norm, eps),
                     st.checkpoint)


def _grid_section(loaded: _Attacked | str, grid_n: int, steps: int) -> list[str]:
    from robustlab.report.adversarial import adversarial_grid_png, quick_pgd

    out = ["<h2>Adversarial examples</h2>"]
    if isinstance(loaded, str):
        return [*out, H.notice(loaded, "error" if loaded.startswith("Could not") else "notice")]
    x, y, threat = loaded.x[:grid_n], loaded.y[:grid_n], loaded.threat
    x_adv, pred, pred_adv = quick_pgd(loaded.model, x, y, threat, steps=steps)
    title = (f"{loaded.checkpoint} checkpoint, PGD-{steps} {threat.norm} eps={threat.eps:.4g}, "
             f"first {len(x)} test points")
    png = adversarial_grid_png(x.cpu(), x_adv.cpu(), y.cpu(), pred.cpu(), pred_adv.cpu(), title=title)
    return [*out, H.png_img(png, "adversarial examples"),
            f"<p>Rows: clean, adversarial (PGD-{steps}, {H.esc(threat.norm)} eps={threat.eps:.4g}), perturbation "
            "magnified ten times around grey. Red titles: the attack changed the prediction.</p>"]


def _transfer_section(loaded: _Attacked | str, steps: int) -> list[str]:
    """For an ensemble: the a^(i,j) transferability matrix of PGD examples among its members and the ensemble."""
    from robustlab.analysis.transferability import transferability
    from robustlab.attacks import PGD
    from robustlab.models.ensemble import is_ensemble

    if isinstance(loaded, str) or not is_ensemble(loaded.model):
        return []
    threat = loaded.threat
    res = transferability(loaded.model, loaded.x, loaded.y, lambda m: PGD(m, threat, steps=steps),
                          label=f"PGD-{steps} {threat.norm} eps={threat.eps:.4g}")
    rows = [[H.cell(f"from {src}"), *(H.cell(f"{v:.1f}%", num=True) for v in row)]
            for src, row in zip(res.names, res.accuracy)]
    subsets = ", ".join(f"S{k} {v:.1f}%" for k, v in res.subsets.items())
    return ["<h2>Transferability among the ensemble's members</h2>",
            H.table(["source \\ target", *res.names], rows, table_id="transferability"),
            f"<p>Accuracy of each target (columns) on adversarial examples crafted against each source (rows),"
            f" {H.esc(res.attack)}, first {res.n} test points. T = {res.T:.1f}, nT = {res.nT:.1f},"
            f" a_single = {res.a_single:.1f}; {H.esc(subsets)} (bit k = member k right on the ensemble's examples)."
            "</p>"]


# --------------------------------------------------------------------------------------------------- pages
def build_run_report(run_dir: str | Path, store: ResultsStore, *, grid_n: int = 8, grid_steps: int = 20,
                     device: str = "cpu") -> str:
    """The HTML of ``run_dir``'s report (records its eval JSONs in ``store`` first)."""
    st = read_run(run_dir)
    store.import_run(st.run_dir)
    evals = store.rows(run_dir=st.run_dir)
    attacks = store.attack_accuracies(e["id"] for e in evals)
    classifier_only = {e["id"]: store.get(e["id"]).classifier_only for e in evals
                       if CLASSIFIER_ONLY in (e["protocol"] or "")}
    loaded = _load_attacked(st, evals, max(grid_n, TRANSFER_N), device)
    body = [f"<h1>Run {H.esc(st.run_dir.name)}</h1>",
            f"<p>Folder <code>{H.esc(st.run_dir.resolve())}</code>; results store <code>{H.esc(store.path)}</code>; "
            f"page written {datetime.now():%Y-%m-%d %H:%M:%S}.</p>",
            *_status_section(st, evals), *_evaluations_section(evals, attacks, classifier_only), *_curves_section(st),
            *_sweep_section(store, evals, st), *_grid_section(loaded, grid_n, grid_steps),
            *_transfer_section(loaded, grid_steps),
            *_sanity_section(store, evals), *_config_section(st)]
    return H.page(f"robustlab report: {st.run_dir.name}", body)


def write_run_report(run_dir: str | Path, store: ResultsStore, out: str | Path | None = None, **kwargs: Any) -> Path:
    """Write ``build_run_report`` to ``out`` (default ``RUN/report.html``) atomically."""
    path = Path(out) if out is not None else Path(run_dir) / REPORT_NAME
    atomic_write_text(path, build_run_report(run_dir, store, **kwargs))
    return path


def find_runs(runs_dir: str | Path) -> list[Path]:
    """Run folders under ``runs_dir`` (any depth), sorted."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise InputError(f"runs folder {root} does not exist; pass --runs-dir")
    found = {p.parent for p in root.rglob("config.yaml")} | {p.parent for p in root.rglob("eval") if p.is_dir()}
    return sorted(p for p in found if is_run_folder(p))


def write_all_reports(runs_dir: str | Path, store: ResultsStore, **kwargs: Any) -> tuple[list[Path], Path]:
    """A report for every run folder under ``runs_dir`` and ``runs_dir/index.html`` linking to them."""
    runs_dir = Path(runs_dir)
    written = [write_run_report(run, store, **kwargs) for run in find_runs(runs_dir)]
    rows = []
    for path in written:
        run = path.parent
        evals = store.rows(run_dir=run)
        best = max((e["worst_case_accuracy"] for e in evals), default=None)
        rel = path.relative_to(runs_dir).as_posix()
        rows.append([f'<td><a href="{H.esc(rel)}">{H.esc(run.relative_to(runs_dir).as_posix())}</a></td>',
                     H.cell(len(evals), num=True), H.cell(_pct(best), num=True)])
    index = runs_dir / "index.html"
    atomic_write_text(index, H.page("robustlab runs", ["<h1>Runs</h1>", H.table(
        ["run", "evaluations", "best worst-case %"], rows, table_id="runs")]))
    return written, index
