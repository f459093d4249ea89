"""The training loop: method-agnostic, deterministic, resumable and data-parallel.

Determinism and exact resume come from stateless randomness: the data order of epoch e is a permutation
seeded by (seed, e); augmentation and every random number drawn inside step s (attack starts, dropout) come
from generators reseeded with (seed, e, s). A checkpoint therefore needs only the weights, the optimizer
state and the position; the learning rate is a pure function of progress.

Checkpoints are committed in two phases: the optimizer state goes to ``optim-<step>.safetensors``, then
``last.safetensors`` (the weights, whose metadata holds the trainer state and names that optimizer file)
replaces the old one atomically. A kill at any moment leaves a consistent, loadable pair. Weights of modules an
objective owns (``Objective.modules``, e.g. ASCL's projection head) travel in the optimizer file under the
``objective_module.`` prefix, so they are committed with the same pair.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from robustlab.attacks.config import AttackConfig, build_attack
from robustlab.core.errors import CheckpointError, ConfigError
from robustlab.core.rng import data_shard, derive_seed
from robustlab.core.threat import ThreatModel
from robustlab.data import augment, load_dataset, load_user_data
from robustlab.data.resolve import AnyData
from robustlab.evaluation.robust import NamedAttack, robust_flags
from robustlab.io.atomic import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
from robustlab.io.checkpoint import commit_checkpoint, load_weights, read_sidecar, save_weights
from robustlab.io.hashing import stable_config_hash
from robustlab.models import create_model
from robustlab.runs.folder import SCALER_FILE
from robustlab.runs.user_model import build_model
from robustlab.training.checkpointing import (
    optimizer_from_tensors,
    optimizer_to_tensors,
    read_training_state,
    require_same_config,
)
from robustlab.training.config import TrainConfig
from robustlab.training.objectives import Objective, create_objective
from robustlab.training.schedules import lr_factor
from robustlab.utils import distributed as D
from robustlab.utils.device import autocast_context, effective_bf16, resolve_device
from robustlab.utils.progress import Progress

logger = logging.getLogger(__name__)

# Keys whose change does not invalidate a run's resume (more epochs, other thread count, another device).
_RESUMABLE_CHANGES = {"epochs", "threads", "device", "tensorboard"}
# Prefix of an objective-owned module's weights inside the optimizer file.
_MODULE_PREFIX = "objective_module."


def config_hash(cfg: TrainConfig) -> str:
    """Hash of the parts of a config that determine the trained weights step by step."""
    data = cfg.model_dump(mode="json")
    for key in _RESUMABLE_CHANGES:
        data.pop(key, None)
    return stable_config_hash(data)


def resolved_objective_params(objective: Objective) -> dict[str, Any]:
    """Every parameter of ``objective`` including its defaults (JSON form). Stored in the trainer state so that a
    resume notices a changed default, which ``config_hash`` (explicit settings only, kept stable) cannot."""
    return json.loads(json.dumps(objective.params.model_dump(mode="json"), sort_keys=True))


def changed_objective_params(state: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Parameters whose resolved value differs between a stored trainer state and now, as ``name: old -> new``.
    Empty when they agree or when the state predates resolved parameters (nothing to compare)."""
    stored = state.get("objective_params")
    if stored is None:
        return []
    keys = sorted(set(stored) | set(current))
    return [f"{k}: {stored.get(k, '<absent>')!r} -> {current.get(k, '<absent>')!r}"
            for k in keys if stored.get(k, "<absent>") != current.get(k, "<absent>")]


@dataclass
class TrainSummary:
    """What a finished (or resumed-and-finished) run reports."""

    run_dir: Path
    epochs: int
    best_epoch: int | None
    best_val_robust: float | None
    last_metrics: dict[str, Any]
    seconds: float


def build_optimizer(cfg: TrainConfig, model: nn.Module, extra: nn.Module | None = None) -> torch.optim.Optimizer:
    """SGD, Adam or RAdam over all trainable parameters, optionally in Lookahead; ``extra`` (an objective's own
    module) is a second param group."""
    o = cfg.optimizer
    params: list[Any] = [p for p in model.parameters() if p.requires_grad]
    if extra is not None:
        params = [{"params": params}, {"params": [p for p in extra.parameters() if p.requires_grad]}]
    opt: torch.optim.Optimizer
    if o.name == "sgd":
        opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)
    elif o.name == "radam":
        opt = torch.optim.RAdam(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    if o.lookahead is not None:
        from robustlab.training.lookahead import Lookahead

        opt = Lookahead(opt, k=o.lookahead.k, alpha=o.lookahead.alpha)
    return opt


class Trainer:
    """Trains ``cfg.model`` with ``cfg.objective`` into ``run_dir``; ``fit()`` resumes where a run stopped."""

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, *, resume: bool = True, show_progress: bool = True):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.resume = resume
        self.dist = D.init_distributed()
        self.show_progress = show_progress and self.dist.is_main
        if cfg.batch_size % self.dist.world:
            raise ConfigError(f"batch_size {cfg.batch_size} must be divisible by the {self.dist.world} processes")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.train_data, self.val_data = self._load_data()
        self.info = self.train_data.info
        self.device = resolve_device(cfg.device)
        self.objective = create_objective(cfg.objective)
        if cfg.model.name is not None:  # settled once from the training data (CARSO's layers: auto), then recorded
            kwargs = self.objective.prepare_model_kwargs(cfg.model.name, dict(cfg.model.kwargs), self.train_data,
                                                         seed=cfg.seed, device=self.device)
            if kwargs != cfg.model.kwargs:
                cfg = self.cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"kwargs": kwargs})})
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        self.model = self._build_model().to(self.device)
        example = self.train_data.float_images(torch.arange(min(2, len(self.train_data)))).to(self.device)
        self.objective_module = self.objective.modules(self.model, example)
        if self.objective_module is not None:
            self.objective_module.to(self.device)
        # What is trained: the model plus the objective's module (train mode, gradient averaging, clipping).
        self.trainable: nn.Module = (self.model if self.objective_module is None
                                     else nn.ModuleList([self.model, self.objective_module]))
        self.optimizer = build_optimizer(cfg, self.model, self.objective_module)
        n = len(self.train_data)
        self.steps_per_epoch = n // cfg.batch_size
        if cfg.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise ConfigError(f"the training set ({n} images) is smaller than one batch ({cfg.batch_size})")
        self.hash = config_hash(cfg)
        self.objective_params = resolved_objective_params(self.objective)
        self.tensorboard = None
        if cfg.tensorboard and self.dist.is_main:  # fails here, before any training, when the package is missing
            from robustlab.training.tensorboard import TensorBoardLogger

            self.tensorboard = TensorBoardLogger(self.run_dir)

    # ----------------------------------------------------------------------------------------------- data
    def _build_model(self) -> nn.Module:
        """The registry model for the data, or the user's factory called with its args."""
        m = self.cfg.model
        if m.factory is not None:
            return build_model(m.factory, m.args)
        assert m.name is not None
        return create_model(m.name, self.info, **m.kwargs)

    def _load_data(self) -> tuple[AnyData, AnyData | None]:
        d = self.cfg.data
        if d.path is not None:
            return self._load_user_data()
        assert d.dataset is not None
        train = load_dataset(d.dataset, "train", root=d.root, val_size=d.val_size)
        if d.train_subset:
            train = train.subset(d.train_subset)
        val = None
        if d.val_size > 0:
            val = load_dataset(d.dataset, "val", root=d.root, val_size=d.val_size)
            val = val.subset(min(self.cfg.validation.n, len(val)))
        return train, val

    def _load_user_data(self) -> tuple[AnyData, AnyData | None]:
        """A user's file: train rows and the fixed validation holdout, a table scaled by the training rows' scaler."""
        d = self.cfg.data
        assert d.path is not None
        label = d.label_column or "label"
        train = load_user_data(d.path, "train", label_column=label, val_size=d.val_size)
        if d.train_subset:
            train = train.subset(min(d.train_subset, len(train)))
        val = None
        if d.val_size > 0:
            scaler = getattr(train, "scaler", None)
            val = load_user_data(d.path, "val", label_column=label, val_size=d.val_size, scaler=scaler)
            val = val.subset(min(self.cfg.validation.n, len(val)))
        return train, val

    def _batch(self, perm: torch.Tensor, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The rank's slice of global batch ``step`` of ``epoch``, augmented identically on every rank."""
        b = self.cfg.batch_size
        idx = perm[step * b : (step + 1) * b]
        x = self.train_data.float_images(idx)
        y = self.train_data.labels[idx]
        if self.cfg.data.augment:
            gen = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "aug", epoch, step))
            x = augment(x, self.cfg.data.augment, gen)
        local = b // self.dist.world
        r = self.dist.rank
        return x[r * local : (r + 1) * local].to(self.device), y[r * local : (r + 1) * local].to(self.device)

    def _permutation(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "perm", epoch))
        return torch.randperm(len(self.train_data), generator=gen)

    # ------------------------------------------------------------------------------------------ checkpoints
    def _save_last(self, state: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        tensors, opt_meta = optimizer_to_tensors(self.optimizer)
        if self.objective_module is not None:
            tensors.update({_MODULE_PREFIX + k: v for k, v in self.objective_module.state_dict().items()})
        commit_checkpoint(self.ckpt_dir, self.model, tensors, {**state, "optimizer_meta": opt_meta},
                          step=state["global_step"], state_key="trainer_state", meta=self._weights_meta(),
                          sidecar_meta={"format": "robustlab-optimizer-v1"})

    def _save_best(self, epoch: int, val: dict[str, float]) -> None:
        if not self.dist.is_main:
            return
        meta = self._weights_meta(epoch=epoch, **{f"val_{k}": v for k, v in val.items()})
        sha = save_weights(self.ckpt_dir / "best.safetensors", self.model, meta)
        atomic_write_json(self.ckpt_dir / "best.json", {"epoch": epoch, "sha256": sha, **val})

    def _weights_meta(self, **extra: Any) -> dict[str, Any]:
        m, d = self.cfg.model, self.cfg.data
        model: dict[str, Any] = ({"model": m.name, "model_kwargs": json.dumps(m.kwargs, sort_keys=True)}
                                 if m.factory is None else
                                 {"model": m.factory, "model_factory": m.factory,
                                  "model_args": json.dumps(m.args or {}, sort_keys=True)})
        data = {} if d.path is None else {"data_path": str(Path(d.path).resolve()),
                                          "dataset_info": json.dumps(dataclasses.asdict(self.info))}
        return {**model, **data, "dataset": self.info.name, "run": self.cfg.name, "config_hash": self.hash, **extra}

    def _try_resume(self) -> dict[str, Any] | None:
        last = self.ckpt_dir / "last.safetensors"
        state = read_training_state(last, "trainer_state", "robustlab training") if self.resume else None
        if state is None:
            return None
        require_same_config(state, self.hash, self.run_dir, "use a new run name or --fresh to start over")
        if "objective_params" not in state:
            warnings.warn(f"{last} predates stored objective parameters: a default changed since cannot be detected; "
                          "resuming with today's defaults", RuntimeWarning, stacklevel=2)
            state["objective_params"] = self.objective_params
        changed = changed_objective_params(state, self.objective_params)
        if changed:
            raise ConfigError(
                f"run folder {self.run_dir} was trained with other values of objective "
                f"{self.cfg.objective.name!r} parameters (a default changed since): {'; '.join(changed)}. Set them "
                "explicitly to resume as trained, or use a new run name or --fresh to start over"
            )
        load_weights(last, self.model, expected={"dataset": self.info.name})
        tensors = read_sidecar(self.ckpt_dir, state)
        module_sd = {k[len(_MODULE_PREFIX):]: v for k, v in tensors.items() if k.startswith(_MODULE_PREFIX)}
        if (self.objective_module is None) != (not module_sd):
            raise CheckpointError(f"objective {self.cfg.objective.name!r} and the checkpoint in {self.ckpt_dir} "
                                  "disagree on whether the objective owns trainable modules (foreign run folder)")
        if self.objective_module is not None:
            self.objective_module.load_state_dict(module_sd, strict=True)
        optimizer_from_tensors(self.optimizer, {k: v.to(self.device) for k, v in tensors.items()
                                                if not k.startswith(_MODULE_PREFIX)}, state["optimizer_meta"])
        self.objective.load_state_dict(state.get("objective", {}))
        if self.dist.is_main and state["epoch"] >= self.cfg.epochs:
            logger.info("%s is already trained to epoch %d of %d; nothing to train", self.run_dir, state["epoch"],
                        self.cfg.epochs)
        elif self.dist.is_main:
            logger.info("resuming %s from its last checkpoint: epoch %d of %d, step %d of %d", self.run_dir,
                        state["epoch"] + 1, self.cfg.epochs, state["step"], self.steps_per_epoch)
        return state

    # ------------------------------------------------------------------------------------------- validation
    def validation_attack_config(self) -> AttackConfig | None:
        """The validation attack: as configured, else PGD-10 at the training threat model."""
        if self.cfg.validation.attack is not None:
            return self.cfg.validation.attack
        train_attack = self.cfg.objective.attack
        if train_attack is None:
            return None
        return AttackConfig(name="pgd", norm=train_attack.norm, eps=train_attack.eps, steps=10)

    def validate(self, epoch: int) -> dict[str, float]:
        """Clean and robust accuracy on the held-out validation split (sharded across ranks)."""
        assert self.val_data is not None
        n = len(self.val_data)
        w, r = self.dist.world, self.dist.rank
        local = n // w if n % w == 0 else n
        lo = r * local if n % w == 0 else 0
        idx = torch.arange(lo, lo + local)
        x, y = self.val_data.float_images(idx).to(self.device), self.val_data.labels[idx].to(self.device)
        attacks = []
        acfg = self.validation_attack_config()
        if acfg is not None:
            extra = {"early_stop": True} if acfg.name in ("pgd", "bim") else {}
            attack = build_attack(acfg, self.model, **extra)
            attacks.append(NamedAttack(acfg.name, attack, ThreatModel(acfg.norm, acfg.eps), {}))
        torch.manual_seed(derive_seed(self.cfg.seed, "val", epoch))
        shard = data_shard(w, r) if n % w == 0 else nullcontext()
        with shard:
            clean, flags, _ = robust_flags(self.model, x, y, attacks, batch_size=self.cfg.validation.batch_size)
        counts = [float(clean.sum()), float(flags[attacks[0].name].sum()) if attacks else 0.0, float(local)]
        if n % w == 0:
            counts = D.all_reduce_sum(counts, self.dist)
        out = {"clean_acc": counts[0] / counts[2]}
        if attacks:
            out["robust_acc"] = counts[1] / counts[2]
        return out

    def _log_tensorboard(self, epoch: int, row: dict[str, Any]) -> None:
        """Scalars of the epoch row and a grid of the first validation (else training) images under the
        validation attack."""
        from robustlab.training.tensorboard import GRID_N

        assert self.tensorboard is not None
        self.tensorboard.log_epoch(epoch, row)
        data = self.val_data if self.val_data is not None else self.train_data
        idx = torch.arange(min(GRID_N, len(data)))
        x, y = data.float_images(idx).to(self.device), data.labels[idx].to(self.device)
        acfg = self.validation_attack_config()
        attack = build_attack(acfg, self.model) if acfg is not None else None
        self.tensorboard.log_examples(epoch, self.model, x, y, attack)

    # ------------------------------------------------------------------------------------------------- fit
    def fit(self) -> TrainSummary:
        """Train to ``cfg.epochs``, resuming from ``last`` if present; returns the summary."""
        cfg = self.cfg
        t0 = time.perf_counter()
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config_text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
            atomic_write_text(self.run_dir / "config.yaml", config_text)
            scaler = getattr(self.train_data, "scaler", None)
            if scaler is not None:  # a table's feature scaling, fitted on the training rows: evaluation reuses it
                scaler.save(self.run_dir / SCALER_FILE)
        state = self._try_resume() or {
            "epoch": 0, "step": 0, "global_step": 0, "best": None, "best_epoch": None, "sums": {}, "count": 0.0,
            "config_hash": self.hash, "objective_params": self.objective_params,
        }
        metrics_path = self.run_dir / "metrics.jsonl"
        if self.dist.is_main:  # drop lines a killed run wrote after its last checkpoint
            kept = [row for row in read_jsonl(metrics_path) if row.get("epoch", 0) < state["epoch"]]
            atomic_write_text(metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        last_metrics: dict[str, Any] = {}
        bf16 = effective_bf16(self.device, cfg.bf16)
        autocast = autocast_context(self.device, bf16)
        self.trainable.train()
        lr = cfg.optimizer.lr
        for epoch in range(state["epoch"], cfg.epochs):
            perm = self._permutation(epoch)
            sums: dict[str, float] = dict(state["sums"])
            count = float(state["count"])
            start_step = state["step"]
            epoch_t0 = time.perf_counter()
            desc = f"epoch {epoch + 1}/{cfg.epochs}"
            with Progress(self.steps_per_epoch, desc, enabled=self.show_progress, unit="img",
                          per_item=cfg.batch_size, initial=start_step) as bar:
                for step in range(start_step, self.steps_per_epoch):
                    progress = epoch + step / self.steps_per_epoch
                    lr = cfg.optimizer.lr * lr_factor(cfg.schedule, progress, cfg.epochs)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                    x, y = self._batch(perm, epoch, step)
                    torch.manual_seed(derive_seed(cfg.seed, "step", epoch, step))
                    self.objective.set_progress(progress)
                    self.trainable.train()
                    with data_shard(self.dist.world, self.dist.rank), autocast:
                        loss, metrics = self.objective(self.model, x, y)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"non-finite loss at epoch {epoch} step {step}: {float(loss)}")
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    D.average_gradients(self.trainable, self.dist)
                    if cfg.grad_clip:
                        torch.nn.utils.clip_grad_norm_(self.trainable.parameters(), cfg.grad_clip)
                    self.optimizer.step()
                    self.objective.after_step(self.model)
                    D.broadcast_buffers(self.trainable, self.dist)
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + v * len(x)
                    count += len(x)
                    state.update(step=step + 1, global_step=state["global_step"] + 1, sums=sums, count=count,
                                 objective=self.objective.state_dict())
                    shown = {k: metrics[k] for k in ("acc", "adv_acc") if k in metrics}
                    bar.advance(1, loss=metrics.get("loss", float(loss.detach())), **shown, lr=lr)
                    every = cfg.checkpoint_every_steps
                    if every and state["global_step"] % every == 0 and step + 1 < self.steps_per_epoch:
                        self._save_last(state)
            train_secs = time.perf_counter() - epoch_t0
            keys = sorted(sums)
            totals = D.all_reduce_sum([sums[k] for k in keys] + [count], self.dist)
            row: dict[str, Any] = {"epoch": epoch, "lr": lr, "bf16": bf16}
            row.update({f"train_{k}": s / totals[-1] for k, s in zip(keys, totals)})
            row["train_images_per_s"] = (self.steps_per_epoch - start_step) * cfg.batch_size / max(train_secs, 1e-9)
            if self.val_data is not None and ((epoch + 1) % cfg.validation.every == 0 or epoch + 1 == cfg.epochs):
                val = self.validate(epoch)
                row.update({f"val_{k}": v for k, v in val.items()})
                score = val.get("robust_acc", val["clean_acc"])
                if state["best"] is None or score > state["best"]:
                    state["best"], state["best_epoch"] = score, epoch
                    self._save_best(epoch, val)
            if self.tensorboard is not None:
                self._log_tensorboard(epoch, row)
            self.trainable.train()
            if self.dist.is_main:
                append_jsonl(metrics_path, row)
            state.update(epoch=epoch + 1, step=0, sums={}, count=0.0)
            self._save_last(state)
            last_metrics = row
        if self.val_data is None and self.dist.is_main:  # no held-out split: the last weights are the only choice
            self._save_best(cfg.epochs - 1, {})
        if self.tensorboard is not None:
            self.tensorboard.close()
        D.shutdown(self.dist)
        return TrainSummary(self.run_dir, cfg.epochs, state["best_epoch"], state["best"], last_metrics,
                            time.perf_counter() - t0)
