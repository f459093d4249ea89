"""Crafting adversarial examples for a run's first test points and saving them with their protocol."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.attacks.autoattack import AutoAttack
from robustlab.attacks.base import attack_mode, predict
from robustlab.attacks.config import AttackConfig, build_attack
from robustlab.core.config import parse_config
from robustlab.core.errors import InputError
from robustlab.core.rng import derive_seed
from robustlab.core.threat import ThreatModel, canonical_norm
from robustlab.data import as_dataset
from robustlab.io.atomic import ensure_writable
from robustlab.io.checkpoint import save_tensors
from robustlab.runs import load_run_points
from robustlab.runs.user_model import load_user_model
from robustlab.utils.device import model_device, resolve_device


@dataclass
class CraftedSet:
    """Adversarial examples written to ``path``: how many, under which protocol, and the accuracy on them."""

    path: Path
    n: int
    protocol: dict[str, Any]
    accuracy: float


def craft(model: nn.Module, x: Tensor, y: Tensor, attack: str, norm: str, eps: float, *,
          settings: dict[str, Any] | None = None, seed: int = 0,
          batch_size: int = 256) -> tuple[Tensor, dict[str, Any]]:
    """(x_adv, protocol): a registered attack with ``settings`` (checked against its constructor), or
    ``autoattack-<version>``, run over ``x`` in batches under ``seed``."""
    torch.manual_seed(derive_seed(seed, "attack"))
    if attack.startswith("autoattack-"):
        x_adv = AutoAttack(model, ThreatModel(canonical_norm(norm), eps), version=attack.split("-", 1)[1], seed=seed,
                           batch_size=batch_size).run(x, y).x_adv
        return x_adv, {"name": attack, "norm": norm, "eps": eps, "seed": seed}
    cfg = parse_config({"name": attack, "norm": norm, "eps": eps, **(settings or {})}, AttackConfig, "attack")
    built = build_attack(cfg, model)
    x_adv = torch.cat([built(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    return x_adv, {**cfg.model_dump(exclude_none=True), "seed": seed}


def attack_run(run: str | Path | None, out: str | Path, *, attack: str = "pgd", norm: str = "linf", eps: float = 0.3,
               n: int = 100, split: str = "test", which: str = "best", settings: dict[str, Any] | None = None,
               seed: int = 0, device: str = "auto", model: str | None = None, weights: str | Path | None = None,
               data: str | Path | None = None, model_args: dict[str, Any] | None = None, mean: Any = None,
               std: Any = None, label_column: str = "label") -> CraftedSet:
    """Attack the first ``n`` points of a run's ``split`` (or of ``data`` for a user's ``model``, as
    ``robustlab evaluate --model`` takes it) and save x_adv (float32 in [0, 1]), labels, predictions, indices and the
    protocol as safetensors at ``out``."""
    out = Path(out)
    ensure_writable(out.parent, "the adversarial examples")
    if model is not None:
        if data is None:
            raise InputError("attacking --model needs --data")
        net, info = load_user_model(model, args=model_args, weights=weights, mean=mean, std=std)
        net = net.to(resolve_device(device))
        ds = as_dataset(data, split, label_column=label_column)
        k = min(n, len(ds))
        x, y = ds.float_images(torch.arange(k)).to(model_device(net)), ds.labels[:k].to(model_device(net))
        meta = {"dataset": ds.info.name, "model": model, "checkpoint": str(weights or ""),
                "data_sha256": ds.sha256, "weights_sha256": info.get("weights_sha256", "")}
    elif run is not None:
        net, ckpt_meta, x, y = load_run_points(run, n, which=which, device=device, split=split)
        meta = {"dataset": ckpt_meta["dataset"], "model": ckpt_meta.get("model", ""), "checkpoint": str(run)}
    else:
        raise InputError("pass a run folder or checkpoint, or --model with --data")
    x_adv, protocol = craft(net, x, y, attack, norm, eps, settings=settings, seed=seed)
    with attack_mode(net):
        pred = predict(net, x_adv).argmax(dim=1)
    x_adv, y, pred = x_adv.cpu(), y.cpu(), pred.cpu()
    tensors = {"x_adv": x_adv.contiguous(), "labels": y.contiguous(), "predictions": pred.contiguous(),
               "indices": torch.arange(len(x_adv))}
    save_tensors(out, tensors, {"protocol": json.dumps(protocol), "split": split, **meta})
    return CraftedSet(out, len(x_adv), protocol, float((pred == y).float().mean()))
