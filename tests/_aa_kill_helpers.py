"""A deterministic small classifier that can be slowed down, shared by the AutoAttack kill test and its subprocess."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import Tensor, nn

from robustlab.attacks.autoattack import AutoAttack, AutoAttackResult
from robustlab.core.threat import ThreatModel


class SlowLinear(nn.Module):
    """A fixed random linear classifier on 1x6x6 inputs; ``delay`` seconds of sleep per forward (not state)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.fc = nn.Linear(36, 5)
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(5, 36, generator=g) * 0.5)
            self.fc.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        if self.delay:
            time.sleep(self.delay)
        return self.fc(x.flatten(1))


def points() -> tuple[Tensor, Tensor]:
    """64 inputs labelled by the model itself, so all are clean-correct."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(64, 1, 6, 6, generator=g) * 0.6 + 0.2
    with torch.no_grad():
        y = SlowLinear()(x).argmax(dim=1)
    return x, y


def run(state_file: Path | None, delay: float = 0.0) -> AutoAttackResult:
    """Custom AutoAttack (APGD-CE then APGD-DLR, 20 steps) in batches of 8 at L-inf eps 0.08."""
    x, y = points()
    aa = AutoAttack(SlowLinear(delay), ThreatModel("linf", 0.08), version="custom", attacks=["apgd-ce", "apgd-dlr"],
                    attack_kwargs={"apgd-ce": {"steps": 20}, "apgd-dlr": {"steps": 20}}, seed=5,
                    state_file=state_file, batch_size=8)
    return aa.run(x, y)
