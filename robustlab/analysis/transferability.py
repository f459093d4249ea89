"""Transferability inside an ensemble (thesis ch.4 A10, CCE Table 6): the a^(i,j) matrix, T, nT, a_single, S_ab.

a^(i,j) = accuracy (%) of target j on the adversarial examples crafted against source i, for i, j over the members
1..K and the ensemble ``en``. For K = 2 the paper's quantities are
T = a^(1,2) - a^(1,1) + a^(2,1) - a^(2,2) (smaller = more transferable), nT = 100 - a^(en,en) - |S00| and
a_single = a^(en,en) - |S11|, where S_ab (in %) splits the ensemble's adversarial examples by which members are right
(a = member 1 correct, b = member 2 correct; measured on x_a^en, as the spec infers). For K > 2 this generalises to
T = sum_i [mean_{j != i} a^(i,j) - a^(i,i)], S keyed by one bit per member, nT with S_{0..0}, a_single with S_{1..1}.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.core.errors import InputError
from robustlab.io.atomic import atomic_write_json
from robustlab.models.ensemble import member_models

AttackFactory = Callable[[nn.Module], Callable[[Tensor, Tensor], Tensor]]


@dataclass
class TransferabilityResult:
    """a^(i,j) in % (rows = sources, columns = targets, names ``1..K, en``), the derived scalars and S subsets."""

    names: list[str]
    accuracy: list[list[float]]
    T: float
    nT: float  # noqa: N815  (the paper's name)
    a_single: float
    subsets: dict[str, float]
    n: int
    attack: str = ""

    def a(self, source: str | int, target: str | int) -> float:
        """a^(source, target) by name (``"1"``, ``"en"``) or 1-based member number."""
        i, j = self.names.index(str(source)), self.names.index(str(target))
        return self.accuracy[i][j]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


Summary = tuple[list[list[float]], float, float, float, dict[str, float]]


def summarize(correct: Tensor, subset_correct: Tensor) -> Summary:
    """The scalars from correctness flags: ``correct[i, j, b]`` = target j right on source i's example b
    ((K+1, K+1, N), last index = ensemble), ``subset_correct[k, b]`` = member k right on the ensemble's example b."""
    k1, k1b, n = correct.shape
    if k1 != k1b or k1 < 3 or subset_correct.shape != (k1 - 1, n) or n == 0:
        raise InputError(f"expected correctness flags (K+1, K+1, N) with K >= 2 and (K, N), got "
                         f"{tuple(correct.shape)} and {tuple(subset_correct.shape)}")
    k = k1 - 1
    acc = 100.0 * correct.double().mean(-1)
    t = sum(float(acc[i, [j for j in range(k) if j != i]].mean() - acc[i, i]) for i in range(k))
    flags = subset_correct.bool()
    subsets = {}
    for bits in itertools.product((1, 0), repeat=k):
        mask = torch.ones(n, dtype=torch.bool)
        for m, bit in enumerate(bits):
            mask &= flags[m] if bit else ~flags[m]
        subsets["".join(map(str, bits))] = 100.0 * float(mask.double().mean())
    a_en = float(acc[k, k])
    return acc.tolist(), t, 100.0 - a_en - subsets["0" * k], a_en - subsets["1" * k], subsets


@torch.no_grad()
def _correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    from robustlab.attacks.base import attack_mode, predict

    with attack_mode(model):
        return (predict(model, x).argmax(1) == y).cpu()


def transferability(
    model: nn.Module, x: Tensor, y: Tensor, attack: AttackFactory, *, label: str = ""
) -> TransferabilityResult:
    """Attack every member alone and the ensemble with ``attack(source)(x, y)``; score every target on each set.

    ``attack`` builds an attack for a source model, e.g. ``lambda m: PGD(m, ThreatModel("linf", 8/255), steps=20)``.
    """
    members = member_models(model, who="the transferability analysis")
    sources = [*members, model]
    names = [str(i + 1) for i in range(len(members))] + ["en"]
    if len(x) != len(y) or len(x) == 0:
        raise InputError(f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}")
    y = y.to(x.device)
    correct = torch.zeros(len(sources), len(sources), len(x), dtype=torch.bool)
    subset = torch.zeros(len(members), len(x), dtype=torch.bool)
    for i, src in enumerate(sources):
        x_adv = attack(src)(x, y)
        for j, tgt in enumerate(sources):
            correct[i, j] = _correct(tgt, x_adv, y)
        if i == len(members):
            subset = correct[i, : len(members)].clone()
    acc, t, nt, single, subsets = summarize(correct, subset)
    return TransferabilityResult(names=names, accuracy=acc, T=t, nT=nt, a_single=single, subsets=subsets,
                                 n=len(x), attack=label)


def print_transferability(result: TransferabilityResult, console: Any = None) -> None:
    """The a^(i,j) matrix and the scalars as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"a^(i,j): accuracy of target j on examples against source i {result.attack}".strip())
    table.add_column("source \\ target")
    for name in result.names:
        table.add_column(name, justify="right")
    for name, row in zip(result.names, result.accuracy):
        table.add_row(name, *(f"{v:.1f}" for v in row))
    console.print(table)
    summary = Table(title=f"transferability (n={result.n})")
    for col in ("T", "nT", "a_single", *(f"S{k}" for k in result.subsets)):
        summary.add_column(col, justify="right")
    summary.add_row(f"{result.T:.1f}", f"{result.nT:.1f}", f"{result.a_single:.1f}",
                    *(f"{v:.1f}" for v in result.subsets.values()))
    console.print(summary)


def save_transferability(result: TransferabilityResult, path: str | Path) -> Path:
    """Write the result as JSON (atomically)."""
    atomic_write_json(path, result.to_dict())
    return Path(path)
