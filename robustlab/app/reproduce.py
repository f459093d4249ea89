"""Reproduce a preset: train it (resuming), evaluate it with its protocol, and report measured next to published.

The report (``reproduce.json`` and ``reproduce.md`` in the run folder) has one row per metric; a measured value
comes only from the evaluation result, a published value only from the preset's ``published`` block, and a
metric with no measurement says so (``null`` / "not measured") rather than borrowing a number. Numbers are in
percent, as papers and presets write them.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from robustlab.attacks import list_attacks
from robustlab.attacks.config import AttackConfig
from robustlab.core.errors import RobustlabError
from robustlab.evaluation.config import EvalConfig
from robustlab.evaluation.labels import published_key
from robustlab.evaluation.named import first_attack_config, protocol_entries
from robustlab.evaluation.result import EvaluationResult
from robustlab.evaluation.sweep import eps_key
from robustlab.io.atomic import atomic_write_json, atomic_write_text, read_jsonl
from robustlab.runs.folder import is_run_folder, run_config, run_folder_of
from robustlab.training.config import TrainConfig
from robustlab.training.objectives import get_objective_class

# Published keys compared with a protocol attack of this registry name (``pgd`` is the first attack otherwise).
REPORT_JSON, REPORT_MD = "reproduce.json", "reproduce.md"


def _pct(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(100 * value, 2)


# ------------------------------------------------------------------------------------------------ run state
def training_complete(run_dir: Path, cfg: TrainConfig) -> bool:
    """True when ``run_dir``'s last checkpoint was written by this config (same hash, same resolved objective
    parameters) at ``cfg.epochs`` or later."""
    from robustlab.training.objectives import create_objective
    from robustlab.training.trainer import changed_objective_params, config_hash, resolved_objective_params

    last = run_dir / "checkpoints" / "last.json"
    if not (last.exists() and (run_dir / "checkpoints" / "best.safetensors").exists()):
        return False
    state = json.loads(last.read_text())
    if state.get("config_hash") != config_hash(cfg) or int(state.get("epoch", 0)) < cfg.epochs:
        return False
    return not changed_objective_params(state, resolved_objective_params(create_objective(cfg.objective)))


def expected_protocol(cfg: EvalConfig) -> list[dict[str, Any]]:
    """The ``protocol`` list an evaluation under ``cfg`` writes into its result (after a JSON round trip)."""
    return json.loads(json.dumps(protocol_entries(cfg)))


def result_matches(result: EvaluationResult, cfg: EvalConfig, split_size: int) -> bool:
    """Whether ``result`` was produced by protocol ``cfg`` (attacks, split, seed, n, sweep, large-eps check) on a
    split of ``split_size`` points."""
    if result.protocol != expected_protocol(cfg) or result.split != cfg.split or result.seed != cfg.seed:
        return False
    if result.n != (split_size if cfg.n is None else min(cfg.n, split_size)):
        return False
    if list(result.eps_sweep) != [eps_key(e) for e in cfg.eps_sweep]:
        return False
    if cfg.eps_sweep and result.eps_sweep_n != min(cfg.eps_sweep_n or result.n, result.n):
        return False
    return (cfg.large_eps is None) == ("large_eps" not in result.sanity)


def latest_matching_eval(run_dir: Path, cfg: EvalConfig) -> tuple[Path, EvaluationResult] | None:
    """The newest ``eval/best-*.json`` of ``run_dir`` made by protocol ``cfg`` after the best checkpoint was last
    written, or None (an older checkpoint, another protocol or ``evaluate --eps`` results are never re-used)."""
    from robustlab.data import load_dataset

    best = run_dir / "checkpoints" / "best.safetensors"
    if not best.exists():
        return None
    sizes: dict[str, int] = {}
    for path in sorted((run_dir / "eval").glob("best-*.json"), reverse=True):  # names sort by time
        try:
            result = EvaluationResult.load(path)
        except (ValueError, TypeError, OSError):
            continue
        if result.created_at < best.stat().st_mtime:
            continue
        if result.dataset not in sizes:
            sizes[result.dataset] = len(load_dataset(result.dataset, cfg.split))
        if result_matches(result, cfg, sizes[result.dataset]):
            return path, result
    return None


# ------------------------------------------------------------------------------------------------ comparison
def _published_number(value: Any) -> Any:
    return value if isinstance(value, (int, float, str)) or value is None else json.dumps(value)


def _published_sweep(published: dict[str, Any]) -> dict[float, Any]:
    raw = published.get("eps_sweep") or {}
    out: dict[float, Any] = {}
    if isinstance(raw, dict):
        for key, value in raw.items():
            try:
                out[float(key)] = value
            except (TypeError, ValueError):
                continue
    return out


def measured_summary(result: EvaluationResult, n_attacks: int) -> dict[str, Any]:
    """The measured numbers (percent) of ``result``: clean, each protocol attack, worst case, AutoAttack, sweep."""
    items = list(result.robust_accuracy.items())
    attacks, aa = items[:n_attacks], items[n_attacks:]
    aa_n = None
    if aa:
        aa_n = next((int(p["n"]) for p in result.protocol if str(p.get("name", "")).startswith("autoattack")
                     and "n" in p), None)
        aa_n = min(aa_n, result.n) if aa_n else result.n
    return {
        "clean": _pct(result.clean_accuracy), "n": result.n,
        "attacks": {label: _pct(acc) for label, acc in attacks},
        "worst_case": _pct(result.worst_case_accuracy), "worst_case_n": result.worst_case_n,
        "autoattack": _pct(aa[-1][1]) if aa else None, "autoattack_n": aa_n,
        "eps_sweep": {k: _pct(v) for k, v in result.eps_sweep.items()}, "eps_sweep_n": result.eps_sweep_n,
    }


def comparison_rows(result: EvaluationResult, cfg: EvalConfig, published: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{metric, measured, published, note}`` pairing each measured number with its published counterpart.

    ``bb``/``bim``/``mim``/``multi-target`` are compared with a protocol attack of that registry name (cumulative
    when it is not first, so at most its standalone accuracy), ``pgd`` with the first attack (run on every
    clean-correct point) unless the first attack's own key claimed it, ``autoattack`` with AutoAttack's final
    robust accuracy, ``eps_sweep`` entry by entry; any other published key is listed with no measured value.
    """
    pub = {k: v for k, v in published.items() if k != "source"}
    used: set[str] = set()
    m = measured_summary(result, len(cfg.attacks))

    def take(key: str) -> Any:
        if key in pub:
            used.add(key)
            return _published_number(pub[key])
        return None

    rows = [{"metric": "clean", "measured": m["clean"], "published": take("clean"), "note": f"{result.n} points"}]
    for i, (label, acc) in enumerate(m["attacks"].items()):
        key: str | None = published_key(cfg.attacks[i].name)
        if i == 0 and key not in pub:
            key = "pgd"
        if key in used:
            key = None
        note = "alone (every clean-correct point)" if i == 0 else "cumulative: only points earlier attacks missed"
        rows.append({"metric": label, "measured": acc, "published": take(key) if key else None, "note": note})
    if len(result.robust_accuracy) > 1:
        rows.append({"metric": "worst case over all attacks", "measured": m["worst_case"], "published": None,
                     "note": f"pointwise, first {result.worst_case_n} points"})
    if cfg.autoattack is not None:
        rows.append({"metric": f"AutoAttack-{cfg.autoattack.version}", "measured": m["autoattack"],
                     "published": take("autoattack"), "note": f"first {m['autoattack_n']} points"})
    for label, acc in (result.classifier_only.get("accuracy") or {}).items():
        on_carso = label.endswith("judged on CARSO)")
        rows.append({"metric": label, "measured": _pct(acc), "published": take("classifier-only") if on_carso else None,
                     "note": "classifier-only (the CARSO paper's MNIST protocol): not this model's robustness, not "
                             "in the worst case"})
    pub_sweep = _published_sweep(published)
    matched: set[float] = set()
    for key, acc in m["eps_sweep"].items():
        eps = float(key)
        hit = next((e for e in pub_sweep if math.isclose(e, eps, rel_tol=1e-6, abs_tol=1e-12)), None)
        if hit is not None:
            matched.add(hit)
        rows.append({"metric": f"eps={key}", "measured": acc, "published": pub_sweep.get(hit) if hit is not None
                     else None, "note": f"first attack alone, first {m['eps_sweep_n']} points"})
    for eps, value in sorted(pub_sweep.items()):
        if eps not in matched:
            rows.append({"metric": f"eps={eps!r}", "measured": None, "published": _published_number(value),
                         "note": "not in this protocol's eps sweep"})
    if "eps_sweep" in pub:
        used.add("eps_sweep")
    for key, value in pub.items():
        if key not in used:
            attack_keys = {"autoattack", *(published_key(name) for name in list_attacks())}
            why = "not run by this protocol" if key in attack_keys else "no measured counterpart"
            rows.append({"metric": key, "measured": None, "published": _published_number(value), "note": why})
    return rows


# ------------------------------------------------------------------------------------------------ context
def machine_info(device: str | torch.device = "auto") -> dict[str, Any]:
    """Where the numbers were measured: device and its name, torch version, threads, CPUs, OS."""
    from robustlab.utils.device import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = f"{platform.processor() or platform.machine()} CPU ({os.cpu_count()} logical cores)"
    return {"device": str(dev), "device_name": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def precision_line(budget: dict[str, Any]) -> str:
    """The precision line of ``reproduce.md``: what the epochs ran in, beside what the preset asked for."""
    ran = budget.get("bf16")
    text = {True: "bf16 autocast", False: "fp32", None: "unknown (no epoch logged)"}.get(ran, str(ran))
    return f"- precision: {text} (bf16 requested: {budget.get('bf16_requested')})"


def budget_info(cfg: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """The training budget actually used: epochs, steps, data, model, objective (every parameter, defaults included,
    when the run stored them) and its training attack, and the precision the epochs really ran in."""
    last = run_dir / "checkpoints" / "last.json"
    state = json.loads(last.read_text()) if last.exists() else {}
    done = state.get("epoch")
    best = run_dir / "checkpoints" / "best.json"
    ran_bf16 = {bool(row["bf16"]) for row in read_jsonl(run_dir / "metrics.jsonl") if "bf16" in row}
    return {
        "epochs": cfg.epochs, "completed_epochs": done, "batch_size": cfg.batch_size,
        "max_steps_per_epoch": cfg.max_steps_per_epoch, "train_subset": cfg.data.train_subset,
        "dataset": cfg.data.dataset, "model": cfg.model.name, "objective": cfg.objective.name,
        "objective_params": state.get("objective_params", cfg.objective.params),
        "training_attack": cfg.objective.attack.model_dump(exclude_none=True) if cfg.objective.attack else None,
        "eps_warmup_epochs": cfg.objective.eps_warmup_epochs, "optimizer": cfg.optimizer.model_dump(mode="json"),
        "schedule": cfg.schedule.name, "bf16_requested": cfg.bf16,
        # the trainer falls back to fp32 where bf16 is not native: report what the epochs ran in ("mixed" if both)
        "bf16": ran_bf16.pop() if len(ran_bf16) == 1 else ("mixed" if ran_bf16 else None),
        "best_checkpoint": json.loads(best.read_text()) if best.exists() else None,
    }


def training_budget(train: TrainConfig, eval_cfg: EvalConfig, sizes: dict[str, int]) -> dict[str, Any]:
    """What a budget is made of: epochs, training images, training-attack steps and evaluation points (``sizes``:
    the number of training and test points of the dataset, for "all of them")."""
    attack = train.objective.attack
    images = min(train.data.train_subset or sizes["train"], sizes["train"])
    steps_per_epoch = images // train.batch_size
    if train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, train.max_steps_per_epoch)
        images = steps_per_epoch * train.batch_size
    return {"epochs": train.epochs, "training_images": images,
            "attack_steps": (attack.steps or 1) if attack is not None else 0,
            "evaluation_points": min(eval_cfg.n or sizes["test"], sizes["test"])}


def compare_budgets(run: dict[str, Any], published: dict[str, Any] | None) -> dict[str, Any]:
    """The run's budget beside the published one, the ratio of training compute (epochs x images x (attack steps
    + 1)) and a flag when the two differ, so a reduced run is never read against a paper-scale number unawares."""
    if published is None:
        return {"run": run, "published": None, "comparable": None,
                "note": "the preset has no paper scale: the published budget is not recorded"}
    cost = {k: b["epochs"] * b["training_images"] * (b["attack_steps"] + 1) for k, b in (("run", run),
                                                                                       ("published", published))}
    ratio = cost["published"] / max(cost["run"], 1)
    same = ratio < 1.05 and run["evaluation_points"] >= published["evaluation_points"]
    note = "same budget as the published row" if same else (
        f"NOT the published budget: {run['epochs']} epochs x {run['training_images']:,} images "
        f"(attack {run['attack_steps']} steps), evaluated on {run['evaluation_points']:,} points, against "
        f"{published['epochs']} x {published['training_images']:,} (attack {published['attack_steps']} steps) on "
        f"{published['evaluation_points']:,}: about {ratio:,.0f}x less training compute, so the published numbers are "
        "not what this run should reach")
    return {"run": run, "published": published, "compute_ratio": ratio, "comparable": same, "note": note}


def budget_comparison(preset: Any) -> dict[str, Any]:
    """:func:`compare_budgets` for a resolved preset against the same row at its ``paper`` scale."""
    from robustlab.data.resolve import as_dataset
    from robustlab.presets import load_preset

    source = preset.train.data.dataset or preset.train.data.path
    train = as_dataset(source, "train") if preset.train.data.dataset else None
    sizes = {"train": len(train) if train is not None else 0,
             "test": len(as_dataset(source, "test")) if preset.train.data.dataset else 0}
    run = training_budget(preset.train, preset.eval, sizes)
    try:
        paper = load_preset(preset.name, "paper")
    except RobustlabError:
        paper = None
    return compare_budgets(run, None if paper is None else training_budget(paper.train, paper.eval, sizes))


# ------------------------------------------------------------------------------------------------ plots
def write_training_curves(run_dir: Path) -> Path | None:
    """``training_curves.png`` from ``metrics.jsonl`` (None when there are no epoch rows yet)."""
    from robustlab.analysis.plots import plot_training_curves

    rows = read_jsonl(run_dir / "metrics.jsonl")
    if not rows:
        return None
    return plot_training_curves(rows, run_dir / "training_curves.png", title=run_dir.name)


def latent_attack_config(cfg: EvalConfig) -> AttackConfig:
    """PGD-20 at the protocol's first threat model (step 2.5 eps / 20): enough to move latents, cheap on 1000."""
    first = first_attack_config(cfg)
    return AttackConfig(name="pgd", norm=first.norm, eps=first.eps, steps=20, step_size=2.5 * first.eps / 20)


def write_latent_plot(
    run_dir: Path, train_cfg: TrainConfig, eval_cfg: EvalConfig, *, device: str = "auto", n: int = 1000,
    batch_size: int = 250,
) -> Path:
    """``latent_pca.png``: PCA of the best checkpoint's clean latents on the first ``n`` test points, coloured by
    class, with the PGD latents (:func:`latent_attack_config`) projected on the same basis. The latent is the
    objective's ``latent_layer`` when it names one, else the model's ``encode`` output."""
    from robustlab.analysis.latent import collect_latents, plot_latent_pca
    from robustlab.attacks.config import build_attack
    from robustlab.core.rng import derive_seed
    from robustlab.data import load_dataset
    from robustlab.models.latent import check_latent_layer
    from robustlab.runs.loading import load_trained_model
    from robustlab.utils.device import model_device

    model, meta = load_trained_model(run_dir, "best", device)
    latent = get_objective_class(train_cfg.objective.name).latent_plot
    layer = train_cfg.objective.params.get("latent_layer") if latent else None
    check_latent_layer(model, layer)
    data = load_dataset(meta["dataset"], "test")
    k = min(n, len(data))
    dev = model_device(model)
    x, y = data.float_images(range(k)).to(dev), data.labels[:k].to(dev)
    acfg = latent_attack_config(eval_cfg)
    attack = build_attack(acfg, model)
    torch.manual_seed(derive_seed(eval_cfg.seed, "latent-plot"))
    x_adv = torch.cat([attack(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, k, batch_size)])
    z, _ = collect_latents(model, x, layer, batch_size=batch_size)
    z_adv, _ = collect_latents(model, x_adv, layer, batch_size=batch_size)
    title = f"{run_dir.name}: {k} test points, PGD-20 {acfg.norm} eps={acfg.eps:.4g} (black)"
    return plot_latent_pca(z.cpu(), y.cpu(), run_dir / "latent_pca.png", z_adv=z_adv.cpu(), title=title)


# ------------------------------------------------------------------------------------------------ report
def _cell(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


#: Model settings that name a trained run supplying weights (CARSO's classifier), with the settings that name the
#: architecture the preset expects there: the run stands for its architecture, since presets name only that.
TRAINED_INPUTS = {"classifier": ("classifier_model", "classifier_dataset", "classifier_kwargs")}


def _described_model(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Model settings as the method they describe: a trained run given as an input (CARSO's ``classifier``) is
    replaced by its recorded architecture (model, dataset, settings), and the checkpoint choice is dropped."""
    out = {k: v for k, v in kwargs.items() if k != "which"}
    for key, (name_key, dataset_key, kwargs_key) in TRAINED_INPUTS.items():
        source = out.get(key)
        if not isinstance(source, str):
            continue
        folder = run_folder_of(source)
        if not is_run_folder(folder):
            continue
        recorded = run_config(folder)
        model = recorded.get("model") or {}
        del out[key]
        out[name_key] = model.get("name")
        out[dataset_key] = (recorded.get("data") or {}).get("dataset")
        out[kwargs_key] = model.get("kwargs") or {}
    for _, _, kwargs_key in TRAINED_INPUTS.values():
        if not out.get(kwargs_key):
            out.pop(kwargs_key, None)  # unset and empty describe the same architecture
    return out


def published_caveat(preset_train: TrainConfig, run_train: TrainConfig) -> str | None:
    """A warning when overrides changed what the published row describes (dataset, model, objective or its
    parameters): the measured numbers are then not that row's reproduction. None when they describe the same; a
    trained classifier run given to a preset that names only its architecture changes nothing if the architecture
    matches."""
    preset_model = (preset_train.model.name, _described_model(preset_train.model.kwargs))
    run_model = (run_train.model.name, _described_model(run_train.model.kwargs))
    changed = [label for label, a, b in (
        ("dataset", preset_train.data.dataset, run_train.data.dataset),
        ("model", preset_model, run_model),
        ("objective", preset_train.objective.name, run_train.objective.name),
        ("objective parameters", preset_train.objective.params, run_train.objective.params),
    ) if a != b]
    if not changed:
        return None
    return (f"overrides changed the {', '.join(changed)} of this preset (objective {preset_train.objective.name!r} "
            f"-> {run_train.objective.name!r}): the published column describes the preset, not this run")


def render_markdown(report: dict[str, Any]) -> str:
    """``reproduce.md``: the comparison table (measured and published columns kept apart) and the context."""
    pub = report["published"]
    lines = [f"# Reproduction: {report['preset']} ({report['scale']} scale)", ""]
    if report.get("description"):
        lines += [report["description"], ""]
    lines += [f"Published numbers: {pub.get('source', 'no source given')}. Measured numbers come from "
              f"`{report['evaluation']['file']}`; a dash means no value (never filled in). Accuracy in percent.", "",
              "| metric | measured | published | note |", "|---|---:|---:|---|"]
    if report.get("published_caveat"):
        lines.insert(-2, f"**Not this preset's reproduction:** {report['published_caveat']}.\n")
    versus = report.get("budget_vs_published") or {}
    if versus.get("comparable") is False:
        lines.insert(-2, f"**Budget:** {versus['note']}.\n")
    for row in report["rows"]:
        lines.append(f"| {row['metric']} | {_cell(row['measured'])} | {_cell(row['published'])} | {row['note']} |")
    b, mach, wt = report["budget"], report["machine"], report["wall_times"]
    attack = b["training_attack"]
    attack_text = "none" if attack is None else ", ".join(f"{k}={v}" for k, v in attack.items())
    lines += ["", "## Budget", "",
              f"- scale `{report['scale']}`: {b['epochs']} epochs (completed {b['completed_epochs']}), batch "
              f"{b['batch_size']}, max steps/epoch {b['max_steps_per_epoch']}, train subset {b['train_subset']}",
              f"- {b['model']} on {b['dataset']}, objective `{b['objective']}` {json.dumps(b['objective_params'])}",
              f"- training attack: {attack_text}",
              precision_line(b),
              "", "## Protocol", "", "```json", json.dumps(report["protocol"], indent=2), "```",
              "", "## Machine and wall times", "",
              f"- {mach['device_name']} ({mach['device']}), torch {mach['torch']}, {mach['threads']} threads",
              "- " + ", ".join(f"{k} {v:.1f}s" if isinstance(v, float) else f"{k} {v}" for k, v in wt.items())]
    if report.get("sanity_warnings"):
        lines += ["", "## Sanity warnings", "", *[f"- {w}" for w in report["sanity_warnings"]]]
    if report.get("plots"):
        lines += ["", "## Plots", "", *[f"- ![{p}]({p})" for p in report["plots"]]]
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``reproduce.json`` and ``reproduce.md`` into ``run_dir`` atomically."""
    atomic_write_json(run_dir / REPORT_JSON, report)
    atomic_write_text(run_dir / REPORT_MD, render_markdown(report))
    return run_dir / REPORT_JSON, run_dir / REPORT_MD


def reproduce_run(
    preset: Any,
    run_dir: Path,
    *,
    evaluate: Callable[[], tuple[EvaluationResult, Path]],
    device: str = "auto",
    progress: bool = True,
    reevaluate: bool = False,
    latent_plot: bool = False,
    latent_n: int = 1000,
    log: Callable[[str], None] = print,
    caveat: str | None = None,
) -> dict[str, Any]:
    """Train ``preset`` in ``run_dir`` unless already complete (resuming otherwise), evaluate it with ``evaluate``
    unless a matching evaluation exists (or ``reevaluate``), write the plots and the report; return the report.
    ``caveat`` (see :func:`published_caveat`) is written into the report when overrides changed the method."""
    from robustlab.analysis.plots import plot_robust_accuracy_vs_eps
    from robustlab.runs import write_preset_file
    from robustlab.training.trainer import Trainer

    t0 = time.perf_counter()
    wall: dict[str, Any] = {}
    previous = json.loads((run_dir / REPORT_JSON).read_text()) if (run_dir / REPORT_JSON).exists() else {}
    trained_now = not training_complete(run_dir, preset.train)
    if trained_now:
        trainer = Trainer(preset.train, run_dir, show_progress=progress)  # validates before anything is written
        write_preset_file(run_dir, preset)
        summary = trainer.fit()
        wall["train_s"] = summary.seconds
    else:
        write_preset_file(run_dir, preset)
        log(f"{run_dir} is already trained to {preset.train.epochs} epochs; not training")
        old = previous.get("wall_times", {})
        if "train_s" in old:
            wall["train_s"] = old["train_s"]
            wall["train_s_from"] = "an earlier reproduce call"
    wall["trained_now"] = trained_now
    t1 = time.perf_counter()
    found = None if (reevaluate or trained_now) else latest_matching_eval(run_dir, preset.eval)
    if found is None:
        result, eval_path = evaluate()
        wall["evaluate_s"] = time.perf_counter() - t1
    else:
        eval_path, result = found
        log(f"re-using the evaluation {eval_path} (pass --reevaluate to run it again)")
        wall["evaluate_s"] = result.timings.get("total")
        wall["evaluate_s_from"] = "the re-used evaluation (protocol attacks only)"
    wall["evaluation_reused"] = found is not None
    t2 = time.perf_counter()
    plots: list[str] = []
    if result.eps_sweep:
        sweep_png = eval_path.parent / "robust_accuracy_vs_eps.png"
        if found is not None or not sweep_png.exists():
            plot_robust_accuracy_vs_eps(result.eps_sweep, sweep_png, published=_published_sweep(preset.published)
                                        or None, title=f"{preset.name} ({preset.scale})")
        plots.append(str(sweep_png.relative_to(run_dir)))
    if write_training_curves(run_dir) is not None:
        plots.append("training_curves.png")
    if latent_plot or get_objective_class(preset.train.objective.name).latent_plot:
        latent_png = run_dir / "latent_pca.png"
        best = run_dir / "checkpoints" / "best.safetensors"
        if reevaluate or trained_now or not latent_png.exists() or latent_png.stat().st_mtime < best.stat().st_mtime:
            write_latent_plot(run_dir, preset.train, preset.eval, device=device, n=latent_n)
        plots.append("latent_pca.png")
    wall["plots_s"] = time.perf_counter() - t2
    wall["total_s"] = time.perf_counter() - t0
    report = {
        "preset": preset.name, "scale": preset.scale, "description": preset.description,
        "reference": preset.reference, "run_dir": str(run_dir), "units": "percent",
        "rows": comparison_rows(result, preset.eval, preset.published),
        "measured": measured_summary(result, len(preset.eval.attacks)),
        "published": preset.published,
        "published_caveat": caveat,
        "protocol": preset.eval.model_dump(mode="json", exclude_none=True),
        "budget": budget_info(preset.train, run_dir),
        "budget_vs_published": budget_comparison(preset),
        "machine": machine_info(device),
        "versions": result.versions,
        "wall_times": wall,
        "evaluation": {"file": str(eval_path), "reused": found is not None},
        "sanity_warnings": list(result.sanity.get("warnings", [])),
        "plots": plots,
        "created_at": time.time(),
    }
    write_report(run_dir, report)
    return report
