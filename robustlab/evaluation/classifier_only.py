"""The CARSO paper's MNIST/Fashion-MNIST protocol ("classifier-only"): AutoAttack crafted on CARSO's wrapped
classifier alone, the adversarial points then judged on the whole CARSO model with fresh randomness.

It measures how well the purifier undoes attacks on its classifier, which is not CARSO's robustness (an attacker
who knows the defence attacks it end to end). So its numbers live apart from ``robust_accuracy`` in
:attr:`EvaluationResult.classifier_only`, every label says what it measures, and the worst case, the leaderboard's
ranking and the published counterpart of the worst case never read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.attacks.autoattack import AutoAttack, AutoAttackResult
from robustlab.attacks.base import attack_mode, predict
from robustlab.core.rng import derive_seed
from robustlab.core.threat import ThreatModel
from robustlab.evaluation.config import AutoAttackConfig, EvalConfig
from robustlab.evaluation.labels import CLASSIFIER_ONLY
from robustlab.purification.carso.model import carso_of

#: What a classifier-only number measures, written beside it in results, reports and the leaderboard.
MEASURES = ("AutoAttack crafted on CARSO's classifier alone, its points judged on CARSO with fresh randomness "
            "(the CARSO paper's MNIST/Fashion-MNIST protocol): a transfer number, not CARSO's robustness, "
            "never in the worst case")
#: Protocol entries of this kind have names starting with this prefix (never ``autoattack``, which means end to end).
PREFIX = CLASSIFIER_ONLY


def entry_name(aa: AutoAttackConfig) -> str:
    """``classifier-only autoattack-standard``: the protocol entry's name."""
    return f"{PREFIX} autoattack-{aa.version}"


def labels(aa: AutoAttackConfig, n: int) -> tuple[str, str]:
    """(key of the number judged on CARSO, key of the classifier's own AutoAttack accuracy)."""
    head = f"autoattack-{aa.version} {aa.norm} eps={aa.eps:.4g} n={n}"
    return f"{head} (classifier-only, judged on CARSO)", f"{head} (classifier-only, judged on the classifier)"


@dataclass
class ClassifierOnlyOutcome:
    """The classifier's AutoAttack run, its adversarial points and CARSO's per-point verdict on them."""

    autoattack: AutoAttackResult
    x_adv: Tensor
    on_carso: Tensor  # bool (k,): clean-correct on CARSO and CARSO still right on the adversarial point
    on_classifier: Tensor  # bool (k,): AutoAttack's own worst case on the classifier

    def summary(self, aa: AutoAttackConfig, seed: int) -> dict[str, Any]:
        """JSON-ready numbers with their labels, for :attr:`EvaluationResult.classifier_only`."""
        n = len(self.on_carso)
        carso_key, clf_key = labels(aa, n)
        return {"measures": MEASURES, "n": n, "seed": seed, "judge_seed": judge_seed(seed),
                "accuracy": {carso_key: _mean(self.on_carso), clf_key: _mean(self.on_classifier)},
                "per_sample": {carso_key: self.on_carso.tolist(), clf_key: self.on_classifier.tolist()},
                "timings": dict(self.autoattack.timings)}


def _mean(mask: Tensor) -> float:
    return float(mask.float().mean()) if mask.numel() else float("nan")


def judge_seed(seed: int) -> int:
    """The seed of CARSO's fresh sampling when it judges the classifier's adversarial points."""
    return derive_seed(seed, PREFIX, "judge")


def run_classifier_only(
    model: nn.Module, x: Tensor, y: Tensor, clean: Tensor, aa: AutoAttackConfig, *, seed: int = 0,
    batch_size: int = 500, show_progress: bool = False, state_file: Path | None = None,
) -> ClassifierOnlyOutcome:
    """AutoAttack ``aa`` on the classifier inside CARSO ``model`` (seed ``seed``) on the first ``aa.n`` points, then
    one fresh stochastic CARSO pass (seed :func:`judge_seed`) on its adversarial points. ``clean`` are CARSO's clean
    flags: a point CARSO gets wrong clean is not robust, as everywhere in an evaluation (ConfigError for a model
    that is not CARSO). With ``state_file`` the AutoAttack resumes from it, as the end-to-end one does."""
    net, _ = carso_of(model)
    k = len(x) if aa.n is None else min(aa.n, len(x))
    runner = AutoAttack(net.classifier, ThreatModel(aa.norm, aa.eps), version=aa.version, attacks=aa.attacks,
                        attack_kwargs=aa.attack_kwargs, seed=seed, batch_size=batch_size, show_progress=show_progress,
                        state_file=state_file)
    runner.log_if_resuming("the classifier-only AutoAttack")
    result = runner.run(x[:k], y[:k])
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), attack_mode(model), torch.no_grad():
        torch.manual_seed(judge_seed(seed))
        still = predict(model, result.x_adv, batch_size).argmax(dim=1) == y[:k]
    return ClassifierOnlyOutcome(autoattack=result, x_adv=result.x_adv, on_carso=clean[:k].to(still.device) & still,
                                 on_classifier=result.robust_mask)


def classifier_only_summary(model: nn.Module, x: Tensor, y: Tensor, clean: Tensor, cfg: EvalConfig,
                            show_progress: bool = False, state_dir: Path | None = None) -> dict[str, Any]:
    """:func:`run_classifier_only` under ``cfg.classifier_only`` and ``cfg.seed``, summarised (empty when unset);
    with ``state_dir`` its AutoAttack keeps a state file there and an interrupted run resumes."""
    aa = cfg.classifier_only
    if aa is None:
        return {}
    k = len(x) if aa.n is None else min(aa.n, len(x))
    state_file = None if state_dir is None else aa.state_file(state_dir, k, cfg.seed, prefix=f"{PREFIX}-autoattack")
    outcome = run_classifier_only(model, x, y, clean, aa, seed=cfg.seed, batch_size=cfg.batch_size,
                                  show_progress=show_progress, state_file=state_file)
    return outcome.summary(aa, cfg.seed)
