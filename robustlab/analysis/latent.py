"""Latent-space plots (thesis ch.3 §7.5): latents collected with :func:`robustlab.models.latent.latent_and_logits`,
projected to 2-D by PCA and scattered by class."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from robustlab.core.errors import InputError
from robustlab.models.latent import latent_and_logits


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
