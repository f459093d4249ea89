"""Adversarial example grid: clean images, their adversarial versions from a quick PGD, and the perturbation
magnified ten times (centred on grey), with true and predicted labels."""

from __future__ import annotations

import io

import torch
from torch import Tensor, nn

from robustlab.attacks import PGD
from robustlab.attacks.base import attack_mode, predict
from robustlab.core.threat import ThreatModel

MAGNIFY = 10.0


def quick_pgd(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, steps: int = 20,
              seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """(x_adv, clean predictions, adversarial predictions) from PGD-``steps`` (Madry step size), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        x_adv = PGD(model, threat, steps=steps)(x, y)
    with attack_mode(model), torch.no_grad():
        return x_adv, predict(model, x).argmax(1), predict(model, x_adv).argmax(1)


def perturbation_image(x: Tensor, x_adv: Tensor, magnify: float = MAGNIFY) -> Tensor:
    """``0.5 + magnify * (x_adv - x)`` clipped to [0, 1]: grey where nothing changed."""
    return (0.5 + magnify * (x_adv - x)).clamp(0, 1)


def _hwc(img: Tensor) -> tuple[object, str | None]:
    if img.dim() == 1:  # a table row of d features: drawn as a 1 x d grey strip, one cell per feature
        return img.detach().cpu().float().reshape(1, -1).numpy(), "gray"
    arr = img.detach().cpu().float().permute(1, 2, 0).numpy()
    return (arr[:, :, 0], "gray") if arr.shape[2] == 1 else (arr, None)


def adversarial_grid_png(x: Tensor, x_adv: Tensor, y: Tensor, pred: Tensor, pred_adv: Tensor, *,
                         classes: list[str] | None = None, title: str = "") -> bytes:
    """PNG bytes of a 3-row grid (clean, adversarial, perturbation x10), one column per image."""
    from robustlab.analysis.plots import new_figure

    k = len(x)
    fig = new_figure(max(4.0, 1.3 * k), 4.6)
    axes = fig.subplots(3, k, squeeze=False)
    pert = perturbation_image(x, x_adv)

    def name(i: int) -> str:
        return classes[i] if classes and 0 <= i < len(classes) else str(i)

    for j in range(k):
        for i, (img, label) in enumerate(((x[j], f"y={name(int(y[j]))}\npred {name(int(pred[j]))}"),
                                          (x_adv[j], f"pred {name(int(pred_adv[j]))}"),
                                          (pert[j], ""))):
            arr, cmap = _hwc(img)
            ax = axes[i][j]
            ax.imshow(arr, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if label:
                wrong = i == 1 and int(pred_adv[j]) != int(y[j])
                ax.set_title(label, fontsize=7, color="tab:red" if wrong else "black")
        for i, row in enumerate(("clean", "adversarial", f"perturbation x{MAGNIFY:g}")):
            axes[i][0].set_ylabel(row, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()
