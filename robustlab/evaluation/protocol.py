"""An evaluation protocol from config: which split, how many points, which attacks, which sanity checks."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from robustlab.attacks.spec import build_attack
from robustlab.attacks.wrappers import TransferAttack
from robustlab.data import ImageData
from robustlab.errors import ConfigError
from robustlab.evaluation import labels
from robustlab.evaluation.result import EvaluationResult
from robustlab.evaluation.robust import NamedAttack, accuracy_of, robust_flags
from robustlab.evaluation.sanity import black_box_beats_white_box, large_eps_collapse, run_sanity_checks
from robustlab.threat import ThreatModel
from robustlab.training.config import AttackConfig, Strict
from robustlab.utils.device import model_device
from robustlab.utils.rng import derive_seed

logger = logging.getLogger(__name__)


class AutoAttackConfig(Strict):
    """AutoAttack (Croce & Hein 2020) run exactly as the reference does, on the first ``n`` evaluation points."""

    version: Literal["standard", "plus", "rand", "custom"] = "standard"
    norm: Literal["linf", "l2", "l1"] = "linf"
    eps: float = Field(gt=0)
    n: int | None = Field(default=None, ge=1)
    attacks: list[str] | None = None
    attack_kwargs: dict[str, dict[str, Any]] | None = None


class EvalConfig(Strict):
    """Evaluation protocol: attacks run in order, each on the points all earlier ones failed on; optionally
    AutoAttack on the first ``autoattack.n`` of the same points, and an eps sweep: the first attack re-run
    alone at each ``eps_sweep`` radius on the first ``eps_sweep_n`` points (all points when None)."""

    split: Literal["test", "val"] = "test"
    n: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=500, ge=1)
    seed: int = 0
    attacks: list[AttackConfig] = Field(default_factory=list)
    autoattack: AutoAttackConfig | None = None
    large_eps: float | None = Field(default=None, gt=0)
    grad_check_n: int = Field(default=200, ge=0)
    eps_sweep: list[float] = Field(default_factory=list)
    eps_sweep_n: int | None = Field(default=None, ge=1)

    @field_validator("eps_sweep")
    @classmethod
    def _positive_distinct(cls, values: list[float]) -> list[float]:
        bad = [v for v in values if not (math.isfinite(v) and v > 0)]
        if bad:
            raise ValueError(f"every eps_sweep radius must be a finite number > 0, got {bad}")
        if len(set(values)) != len(values):
            raise ValueError(f"eps_sweep radii must be distinct, got {values}")
        return values

    @model_validator(mode="after")
    def _something_to_run(self) -> EvalConfig:
        if not self.attacks and self.autoattack is None:
            raise ValueError("an evaluation needs 'attacks' or 'autoattack'")
        return self


def attack_label(cfg: AttackConfig) -> str:
    """Human-readable label naming every setting that is set: ``pgd-50x3 step_size=0.01 linf eps=0.3``."""
    return labels.attack_label(cfg.model_dump(exclude_none=True))


def surrogate_view(model: nn.Module, name: str) -> nn.Module:
    """The model seen through surrogate ``name`` (weights shared). CARSO models offer their aggregations."""
    from robustlab.purification.carso.evaluation import AggregationView
    from robustlab.purification.carso.model import carso_of

    try:
        carso_of(model)
    except ConfigError:
        raise ConfigError(f"attack surrogate {name!r}: this model has no surrogate views (CARSO models have one per "
                          "aggregation: peel, logit, prob, count)") from None
    return AggregationView(model, name)


def first_attack_config(cfg: EvalConfig) -> AttackConfig:
    """The protocol's first attack; PGD-50 at AutoAttack's threat model for an AutoAttack-only protocol.

    The large-eps sanity check and the eps sweep re-run this attack at other radii."""
    if cfg.attacks:
        return cfg.attacks[0]
    assert cfg.autoattack is not None
    return AttackConfig(name="pgd", norm=cfg.autoattack.norm, eps=cfg.autoattack.eps, steps=50)


def named_attacks(model: nn.Module, cfgs: list[AttackConfig]) -> list[NamedAttack]:
    """Build each configured attack with evaluation settings (early stop on fooled points where supported)."""
    out = []
    for cfg in cfgs:
        extra: dict[str, Any] = {"early_stop": True} if cfg.name in ("pgd", "bim") else {}
        if cfg.surrogate:  # crafted on the view, judged (by robust_flags) on the model itself
            attack = TransferAttack(build_attack(cfg.model_copy(update={"surrogate": None}),
                                                 surrogate_view(model, cfg.surrogate), **extra))
        else:
            attack = build_attack(cfg, model, **extra)
        settings = cfg.model_dump(exclude_none=True, exclude={"norm", "eps"})
        out.append(NamedAttack(attack_label(cfg), attack, ThreatModel(cfg.norm, cfg.eps), settings))
    return out


def run_protocol(
    model: nn.Module,
    data: ImageData,
    cfg: EvalConfig,
    *,
    model_info: dict[str, Any] | None = None,
    show_progress: bool = False,
    state_dir: Path | None = None,
) -> EvaluationResult:
    """Evaluate ``model`` on ``data`` (already the chosen split) under ``cfg``; includes the sanity checks.

    With ``state_dir``, AutoAttack writes a state file there after every attack and batch, so an interrupted
    evaluation resumes where it stopped.
    """
    n = len(data) if cfg.n is None else min(cfg.n, len(data))
    indices = torch.arange(n)
    device = model_device(model)
    x, y = data.float_images(indices).to(device), data.labels[indices].to(device)
    model.eval()
    attacks = named_attacks(model, cfg.attacks)
    torch.manual_seed(derive_seed(cfg.seed, "eval"))
    t0 = time.perf_counter()
    clean, flags, timings = robust_flags(model, x, y, attacks, batch_size=cfg.batch_size, show_progress=show_progress)
    timings["total"] = time.perf_counter() - t0
    sanity: dict[str, Any] = {}
    aa_flags: dict[str, Tensor] | None = None
    if cfg.autoattack is not None:
        aa_flags, aa_timings = _run_autoattack(model, x, y, clean, cfg, show_progress, state_dir)
        flags.update(aa_flags)
        timings.update(aa_timings)
    large_eps_accuracy = None
    if cfg.large_eps is not None:
        first_attack = first_attack_config(cfg)
        big_eps = min(cfg.large_eps, 1.0) if first_attack.norm == "linf" else cfg.large_eps
        update: dict[str, Any] = {"eps": big_eps}
        if first_attack.step_size is not None:  # scale the step so the same step count can cross the larger ball
            update["step_size"] = first_attack.step_size * big_eps / first_attack.eps
        big = first_attack.model_copy(update=update)
        torch.manual_seed(derive_seed(cfg.seed, "large-eps"))
        _, big_flags, _ = robust_flags(model, x, y, named_attacks(model, [big]), batch_size=cfg.batch_size)
        large_eps_accuracy = accuracy_of(next(iter(big_flags.values())))
        sanity["large_eps"] = big.eps
    if cfg.grad_check_n:
        k = min(cfg.grad_check_n, n)
        bb_flags = None if aa_flags is None else {name.split(": ")[-1]: m for name, m in aa_flags.items()}
        sanity.update(run_sanity_checks(model, x[:k], y[:k], flags_by_attack=None, batch_size=cfg.batch_size,
                                        large_eps_accuracy=large_eps_accuracy))
        if bb_flags is not None:  # AutoAttack's cumulative masks, all on the same points: did Square beat APGD/FAB?
            sanity.update(black_box_beats_white_box(bb_flags))
            if sanity["black_box_beats_white_box"]:
                sanity["warnings"].append(f"Square broke {sanity['black_box_only_count']} points the white-box "
                                          "attacks did not: gradients are likely masked")
    elif large_eps_accuracy is not None:
        sanity.update(large_eps_collapse(large_eps_accuracy))
    sweep = None
    if cfg.eps_sweep:
        from robustlab.evaluation.sweep import run_eps_sweep

        sweep = run_eps_sweep(model, x, y, cfg, show_progress=show_progress)
        timings.update({f"eps-sweep eps={key}": t for key, t in sweep.timings.items()})
    robust = {name: accuracy_of(mask) for name, mask in flags.items()}
    worst_mask = clean.clone()
    for mask in flags.values():
        worst_mask[: len(mask)] &= mask  # AutoAttack may cover only the first points; worst case over what ran
    worst_n = min((len(m) for m in flags.values()), default=n)
    worst = accuracy_of(worst_mask[:worst_n])
    per_sample = {"clean": clean.tolist(), **{k: v.tolist() for k, v in flags.items()}}
    first = cfg.attacks[0] if cfg.attacks else cfg.autoattack  # type: ignore[assignment]
    protocol = [a.describe() for a in attacks]
    if cfg.autoattack is not None:
        aa_desc = cfg.autoattack.model_dump(exclude_none=True)
        protocol.append({"name": f"autoattack-{cfg.autoattack.version}", **aa_desc})
    return EvaluationResult(
        dataset=data.info.name, split=data.split, n=n, indices=indices.tolist(),
        threat=ThreatModel(first.norm, first.eps).to_dict(), protocol=protocol,
        clean_accuracy=accuracy_of(clean), robust_accuracy=robust, worst_case_accuracy=worst, worst_case_n=worst_n,
        per_sample=per_sample, seed=cfg.seed, timings=timings, sanity=sanity, model=model_info or {},
        eps_sweep=sweep.accuracy if sweep else {}, eps_sweep_n=sweep.n if sweep else None,
        eps_sweep_attack=sweep.attack if sweep else None,
    )


def _run_autoattack(
    model: nn.Module, x: Tensor, y: Tensor, clean: Tensor, cfg: EvalConfig, show_progress: bool,
    state_dir: Path | None,
) -> tuple[dict[str, Tensor], dict[str, float]]:
    """AutoAttack on the first ``autoattack.n`` points, standalone as in the reference; cumulative flags per attack."""
    from robustlab.attacks.autoattack import AutoAttack

    aa = cfg.autoattack
    assert aa is not None
    k = len(x) if aa.n is None else min(aa.n, len(x))
    state_file = None
    if state_dir is not None:
        key = f"{aa.version}-{aa.norm}-{aa.eps:.6g}-n{k}-seed{cfg.seed}"
        state_file = Path(state_dir) / f"autoattack-{key}.state.safetensors"
        if state_file.exists():
            logger.info("resuming AutoAttack from its state file %s (attacks and batches done are not re-run)",
                        state_file)
    runner = AutoAttack(model, ThreatModel(aa.norm, aa.eps), version=aa.version, attacks=aa.attacks,
                        attack_kwargs=aa.attack_kwargs, seed=cfg.seed, state_file=state_file,
                        batch_size=cfg.batch_size, show_progress=show_progress)
    result = runner.run(x[:k], y[:k])
    label = f"autoattack-{aa.version} {aa.norm} eps={aa.eps:.4g} n={k}"
    flags = {f"{label}: {name}": mask for name, mask in result.robust.items()}
    if aa.version != "rand" and not torch.equal(result.clean, clean[:k]):  # rand: stochastic clean predictions
        raise RuntimeError("AutoAttack's clean predictions differ from the evaluation's: the model is stochastic; "
                           "use version='rand' and repeated evaluation")
    timings = {f"{label}: {name}": t for name, t in result.timings.items()}
    return flags, timings
