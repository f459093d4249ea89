"""Purifier training for AToP: pre-training with the generative loss alone, then AToP fine-tuning with
``l_g + lambda * CE`` of the frozen classifier. Deterministic and resumable like the Trainer.

Every random number of step s of epoch e in phase p (masks, noise, attack starts) comes from torch's global generator
reseeded with ``derive_seed(seed, "atop", p, e, s)``, and the data order of (p, e) from ``derive_seed(seed, "perm",
p, e)``, so a checkpoint holds only weights, optimizer states and the position. Commit order as the Trainer's: the
optimizer states and the discriminator go to ``optim-<step>.safetensors``, then ``last.safetensors`` (purifier
weights; metadata holds the state and that file's sha256) replaces the old one atomically, then ``last.json``. A run
killed at any instant resumes to the same weights. Each phase's end also writes ``pretrained`` / ``finetuned``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.attacks.config import build_attack
from robustlab.core.errors import CheckpointError, ConfigError, InputError
from robustlab.core.rng import derive_seed
from robustlab.data import ImageData, dataset_info, load_dataset
from robustlab.io.atomic import atomic_write_json
from robustlab.io.checkpoint import commit_checkpoint, load_weights, read_metadata, read_sidecar, save_weights
from robustlab.io.hashing import stable_config_hash
from robustlab.purification.atop.config import AToPConfig
from robustlab.purification.atop.losses import atop_loss, discriminator_loss, generative_loss
from robustlab.purification.atop.pipeline import AToPDefense, PurifierPass, purify
from robustlab.purification.atop.purifiers import PatchDiscriminator, Purifier, build_purifier
from robustlab.purification.common import freeze_classifier
from robustlab.training.checkpointing import (
    optimizer_from_tensors,
    optimizer_to_tensors,
    read_training_state,
    require_same_config,
)
from robustlab.utils.progress import Progress

PHASES = ("pretrain", "finetune")
FORMAT = "robustlab-atop-purifier-v1"


def config_hash(cfg: AToPConfig) -> str:
    """Hash of everything that determines the weights step by step (the run name and data root excluded)."""
    return stable_config_hash(cfg.model_dump(mode="json", exclude={"name", "data_root"}))


def purifier_metadata(cfg: AToPConfig, purifier: Purifier, **extra: Any) -> dict[str, Any]:
    """What a purifier file records so that it is only ever loaded for the dataset and shape it was built for."""
    return {"atop_format": FORMAT, "dataset": cfg.dataset, "purifier": purifier.kind,
            "purifier_width": cfg.purifier.width, "image_shape": json.dumps(list(purifier.image_shape)),
            "transform": json.dumps(cfg.transform.model_dump()), "config_hash": config_hash(cfg), **extra}


def load_purifier(path: str | Path, dataset: str) -> tuple[Purifier, dict[str, str]]:
    """Rebuild and load a purifier file for ``dataset``; refuses files of other datasets or of other formats."""
    meta = read_metadata(path)
    if meta.get("atop_format") != FORMAT:
        raise CheckpointError(f"{path} is not an AToP purifier checkpoint (no {FORMAT!r} marker)")
    if meta.get("dataset") != dataset:
        raise InputError(f"{path} holds a purifier trained on {meta.get('dataset')!r}, not {dataset!r}; train one "
                         f"for {dataset!r} (its images and statistics differ)")
    purifier = build_purifier(meta["purifier"], json.loads(meta["image_shape"]), width=int(meta["purifier_width"]))
    load_weights(path, purifier, expected={"dataset": dataset})
    return purifier, meta


def classifier_digest(model: nn.Module) -> str:
    """sha256 of the classifier's tensors (names, shapes, values): a resumed run must defend the same classifier."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class StepTensors:
    """One step's tensors: the purifier's input x_in, the reconstruction target, x_hat and each pass."""

    x_in: Tensor
    target: Tensor
    x_hat: Tensor
    passes: list[PurifierPass]


@dataclass
class PurifierRun:
    """What a finished run reports."""

    run_dir: Path
    global_step: int
    last_metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


class PurifierTrainer:
    """Trains ``cfg``'s purifier in ``run_dir`` in front of a frozen ``classifier``; ``fit()`` resumes.

    ``data`` defaults to the dataset's train split (minus the validation holdout, first ``train_subset`` images).
    """

    def __init__(
        self,
        cfg: AToPConfig,
        classifier: nn.Module,
        run_dir: str | Path,
        *,
        data: ImageData | None = None,
        resume: bool = True,
        show_progress: bool = True,
    ) -> None:
        self.cfg, self.run_dir, self.resume, self.show_progress = cfg, Path(run_dir), resume, show_progress
        self.ckpt_dir = self.run_dir / "checkpoints"
        info = dataset_info(cfg.dataset)
        if data is None:
            loaded = load_dataset(cfg.dataset, "train", root=cfg.data_root, val_size=cfg.val_size)
            if not isinstance(loaded, ImageData):
                raise InputError(f"AToP purifies images; {cfg.dataset!r} is a table")
            data = loaded
        if data.info.name != info.name:
            raise InputError(f"data is {data.info.name!r} but the config trains a purifier for {info.name!r}")
        self.data = data.subset(min(cfg.train_subset, len(data))) if cfg.train_subset else data
        self.transform = cfg.transform.build()
        torch.manual_seed(derive_seed(cfg.seed, "init"))  # initial weights depend on the seed only
        self.purifier = build_purifier(cfg.purifier.kind, info.shape, width=cfg.purifier.width)
        sample = self.data.float_images(range(min(len(self.data), 4096)))
        self.purifier.start_at_mean(sample.mean(dim=(0, 2, 3)))
        self.disc = (PatchDiscriminator(info.shape, cfg.purifier.disc_width) if cfg.purifier.kind == "gan" else None)
        self.classifier = freeze_classifier(classifier)
        self.defense = AToPDefense(self.transform, self.purifier, self.classifier, composite=cfg.transform.composite)
        self.hash = config_hash(cfg)
        self.classifier_sha = classifier_digest(self.classifier)
        self.opt_g: torch.optim.Optimizer | None = None
        self.opt_d: torch.optim.Optimizer | None = None

    # ---------------------------------------------------------------------------------------------- pieces
    def _phase_settings(self, phase: str) -> Any:
        return self.cfg.pretrain if phase == "pretrain" else self.cfg.finetune

    def steps_per_epoch(self, phase: str) -> int:
        """Full batches per epoch (capped by ``max_steps_per_epoch``)."""
        s = self._phase_settings(phase)
        n = len(self.data) // s.batch_size
        if n == 0:
            raise ConfigError(f"{phase}.batch_size {s.batch_size} exceeds the {len(self.data)} training images")
        return min(n, s.max_steps_per_epoch) if s.max_steps_per_epoch else n

    def _new_optimizers(self, phase: str) -> None:
        s = self._phase_settings(phase)
        self.opt_g = torch.optim.Adam(self.purifier.parameters(), lr=s.lr, betas=tuple(s.betas))
        self.opt_d = (torch.optim.Adam(self.disc.parameters(), lr=s.lr, betas=tuple(s.betas))
                      if self.disc is not None else None)

    def _batch(self, phase: str, epoch: int, step: int) -> tuple[Tensor, Tensor]:
        b = self._phase_settings(phase).batch_size
        gen = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "perm", phase, epoch))
        idx = torch.randperm(len(self.data), generator=gen)[step * b : (step + 1) * b]
        return self.data.float_images(idx), self.data.labels[idx]

    def adversarial_inputs(self, x: Tensor, y: Tensor) -> Tensor:
        """x' for fine-tuning: the configured attack on the classifier alone (released code) or on the whole
        pipeline (the paper's Eq. 9), with ``attack_eot`` EoT samples through the pipeline's randomness."""
        ft = self.cfg.finetune
        target = self.classifier if ft.attack_target == "classifier" else self.defense
        extra: dict[str, Any] = {"eot_samples": ft.attack_eot} if ft.attack_target == "pipeline" else {}
        return build_attack(ft.attack, target, **extra)(x, y)

    def forward_batch(self, phase: str, x: Tensor, y: Tensor) -> StepTensors:
        """The step's inputs and purifier passes, in the current RNG state: x_in (x' when fine-tuning on
        adversarial examples), the reconstruction target, the purified images and each pass's stages."""
        ft = self.cfg.finetune
        finetune = phase == "finetune"
        x_in = self.adversarial_inputs(x, y) if finetune and ft.variant == "adversarial" else x
        target = x if finetune and ft.recon_target == "clean" else x_in
        self.purifier.train()
        x_hat, passes = purify(self.purifier, self.transform, x_in, composite=self.cfg.transform.composite)
        return StepTensors(x_in, target, x_hat, passes)

    def generator_loss(self, phase: str, epoch: int, t: StepTensors, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        """``l_g(target)`` in pre-training; ``l_g(target) + lambda * CE(f(x_hat), y)`` in fine-tuning from
        ``ce_start_epoch`` on (the released code adds CE after epoch 2; the paper from the start, the default)."""
        ft = self.cfg.finetune
        gen, parts = generative_loss(t.passes, t.target, disc=self.disc, gan_weight=self.cfg.purifier.gan_weight,
                                     l1_weight=self.cfg.purifier.l1_weight)
        use_ce = phase == "finetune" and epoch >= ft.ce_start_epoch
        loss, loss_parts = atop_loss(gen, self.classifier(t.x_hat) if use_ce else None, y, ft.lam)
        return loss, {**parts, **loss_parts}

    def step(self, phase: str, epoch: int, step: int) -> dict[str, float]:
        """One optimisation step (D then G for the GAN purifier), reseeded from (seed, phase, epoch, step)."""
        assert self.opt_g is not None
        x, y = self._batch(phase, epoch, step)
        torch.manual_seed(derive_seed(self.cfg.seed, "atop", phase, epoch, step))
        t = self.forward_batch(phase, x, y)
        metrics: dict[str, float] = {}
        if self.disc is not None:
            assert self.opt_d is not None
            d_loss = discriminator_loss(self.disc, t.target, t.passes)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            metrics["d_loss"] = float(d_loss.detach())
        loss, parts = self.generator_loss(phase, epoch, t, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite purifier loss in {phase} epoch {epoch} step {step}: {float(loss)}")
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        if self.disc is not None:  # G's backward reaches D's weights; D is only ever stepped on its own loss
            self.disc.zero_grad(set_to_none=True)
        self.opt_g.step()
        return {**metrics, **parts, "loss": float(loss.detach())}

    # ------------------------------------------------------------------------------------------ checkpoints
    def _save(self, state: dict[str, Any], *, extra_copy: str | None = None) -> None:
        assert self.opt_g is not None
        tensors, g_meta = optimizer_to_tensors(self.opt_g)
        tensors = {f"g.{k}": v for k, v in tensors.items()}
        d_meta = None
        if self.disc is not None and self.opt_d is not None:
            d_tensors, d_meta = optimizer_to_tensors(self.opt_d)
            tensors.update({f"d.{k}": v for k, v in d_tensors.items()})
            tensors.update({f"disc.{k}": v for k, v in self.disc.state_dict().items()})
        commit_checkpoint(self.ckpt_dir, self.purifier, tensors, {**state, "g_meta": g_meta, "d_meta": d_meta},
                          step=state["global_step"], state_key="atop_state",
                          meta=purifier_metadata(self.cfg, self.purifier),
                          sidecar_meta={"format_detail": "robustlab-atop-optimizer-v1"})
        if extra_copy is not None:
            save_weights(self.ckpt_dir / f"{extra_copy}.safetensors", self.purifier,
                         purifier_metadata(self.cfg, self.purifier, phase=extra_copy))

    def _try_resume(self) -> dict[str, Any] | None:
        last = self.ckpt_dir / "last.safetensors"
        state = read_training_state(last, "atop_state", "AToP purifier training") if self.resume else None
        if state is None:
            return None
        require_same_config(state, self.hash, self.run_dir, "use another run folder or resume=False")
        if state.get("classifier_sha") != self.classifier_sha:
            raise ConfigError(f"run folder {self.run_dir} fine-tunes another classifier (weights digest "
                              f"{state.get('classifier_sha')} vs {self.classifier_sha}); pass the same classifier")
        load_weights(last, self.purifier, expected={"dataset": self.cfg.dataset})
        tensors = read_sidecar(self.ckpt_dir, state)
        self._new_optimizers(state["phase"])
        assert self.opt_g is not None
        optimizer_from_tensors(self.opt_g, {k[2:]: v for k, v in tensors.items() if k.startswith("g.")},
                               state["g_meta"])
        if self.disc is not None and self.opt_d is not None:
            self.disc.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("disc.")}, strict=True)
            optimizer_from_tensors(self.opt_d, {k[2:]: v for k, v in tensors.items() if k.startswith("d.")},
                                   state["d_meta"])
        return state

    # ------------------------------------------------------------------------------------------------ fit
    def fit(self, *, stop_after_steps: int | None = None) -> PurifierRun:
        """Run both phases to the end (or stop after ``stop_after_steps`` steps in this call, checkpointed)."""
        t0 = time.perf_counter()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.run_dir / "atop_config.json", self.cfg.model_dump(mode="json"))
        state = self._try_resume() or {"phase": PHASES[0], "epoch": 0, "step": 0, "global_step": 0,
                                        "config_hash": self.hash, "classifier_sha": self.classifier_sha}
        done_here = 0
        last: dict[str, float] = {}
        for phase in PHASES[PHASES.index(state["phase"]):]:
            settings = self._phase_settings(phase)
            if state["phase"] != phase:
                state.update(phase=phase, epoch=0, step=0)
                self._new_optimizers(phase)
            elif self.opt_g is None:
                self._new_optimizers(phase)
            n_steps = self.steps_per_epoch(phase) if settings.epochs else 0
            for epoch in range(state["epoch"], settings.epochs):
                desc = f"{phase} {epoch + 1}/{settings.epochs}"
                with Progress(n_steps, desc, enabled=self.show_progress, unit="img", per_item=settings.batch_size,
                              initial=state["step"]) as bar:
                    for step in range(state["step"], n_steps):
                        last = self.step(phase, epoch, step)
                        state.update(step=step + 1, global_step=state["global_step"] + 1)
                        bar.advance(1, **{k: v for k, v in last.items() if k in ("loss", "ce", "l1", "mse")})
                        done_here += 1
                        every = self.cfg.checkpoint_every_steps
                        stop = stop_after_steps is not None and done_here >= stop_after_steps
                        if (every and state["global_step"] % every == 0 and step + 1 < n_steps) or stop:
                            self._save(state)
                        if stop:
                            return PurifierRun(self.run_dir, state["global_step"], last, time.perf_counter() - t0)
                state.update(epoch=epoch + 1, step=0)
                self._save(state)
            state.update(epoch=settings.epochs, step=0)
            self._save(state, extra_copy="pretrained" if phase == "pretrain" else "finetuned")
        return PurifierRun(self.run_dir, state["global_step"], last, time.perf_counter() - t0)


__all__ = ["FORMAT", "PHASES", "PurifierRun", "PurifierTrainer", "StepTensors", "config_hash", "load_purifier",
           "purifier_metadata"]
