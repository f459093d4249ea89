"""Report plots: robust accuracy versus eps and training curves, drawn on Agg figures (no pyplot global state)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from robustlab.core.errors import InputError


def new_figure(width: float = 5.5, height: float = 4.0) -> Any:
    """A matplotlib figure on the Agg canvas (no display, no global pyplot state), ``width`` x ``height`` inches."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (creating its folder) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


def _eps_points(values: Mapping[Any, Any], what: str) -> list[tuple[float, float]]:
    """(eps, accuracy) pairs sorted by eps from a mapping with float-like keys; non-numeric values are errors."""
    try:
        pts = sorted((float(k), float(v)) for k, v in values.items())
    except (TypeError, ValueError):
        raise InputError(f"{what} must map eps to a number, got {dict(values)}") from None
    if any(not (math.isfinite(e) and e > 0) for e, _ in pts):
        raise InputError(f"{what}: every eps must be a finite number > 0, got {[e for e, _ in pts]}")
    return pts


def plot_robust_accuracy_vs_eps(
    accuracy: Mapping[Any, float],
    path: str | Path,
    *,
    published: Mapping[Any, Any] | None = None,
    title: str | None = None,
    percent_published: bool = True,
) -> Path:
    """Save a PNG of measured robust accuracy (fractions in [0, 1]) against eps, with optional published points
    (percent by default, as presets write them) drawn as separate, labelled markers."""
    pts = _eps_points(accuracy, "the eps sweep")
    if not pts:
        raise InputError("the eps sweep is empty; nothing to plot")
    fig = new_figure()
    ax = fig.subplots()
    ax.plot([e for e, _ in pts], [100 * a for _, a in pts], marker="o", label="measured")
    if published:
        pub = _eps_points(published, "published eps_sweep")
        scale = 1.0 if percent_published else 100.0
        ax.plot([e for e, _ in pub], [scale * a for _, a in pub], linestyle="none", marker="s",
                markerfacecolor="none", color="tab:red", label="published")
    ax.set_xlabel("eps")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_training_curves(rows: Sequence[Mapping[str, Any]], path: str | Path, *, title: str | None = None) -> Path:
    """Save a PNG of per-epoch training metrics from ``metrics.jsonl`` rows: train loss, validation clean and
    robust accuracy, and ``train_udr_lambda`` (UDR's dual variable) on its own panel when present."""
    rows = [r for r in rows if "epoch" in r]
    if not rows:
        raise InputError("no epoch rows to plot (metrics.jsonl is empty)")

    def series(key: str) -> tuple[list[int], list[float]]:
        kept = [(int(r["epoch"]) + 1, float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]
        return [e for e, _ in kept], [v for _, v in kept]

    panels = ["loss", "accuracy"] + (["udr"] if series("train_udr_lambda")[0] else [])
    fig = new_figure(4.2 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    epochs, loss = series("train_loss")
    axes[0].plot(epochs, loss, marker="o", label="train loss")
    axes[0].set_ylabel("loss")
    for key, label in (("val_clean_acc", "val clean"), ("val_robust_acc", "val robust"),
                       ("train_acc", "train clean"), ("train_adv_acc", "train adversarial")):
        ep, vals = series(key)
        if ep:
            axes[1].plot(ep, [100 * v for v in vals], marker="o", label=label)
    axes[1].set_ylabel("accuracy (%)")
    if "udr" in panels:
        ep, lam = series("train_udr_lambda")
        axes[2].plot(ep, lam, marker="o", color="tab:purple", label="UDR lambda")
        axes[2].set_ylabel("lambda")
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
