"""An evaluation protocol from config: which split, how many points, which attacks, which sanity checks."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.core.rng import derive_seed
from robustlab.core.threat import ThreatModel
from robustlab.data.resolve import AnyData
from robustlab.evaluation.classifier_only import classifier_only_summary
from robustlab.evaluation.config import EvalConfig
from robustlab.evaluation.named import attack_label, first_attack_config, named_attacks, protocol_entries
from robustlab.evaluation.result import EvaluationResult
from robustlab.evaluation.robust import accuracy_of, robust_flags
from robustlab.evaluation.sanity import black_box_beats_white_box, large_eps_collapse, run_sanity_checks
from robustlab.evaluation.sweep import run_eps_sweep
from robustlab.utils.device import model_device

logger = logging.getLogger(__name__)


def run_protocol(
    model: nn.Module,
    data: AnyData,
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
    clean, flags, timings = robust_flags(model, x, y, attacks, batch_size=cfg.batch_size, show_progress=show_progress,
                                         seed=derive_seed(cfg.seed, "eval"))
    timings["total"] = time.perf_counter() - t0
    sanity: dict[str, Any] = {}
    aa_flags: dict[str, Tensor] | None = None
    aa_checks: dict[str, Any] | None = None
    if cfg.autoattack is not None:
        aa_flags, aa_timings, aa_checks = _run_autoattack(model, x, y, clean, cfg, show_progress, state_dir)
        flags.update(aa_flags)
        timings.update(aa_timings)
    # apart from the worst case:
    classifier_only = classifier_only_summary(model, x, y, clean, cfg, show_progress, state_dir)
    large_eps_accuracy = None
    if cfg.large_eps is not None:
        first_attack = first_attack_config(cfg)
        big_eps = min(cfg.large_eps, 1.0) if first_attack.norm == "linf" else cfg.large_eps
        update: dict[str, Any] = {"eps": big_eps}
        if first_attack.step_size is not None:  # scale the step so the same step count can cross the larger ball
            update["step_size"] = first_attack.step_size * big_eps / first_attack.eps
        big = first_attack.model_copy(update=update)
        torch.manual_seed(derive_seed(cfg.seed, "large-eps"))
        _, big_flags, _ = robust_flags(model, x, y, named_attacks(model, [big]), batch_size=cfg.batch_size,
                                       seed=derive_seed(cfg.seed, "large-eps"))
        large_eps_accuracy = accuracy_of(next(iter(big_flags.values())))
        sanity["large_eps"] = big.eps
        sanity["large_eps_attack"] = attack_label(big)
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
    if aa_checks is not None:  # the reference's checks, run inside AutoAttack: flags nested, warnings with the others
        sanity["autoattack_checks"] = {k: v for k, v in aa_checks.items() if k != "warnings"}
        sanity.setdefault("warnings", []).extend(f"AutoAttack: {w}" for w in aa_checks.get("warnings", []))
    sweep = None
    if cfg.eps_sweep:
        sweep = run_eps_sweep(model, x, y, cfg, show_progress=show_progress)
        timings.update({f"eps-sweep eps={key}": t for key, t in sweep.timings.items()})
    robust = {name: accuracy_of(mask) for name, mask in flags.items()}
    worst_mask = clean.clone()
    for mask in flags.values():
        worst_mask[: len(mask)] &= mask  # AutoAttack may cover only the first points; worst case over what ran
    worst_n = min((len(m) for m in flags.values()), default=n)
    worst = accuracy_of(worst_mask[:worst_n])
    per_sample = {"clean": clean.tolist(), **{k: v.tolist() for k, v in flags.items()}}
    first = cfg.attacks[0] if cfg.attacks else cfg.autoattack
    assert first is not None  # EvalConfig requires attacks or autoattack
    protocol = protocol_entries(cfg)
    return EvaluationResult(
        dataset=data.info.name, split=data.split, n=n, indices=indices.tolist(),
        threat=ThreatModel(first.norm, first.eps).to_dict(), protocol=protocol,
        clean_accuracy=accuracy_of(clean), robust_accuracy=robust, worst_case_accuracy=worst, worst_case_n=worst_n,
        per_sample=per_sample, seed=cfg.seed, timings=timings, sanity=sanity, model=model_info or {},
        eps_sweep=sweep.accuracy if sweep else {}, eps_sweep_n=sweep.n if sweep else None,
        eps_sweep_attack=sweep.attack if sweep else None, classifier_only=classifier_only,
    )


def _run_autoattack(
    model: nn.Module, x: Tensor, y: Tensor, clean: Tensor, cfg: EvalConfig, show_progress: bool,
    state_dir: Path | None,
) -> tuple[dict[str, Tensor], dict[str, float], dict[str, Any]]:
    """AutoAttack on the first ``autoattack.n`` points, standalone as in the reference: cumulative flags per attack,
    timings, and the reference's checks on the defence (:attr:`AutoAttackResult.checks`)."""
    from robustlab.attacks.autoattack import AutoAttack

    aa = cfg.autoattack
    assert aa is not None
    k = len(x) if aa.n is None else min(aa.n, len(x))
    state_file = None if state_dir is None else aa.state_file(state_dir, k, cfg.seed)
    runner = AutoAttack(model, ThreatModel(aa.norm, aa.eps), version=aa.version, attacks=aa.attacks,
                        attack_kwargs=aa.attack_kwargs, seed=cfg.seed, state_file=state_file,
                        batch_size=cfg.batch_size, show_progress=show_progress,
                        log_checks=False)  # its warnings join the evaluation's, printed once
    runner.log_if_resuming()  # one file per rank under torchrun
    result = runner.run(x[:k], y[:k])
    label = f"autoattack-{aa.version} {aa.norm} eps={aa.eps:.4g} n={k}"
    flags = {f"{label}: {name}": mask for name, mask in result.robust.items()}
    if aa.version != "rand" and not torch.equal(result.clean, clean[:k]):  # rand: stochastic clean predictions
        raise RuntimeError("AutoAttack's clean predictions differ from the evaluation's: the model is stochastic; "
                           "use version='rand' and repeated evaluation")
    timings = {f"{label}: {name}": t for name, t in result.timings.items()}
    return flags, timings, result.checks
