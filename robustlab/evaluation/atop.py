"""AToP evaluation protocols (spec §2.6), one :class:`EvaluationResult` per protocol:

* ``A``: the full stochastic pipeline attacked end to end with EoT: APGD-CE then APGD-DLR with ``eot_samples``
  (AutoAttack ``rand``; PGD-L1 with EoT for an L1 threat, which APGD does not support);
* ``B``: BPDA-identity, PGD through the pipeline with transform+purifier back-propagated as the identity
  (``b_source="bpda"``), or the paper's classifier-only setting, PGD on the classifier alone then purified
  (``b_source="classifier"``); evaluated on the real pipeline either way;
* ``C``: PGD+EoT with full gradients (Lee & Kim's setting: 200 steps, step 0.007, EoT 20, no random start);
* ``unseen-<norm>``: protocol A's attacks at each threat of ``unseen`` (L-inf, L2 and L1 by default; the paper's
  third threat, StAdv, is not in the library).

Attacks run in order on still-robust points (``robust_flags``); each protocol is seeded from ``(seed, protocol)``.
Clean accuracy is one stochastic pass per protocol, so it differs slightly between protocols.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from robustlab.attacks import create_attack
from robustlab.attacks.wrappers import TransferAttack
from robustlab.core.rng import derive_seed
from robustlab.core.threat import ThreatModel, canonical_norm
from robustlab.core.validation import check_images, check_labels
from robustlab.evaluation.result import EvaluationResult
from robustlab.evaluation.robust import NamedAttack, accuracy_of, robust_flags
from robustlab.evaluation.sanity import gradient_health, output_randomness
from robustlab.purification.atop.config import ProtocolSettings
from robustlab.purification.atop.pipeline import AToPDefense


def _end_to_end(defense: AToPDefense, threat: ThreatModel, s: ProtocolSettings) -> list[NamedAttack]:
    """AutoAttack ``rand``'s attacks on the whole pipeline (PGD-L1 with EoT for L1)."""
    if threat.norm == "l1":
        pgd = create_attack("pgd", defense, threat, steps=s.unseen_steps, eot_samples=s.eot_samples)
        return [NamedAttack(f"pgd-{s.unseen_steps} eot={s.eot_samples} {threat}", pgd, threat,
                            {"steps": s.unseen_steps, "eot_samples": s.eot_samples, "target": "pipeline"})]
    out = []
    for name in ("apgd-ce", "apgd-dlr"):
        attack = create_attack(name, defense, threat, steps=s.apgd_steps, eot_samples=s.eot_samples)
        out.append(NamedAttack(f"{name}-{s.apgd_steps} eot={s.eot_samples} {threat}", attack, threat,
                               {"steps": s.apgd_steps, "eot_samples": s.eot_samples, "target": "pipeline"}))
    return out


def result_names(s: ProtocolSettings) -> list[str]:
    """Names of the results ``s`` produces, in order: each protocol of ``s.protocols``, with ``unseen`` expanded
    to one ``unseen-<norm>`` result per threat of ``s.unseen``."""
    out: list[str] = []
    for name in s.protocols:
        out += [f"unseen-{norm}" for norm in s.unseen] if name == "unseen" else [name]
    return out


def protocol_attacks(defense: AToPDefense, s: ProtocolSettings) -> dict[str, list[NamedAttack]]:
    """Protocol name -> its attacks (all evaluated on ``defense``), for the protocols ``s.protocols`` names."""
    threat = ThreatModel(s.norm, s.eps)
    out: dict[str, list[NamedAttack]] = {}
    if "A" in s.protocols:
        out["A"] = _end_to_end(defense, threat, s)
    if "B" in s.protocols:
        kw: dict[str, Any] = {"steps": s.b_steps, "eot_samples": s.b_eot_samples}
        if s.b_source == "bpda":
            attack: Any = create_attack("pgd", defense.with_bpda(), threat, **kw)
        else:
            attack = TransferAttack(create_attack("pgd", defense.classifier, threat, **kw))
        out["B"] = [NamedAttack(f"pgd-{s.b_steps} {s.b_source} {threat}", attack, threat,
                                {**kw, "target": s.b_source})]
    if "C" in s.protocols:
        kw = {"steps": s.c_steps, "step_size": s.c_step_size, "random_start": s.c_random_start,
              "eot_samples": s.eot_samples}
        if s.c_step_size is None:
            kw.pop("step_size")
        out["C"] = [NamedAttack(f"pgd-{s.c_steps} eot={s.eot_samples} {threat}",
                                create_attack("pgd", defense, threat, **kw), threat, {**kw, "target": "pipeline"})]
    if "unseen" in s.protocols:
        for norm, eps in s.unseen.items():
            out[f"unseen-{norm}"] = _end_to_end(defense, ThreatModel(canonical_norm(norm), eps), s)
    return out


def evaluate_atop(
    defense: AToPDefense,
    x: Tensor,
    y: Tensor,
    settings: ProtocolSettings,
    *,
    dataset: str = "",
    split: str = "test",
    model_info: dict[str, Any] | None = None,
    show_progress: bool = False,
) -> dict[str, EvaluationResult]:
    """Run every protocol of ``settings`` on the first ``settings.n`` points; one result per protocol."""
    check_images(x)
    check_labels(y, x.shape[0])
    n = min(settings.n, len(x))
    x, y = x[:n], y[:n]
    defense.eval()
    info = {"defense": "atop", "transform": defense.transform.describe(), "purifier": defense.purifier.kind,
            **(model_info or {})}
    torch.manual_seed(derive_seed(settings.seed, "atop-eval", "sanity"))
    k = min(n, 32)
    sanity: dict[str, Any] = {**output_randomness(defense, x[:k]), **gradient_health(defense, x[:k], y[:k])}
    sanity["warnings"] = [] if sanity["stochastic_outputs"] else [
        "the pipeline's outputs are deterministic: its random transform is not drawing new masks"]
    if sanity["unhealthy_gradients"]:
        sanity["warnings"].append("zero or non-finite input gradients through the pipeline: gradients are masked")
    results: dict[str, EvaluationResult] = {}
    for name, attacks in protocol_attacks(defense, settings).items():
        torch.manual_seed(derive_seed(settings.seed, "atop-eval", name))
        t0 = time.perf_counter()
        clean, flags, timings = robust_flags(defense, x, y, attacks, batch_size=settings.batch_size,
                                             show_progress=show_progress)
        timings["total"] = time.perf_counter() - t0
        worst = clean.clone()
        for mask in flags.values():
            worst &= mask
        results[name] = EvaluationResult(
            dataset=dataset, split=split, n=n, indices=list(range(n)), threat=attacks[0].threat.to_dict(),
            protocol=[{"protocol": name, **a.describe()} for a in attacks], clean_accuracy=accuracy_of(clean),
            robust_accuracy={k: accuracy_of(v) for k, v in flags.items()}, worst_case_accuracy=accuracy_of(worst),
            worst_case_n=n, per_sample={"clean": clean.tolist(), **{k: v.tolist() for k, v in flags.items()}},
            seed=settings.seed, timings=timings, sanity=sanity, model=info,
        )
    return results


__all__ = ["evaluate_atop", "protocol_attacks", "result_names"]
