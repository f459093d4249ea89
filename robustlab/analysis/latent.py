"""Latent representations: one forward giving (latent, logits) at any split point, and a 2-D PCA scatter of them.

Used by the representation objectives (ADR, ASCL) for their losses and by the latent-space plots (thesis ch.3 §7.5).
The split point is the model's ``encode``/``classify`` by default, or any named layer read with ``LayerTaps``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from robustlab.errors import ConfigError, InputError
from robustlab.models.base import unknown_name_message
from robustlab.models.normalized import Normalized
from robustlab.models.taps import LayerTaps, named_layers


def check_latent_layer(model: nn.Module, latent_layer: str | None) -> None:
    """Raise ``ConfigError`` unless ``model`` can give a latent at ``latent_layer`` (None = its encode/classify split).

    The message lists the valid layer names, so a typo in a config is fixed in one go.
    """
    if latent_layer is None:
        inner = model.net if isinstance(model, Normalized) else model
        if not (callable(getattr(inner, "encode", None)) and callable(getattr(inner, "classify", None))):
            raise ConfigError(
                f"{type(inner).__name__} has no encode/classify split; set latent_layer to one of its layers: "
                + ", ".join(repr(n) for n in named_layers(model)[:40])
            )
        return
    valid = named_layers(model)
    if latent_layer not in valid:
        raise ConfigError("latent_layer: " + unknown_name_message("layer", [latent_layer], valid))


def latent_and_logits(model: nn.Module, x: Tensor, latent_layer: str | None = None) -> tuple[Tensor, Tensor]:
    """``(z, logits)`` for ``x`` from ONE forward pass: z = ``encode(x)`` (default) or the flattened output of
    ``latent_layer`` (tapped during the forward that also gives the logits). Gradients flow through both."""
    check_latent_layer(model, latent_layer)
    if latent_layer is None:
        z = model.encode(x)
        return z, model.classify(z)
    with LayerTaps(model, [latent_layer]) as taps:
        logits = model(x)
    z = taps[latent_layer]
    if not isinstance(z, Tensor) or z.dim() < 1 or z.shape[0] != x.shape[0]:
        raise ConfigError(f"layer {latent_layer!r} does not output one tensor per example; pick another latent_layer")
    return z.flatten(1), logits


def pca_2d(z: Tensor, *, basis_of: Tensor | None = None) -> Tensor:
    """Project rows of ``z`` (N, D) onto the top-2 principal directions of ``basis_of`` (default ``z``): (N, 2).

    Centred on ``basis_of``'s mean; each direction's sign is fixed (largest loading positive) so plots are stable.
    With D < 2 or a rank-deficient batch the missing coordinates are 0.
    """
    z = z.detach().flatten(1).double()
    ref = z if basis_of is None else basis_of.detach().flatten(1).double()
    if z.shape[0] < 1 or ref.shape[0] < 1 or ref.shape[1] != z.shape[1]:
        raise InputError(f"pca_2d needs non-empty (N, D) latents of equal D, got {tuple(z.shape)} and "
                         f"{tuple(ref.shape)}")
    mean = ref.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(ref - mean, full_matrices=False)
    k = min(2, vh.shape[0])
    dirs = vh[:k]
    dirs = dirs * torch.where(dirs.gather(1, dirs.abs().argmax(dim=1, keepdim=True)) < 0, -1.0, 1.0)
    dirs = dirs * (s[:k] > 1e-12 * max(float(s[0]), 1e-300)).double()[:, None]
    out = torch.zeros(z.shape[0], 2, dtype=torch.float64)
    out[:, :k] = (z - mean) @ dirs.T
    return out.float()


def plot_latent_pca(
    z: Tensor,
    y: Tensor,
    path: str | Path,
    *,
    z_adv: Tensor | None = None,
    title: str | None = None,
) -> Path:
    """Save a PNG scatter of the 2-D PCA of clean latents ``z`` coloured by class ``y``; ``z_adv`` (optional) is
    projected on the clean basis and drawn as black triangles, as in the ADR/ASCL latent figures."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if y.dim() != 1 or y.shape[0] != z.shape[0]:
        raise InputError(f"labels must be (N,) matching z's {z.shape[0]} rows, got {tuple(y.shape)}")
    pts = pca_2d(z).numpy()
    labels = y.detach().cpu().numpy()
    fig = Figure(figsize=(5, 5), dpi=100)  # no pyplot: the Agg canvas, no global backend state
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    cmap = colormaps["tab10" if labels.max(initial=0) < 10 else "tab20"]
    for c in sorted(set(labels.tolist())):
        sel = labels == c
        ax.scatter(pts[sel, 0], pts[sel, 1], s=8, color=cmap(c % cmap.N), label=str(c))
    if z_adv is not None:
        adv = pca_2d(z_adv, basis_of=z).numpy()
        ax.scatter(adv[:, 0], adv[:, 1], s=14, marker="^", color="black", label="adv")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=6, markerscale=1.5, loc="best")
    if title:
        ax.set_title(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


@torch.no_grad()
def collect_latents(
    model: nn.Module, x: Tensor, latent_layer: str | None = None, *, batch_size: int = 256
) -> tuple[Tensor, Tensor]:
    """``(z, logits)`` on the CPU for a whole tensor of images in eval mode, batch by batch, without gradients."""
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    try:
        parts = [latent_and_logits(model, x[i : i + batch_size], latent_layer) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat([p[0] for p in parts]).cpu(), torch.cat([p[1] for p in parts]).cpu()
