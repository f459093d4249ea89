"""Robust accuracy: run attacks in order, each only on the points still classified correctly."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.attacks.base import attack_mode, predict
from robustlab.core.errors import NoGradientError
from robustlab.core.rng import derive_seed
from robustlab.core.threat import ThreatModel
from robustlab.core.validation import check_images, check_labels
from robustlab.utils import distributed
from robustlab.utils.progress import Progress

AttackFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class NamedAttack:
    """An attack callable with the name and settings written into results."""

    name: str
    attack: AttackFn
    threat: ThreatModel
    settings: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        """Protocol entry for the result."""
        return {"name": self.name, "threat": self.threat.to_dict(), **self.settings}


def clean_correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> Tensor:
    """Boolean mask of points the model classifies correctly (eval mode, no gradients)."""
    with attack_mode(model):
        return predict(model, x, batch_size).argmax(dim=1) == y


def robust_flags(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attacks: Sequence[NamedAttack],
    *,
    batch_size: int = 256,
    show_progress: bool = False,
    seed: int | None = None,
) -> tuple[Tensor, dict[str, Tensor], dict[str, float]]:
    """Per-sample flags: clean-correct, then robust after each attack (cumulative), and seconds per attack.

    With ``seed`` every (attack, batch) runs under its own seed ``derive_seed(seed, attack, batch)``, so a batch's
    randomness does not depend on the batches before it; under ``torchrun`` the batches are then dealt round-robin
    to the processes and the flags gathered after each attack: N processes give the flags of one, bit for bit.
    """
    check_images(x)
    check_labels(y, x.shape[0])
    info = distributed.current() if seed is not None else distributed.DistInfo()
    robust = clean_correct(model, x, y, batch_size)
    clean = robust.clone()
    flags: dict[str, Tensor] = {}
    timings: dict[str, float] = {}
    for named in attacks:
        start = time.perf_counter()
        todo = robust.nonzero().squeeze(1)
        chunks = todo.split(batch_size) if len(todo) else ()  # split() of an empty tensor yields one empty chunk
        broken = torch.zeros(len(x), dtype=torch.int32, device=x.device)
        with Progress(total=len(todo), description=f"{named.name} ({len(todo)} robust)",
                      enabled=show_progress and info.is_main) as bar:
            for b, chunk in enumerate(chunks):
                if b % info.world != info.rank:
                    continue
                if seed is not None:
                    torch.manual_seed(derive_seed(seed, named.name, b))
                x_adv = named.attack(x[chunk], y[chunk])
                if not bool(named.threat.contains(x_adv, x[chunk]).all()):
                    raise RuntimeError(f"attack {named.name} left the threat model {named.threat}")
                with attack_mode(model):
                    still = predict(model, x_adv, batch_size).argmax(dim=1) == y[chunk]
                broken[chunk] = (~still).to(torch.int32)
                bar.advance(len(chunk) * info.world, robust=int(robust.sum() - broken.sum()))
        robust &= distributed.all_reduce_tensor(broken, info) == 0
        flags[named.name] = robust.clone()
        timings[named.name] = time.perf_counter() - start
    return clean, flags, timings


def accuracy_of(mask: Tensor) -> float:
    """Mean of a boolean mask as a float."""
    return float(mask.float().mean()) if mask.numel() else float("nan")


def grad_health(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> dict[str, float]:
    """Fractions of samples whose input gradient of the CE loss is all zero, or has NaN/inf (gradient masking); a
    model with no gradient path to its input (a hard vote) counts as zero everywhere."""
    from robustlab.attacks.base import input_gradient
    from robustlab.attacks.losses import cross_entropy

    zero = bad = 0
    with attack_mode(model):
        for i in range(0, len(x), batch_size):
            try:
                g, _, _ = input_gradient(model, x[i : i + batch_size], y[i : i + batch_size], cross_entropy)
            except NoGradientError:  # no gradient path at all (a hard vote): the gradient is zero at every point
                zero += len(x[i : i + batch_size])
                continue
            flat = g.reshape(g.shape[0], -1)
            finite = torch.isfinite(flat).all(dim=1)
            bad += int((~finite).sum())
            zero += int(((flat == 0).all(dim=1) & finite).sum())
    return {"zero_grad_fraction": zero / len(x), "nonfinite_grad_fraction": bad / len(x)}
