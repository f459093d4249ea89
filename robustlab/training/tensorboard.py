"""Optional TensorBoard logging for the trainer: per-epoch scalars and a grid of validation examples (clean,
adversarial under the validation attack, perturbation x10). ``tensorboard`` is an optional extra, imported only
when a config sets ``tensorboard: true``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.core.errors import ConfigError

LOG_DIR = "tensorboard"
GRID_N = 8


def summary_writer(log_dir: str | Path) -> Any:
    """A ``torch.utils.tensorboard.SummaryWriter``, or a ConfigError saying how to install the package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError("tensorboard: true needs the tensorboard package: pip install 'robustlab[tensorboard]' "
                          f"(or pip install tensorboard), or set tensorboard: false ({exc})") from None
    return SummaryWriter(log_dir=str(log_dir))


def image_grid(rows: list[Tensor], pad: int = 2) -> Tensor:
    """Rows of equally shaped NCHW images in [0, 1] tiled into one CHW image (white padding)."""
    n, c, h, w = rows[0].shape
    grid = torch.ones(c, len(rows) * (h + pad) + pad, n * (w + pad) + pad)
    for i, row in enumerate(rows):
        for j in range(n):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            grid[:, top : top + h, left : left + w] = row[j].detach().float().cpu()
    return grid


class TensorBoardLogger:
    """Writes ``RUN/tensorboard/`` events: every numeric metric of an epoch row, and an example grid."""

    def __init__(self, run_dir: str | Path):
        self.writer = summary_writer(Path(run_dir) / LOG_DIR)

    def log_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        """One scalar per numeric metric (``train/loss``, ``val/robust_acc``, ``lr``), at step ``epoch + 1``."""
        for key, value in row.items():
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            tag = key.replace("train_", "train/", 1).replace("val_", "val/", 1)
            self.writer.add_scalar(tag, float(value), epoch + 1)

    def log_examples(self, epoch: int, model: nn.Module, x: Tensor, y: Tensor, attack: Any | None) -> None:
        """Grid of ``x``: clean, then (with an attack) adversarial and 0.5 + 10 x perturbation. The attack runs
        inside a forked RNG so training randomness is unchanged."""
        rows = [x]
        if attack is not None:
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                torch.manual_seed(epoch)
                x_adv = attack(x, y)
            rows += [x_adv, (0.5 + 10 * (x_adv - x)).clamp(0, 1)]
        self.writer.add_image("examples/clean_adversarial_perturbation_x10", image_grid(rows), epoch + 1)

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.flush()
        self.writer.close()
