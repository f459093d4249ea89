"""AutoAttack (Croce & Hein 2020): a fixed ensemble of attacks, each run only on the points still robust.

``AutoAttack(model, threat, version="standard").run(x, y)`` returns an :class:`AutoAttackResult` with the clean mask,
the cumulative robust mask after each attack and the pointwise worst case. Versions follow the reference code with its
defaults (100 APGD iterations, 9 target classes, 5000 Square queries; never torchattacks' 10 APGD steps):

* ``standard``: apgd-ce, apgd-t, fab-t, square (in L1: 5 APGD-CE restarts and 5 APGD-T targets, both with the
  large-eps schedule, as the reference);
* ``plus``: apgd-ce (5 restarts), apgd-dlr (5 restarts), fab (5 restarts), square, apgd-t, fab-t;
* ``rand`` (randomised defences): apgd-ce and apgd-dlr with ``eot_samples=20``;
* ``custom``: the registered attacks named in ``attacks``, with the reference's settings for its six attacks (5
  restarts for apgd-ce, apgd-dlr and fab) and their own defaults for any other.

Before attacking, the reference's checks on the defence run (:mod:`robustlab.attacks.checks`: randomised or
probability outputs, a forward pass that changes the model, the number of classes, zero DLR gradients) and after it
the Square check; the flags are in ``AutoAttackResult.checks`` and each failed one is logged as a warning.

Every (attack, batch) runs under its own seed ``derive_seed(seed, attack, batch)``; under torchrun the batches are
dealt round-robin to the ranks and gathered after each attack, so N processes give one process's flags. With
``state_file`` the masks and adversarial points are written atomically after each (attack, batch), with a fingerprint
of the protocol, data and model (one file per rank under torchrun); a rerun resumes where the last one stopped and
gives the same flags as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.attacks.base import Attack, attack_mode, predict
from robustlab.attacks.checks import pre_attack_checks, square_check, warnings_for
from robustlab.attacks.memory_format import channels_last, channels_last_helps
from robustlab.core.errors import CheckpointError, InputError
from robustlab.core.rng import derive_seed
from robustlab.core.threat import ThreatModel
from robustlab.core.validation import check_images, check_labels
from robustlab.utils import distributed
from robustlab.utils.distributed import DistInfo
from robustlab.utils.progress import Progress

logger = logging.getLogger(__name__)

VERSIONS = ("standard", "plus", "rand", "custom")
STATE_KEY = "autoattack_state"

#: (attack name, settings) per version, as in the reference ``set_version`` for L-inf and L2.
_VERSION_ATTACKS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "standard": [
        ("apgd-ce", {"steps": 100, "restarts": 1}),
        ("apgd-t", {"steps": 100, "restarts": 1, "n_target_classes": 9}),
        ("fab-t", {"restarts": 1, "n_target_classes": 9}),
        ("square", {"queries": 5000, "restarts": 1, "resc_schedule": False}),
    ],
    "plus": [
        ("apgd-ce", {"steps": 100, "restarts": 5}),
        ("apgd-dlr", {"steps": 100, "restarts": 5}),
        ("fab", {"restarts": 5}),
        ("square", {"queries": 5000, "restarts": 1, "resc_schedule": False}),
        ("apgd-t", {"steps": 100, "restarts": 1, "n_target_classes": 9}),
        ("fab-t", {"restarts": 1, "n_target_classes": 9}),
    ],
    "rand": [
        ("apgd-ce", {"steps": 100, "restarts": 1, "eot_samples": 20}),
        ("apgd-dlr", {"steps": 100, "restarts": 1, "eot_samples": 20}),
    ],
}

#: ``standard`` in L1, as the reference sets it: 5 APGD-CE restarts, 5 APGD-T targets, both with the large-eps
#: schedule (3 eps -> 2 eps -> eps); FAB-T and Square in L1.
_L1_STANDARD: list[tuple[str, dict[str, Any]]] = [
    ("apgd-ce", {"steps": 100, "restarts": 5, "use_largereps": True}),
    ("apgd-t", {"steps": 100, "restarts": 1, "n_target_classes": 5, "use_largereps": True}),
    ("fab-t", {"restarts": 1, "n_target_classes": 9}),
    ("square", {"queries": 5000, "restarts": 1, "resc_schedule": False}),
]

#: ``custom``'s settings per attack: the reference builds its attacks with these (5 restarts for APGD and FAB; FAB-T
#: always runs one) and only ``set_version`` lowers them; attacks not named here keep their own defaults.
_CUSTOM_SETTINGS: dict[str, dict[str, Any]] = dict(_VERSION_ATTACKS["plus"])

@dataclass
class AutoAttackResult:
    """Outcome of an AutoAttack run: masks per attack, the worst case, adversarial points and the protocol."""

    version: str
    attacks: list[str]
    seed: int
    threat: dict[str, Any]
    clean: Tensor
    robust: dict[str, Tensor]
    x_adv: Tensor
    timings: dict[str, float] = field(default_factory=dict)
    resumed: bool = False
    #: The reference's checks on the defence (:mod:`robustlab.attacks.checks`): flags, values and ``warnings``.
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def robust_mask(self) -> Tensor:
        """Pointwise worst case: robust against every attack (the clean mask when no attack ran)."""
        return list(self.robust.values())[-1] if self.robust else self.clean

    @property
    def clean_accuracy(self) -> float:
        """Fraction classified correctly without attack."""
        return _mean(self.clean)

    @property
    def robust_accuracy(self) -> float:
        """Worst-case robust accuracy over the ensemble."""
        return _mean(self.robust_mask)

    @property
    def accuracy_after(self) -> dict[str, float]:
        """Cumulative robust accuracy after each attack, in order."""
        return {name: _mean(mask) for name, mask in self.robust.items()}

    def broken_by(self) -> list[str | None]:
        """Per sample: ``"clean"`` if misclassified, the first attack that broke it, or None if robust."""
        out: list[str | None] = ["clean" if not c else None for c in self.clean.tolist()]
        previous = self.clean
        for name, mask in self.robust.items():
            for i in (previous & ~mask).nonzero().squeeze(1).tolist():
                out[i] = name
            previous = mask
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with per-sample flags (adversarial points excluded)."""
        return {
            "version": self.version, "attacks": self.attacks, "seed": self.seed, "threat": self.threat,
            "clean_accuracy": self.clean_accuracy, "robust_accuracy": self.robust_accuracy,
            "accuracy_after": self.accuracy_after, "timings": self.timings, "resumed": self.resumed,
            "checks": self.checks,
            "per_sample": {"clean": self.clean.tolist(), **{k: v.tolist() for k, v in self.robust.items()}},
            "broken_by": self.broken_by(),
        }


def _mean(mask: Tensor) -> float:
    return float(mask.float().mean()) if mask.numel() else float("nan")


def tensor_sha256(*tensors: Tensor) -> str:
    """sha256 over the dtypes, shapes and raw bytes of tensors (data and weight fingerprints)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_weights_fingerprint(model: nn.Module) -> dict[str, Any]:
    """Architecture fingerprint plus a sha256 of every state_dict value, so other weights are told apart."""
    from robustlab.io.fingerprint import model_fingerprint, unwrap_model

    model = unwrap_model(model)
    state = model.state_dict()
    return {**model_fingerprint(model), "weights_sha256": tensor_sha256(*(state[k] for k in sorted(state)))}


def _bind_settings(cls: type[Attack], name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings the constructor takes (attacks share one vocabulary: ``steps``, ``restarts``, ``queries``,
    ``n_target_classes``, ``eot_samples``); one it cannot take is an error, except a single restart."""
    params = inspect.signature(cls.__init__).parameters
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = {}
    for key, value in settings.items():
        if key in params or open_kwargs:
            kwargs[key] = value
        elif not (key == "restarts" and value == 1):  # an attack without restarts does exactly one run
            raise InputError(f"attack {name!r} ({cls.__name__}) takes no {key!r} setting, which AutoAttack needs")
    return kwargs


class AutoAttack:
    """``AutoAttack(model, threat, version="standard")``; ``run(x, y)`` -> :class:`AutoAttackResult`.

    ``attacks`` names registered attacks and requires ``version="custom"``; ``attack_kwargs`` maps an attack name to
    extra constructor settings (e.g. fewer steps for a smoke test) and is part of the protocol fingerprint.
    ``log_checks=False`` keeps the checks' warnings out of the log, for a caller that reports ``result.checks`` itself.
    ``channels_last`` runs the forward-only attacks (Square) with the model's weights channels-last
    (:mod:`.memory_format`; None: on CPU image batches, where its forward passes are faster), restored afterwards;
    the logits agree to rounding. The reference has no such option.
    """

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        *,
        version: str = "standard",
        attacks: list[str] | None = None,
        attack_kwargs: dict[str, dict[str, Any]] | None = None,
        seed: int = 0,
        state_file: str | Path | None = None,
        batch_size: int = 500,
        show_progress: bool = False,
        log_checks: bool = True,
        channels_last: bool | None = None,
    ) -> None:
        if not isinstance(threat, ThreatModel):
            raise InputError(f"threat must be a ThreatModel, got {type(threat).__name__}")
        if version not in VERSIONS:
            raise InputError(f"unknown AutoAttack version {version!r}; valid: {', '.join(VERSIONS)}")
        if version == "custom":
            if not attacks:
                raise InputError("version='custom' needs a non-empty attacks list, e.g. ['apgd-ce', 'apgd-t']")
            names = [str(a).strip().lower().replace("_", "-") for a in attacks]
            if len(set(names)) != len(names):
                raise InputError(f"attacks must not repeat a name, got {attacks}")
            self.plan = [(n, dict(_CUSTOM_SETTINGS.get(n, {}))) for n in names]
        else:
            if attacks is not None:
                raise InputError(f"attacks can only be given with version='custom', not {version!r}")
            plan = _L1_STANDARD if (version, threat.norm) == ("standard", "l1") else _VERSION_ATTACKS[version]
            if version == "plus" and threat.norm == "l1":
                logger.warning("AutoAttack 'plus' has no L1 settings of its own (the reference's neither): it runs "
                               "the L-inf/L2 ones in L1; 'standard' is the L1 protocol")
            self.plan = [(n, dict(s)) for n, s in plan]
        for name, extra in (attack_kwargs or {}).items():
            match = [s for n, s in self.plan if n == name]
            if not match:
                raise InputError(f"attack_kwargs names {name!r}, which is not in this run's attacks")
            match[0].update(extra)
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.model, self.threat, self.version = model, threat, version
        self.seed, self.batch_size, self.show_progress = int(seed), int(batch_size), bool(show_progress)
        self.log_checks = bool(log_checks)
        if channels_last is not None and not isinstance(channels_last, bool):
            raise InputError(f"channels_last must be True, False or None (auto), got {channels_last!r}")
        self.channels_last = channels_last
        self.state_file = Path(state_file) if state_file is not None else None

    def log_if_resuming(self, what: str = "AutoAttack") -> None:
        """Say so when this process's state file exists, i.e. ``run`` will resume (attacks and batches done are not
        re-run)."""
        own_state = self.state_path(distributed.current())
        if own_state is not None and own_state.exists():
            logger.info("resuming %s from its state file %s (attacks and batches done are not re-run)", what,
                        own_state)

    @property
    def attack_names(self) -> list[str]:
        """The attacks run, in order."""
        return [name for name, _ in self.plan]

    def build_attacks(self) -> list[tuple[str, Attack]]:
        """Instantiate every attack of the plan from the registry (raises naming any attack not registered)."""
        from robustlab.attacks.registry import get_attack_class, list_attacks

        out = []
        for name, settings in self.plan:
            if name not in list_attacks():
                raise InputError(
                    f"AutoAttack {self.version!r} needs the attack {name!r}, which is not registered "
                    f"(registered: {', '.join(list_attacks())}); import its module first"
                )
            cls = get_attack_class(name)
            out.append((name, cls(self.model, self.threat, **_bind_settings(cls, name, settings))))
        return out

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial examples: the broken points' adversarial versions, the other points unchanged."""
        return self.run(x, y).x_adv

    def fingerprint(self, x: Tensor, y: Tensor) -> dict[str, Any]:
        """What a state file must match to be resumed: protocol, data and model weights."""
        return {
            "version": self.version, "plan": [[n, s] for n, s in self.plan], "norm": self.threat.norm,
            "eps": self.threat.eps, "seed": self.seed, "batch_size": self.batch_size, "n": int(x.shape[0]),
            "data_sha256": tensor_sha256(x, y), "model": model_weights_fingerprint(self.model),
        }

    def state_path(self, info: DistInfo) -> Path | None:
        """This process's state file: ``state_file`` itself in one process, one file per rank under torchrun."""
        if self.state_file is None or info.world <= 1:
            return self.state_file
        path = self.state_file
        return path.with_name(f"{path.stem}.rank{info.rank}-of-{info.world}{path.suffix}")

    def run(self, x: Tensor, y: Tensor) -> AutoAttackResult:
        """Run (or resume) the ensemble; each attack sees only the points all earlier ones failed to break.

        Under torchrun each attack's batches are dealt round-robin to the ranks (batch ``b`` to rank ``b % world``)
        and the flags and adversarial points gathered after the attack; every (attack, batch) has its own seed, so
        any number of processes gives the one-process result bit for bit.
        """
        check_images(x)
        check_labels(y, x.shape[0])
        y = y.to(x.device)
        info = distributed.current()
        built = self.build_attacks()
        path = self.state_path(info)
        if path is None:  # nothing to match a resumed state against: no data or weight hashing
            state = _RunState.fresh(self, x, y, None, None)
        else:
            fp = json.loads(json.dumps({**self.fingerprint(x, y), "world": info.world}, default=str))
            state = _RunState.open(self, x, y, fp, path)
            if info.world > 1:
                state.align(built, info)
        k = min(self.batch_size, len(x))
        checks = pre_attack_checks(self.model, x[:k], y[:k], state.clean[:k], version=self.version, attacks=built,
                                   threat=self.threat, seed=derive_seed(self.seed, "checks"))
        layout = channels_last_helps(self.model, x) if self.channels_last is None else self.channels_last
        for a_index, (name, attack) in enumerate(built):
            if a_index < state.attack_index:
                continue
            with channels_last(self.model, x[: min(self.batch_size, len(x), 64)],
                               enabled=layout and attack.forward_only):
                self._run_attack(state, a_index, name, attack, x, y, info)
        checks.update(square_check(state.clean, state.flags))
        checks["warnings"] = warnings_for(checks)
        if info.is_main and self.log_checks:
            for message in checks["warnings"]:
                logger.warning("AutoAttack check: %s", message)
        return AutoAttackResult(
            version=self.version, attacks=self.attack_names, seed=self.seed, threat=self.threat.to_dict(),
            clean=state.clean, robust=dict(state.flags), x_adv=state.x_adv, timings=dict(state.timings),
            resumed=state.resumed, checks=checks,
        )

    def _run_attack(self, state: _RunState, a_index: int, name: str, attack: Attack, x: Tensor, y: Tensor,
                    info: DistInfo) -> None:
        """This rank's batches of one attack, skipping those a resumed state has done (saving after each), then
        the gather of every rank's results."""
        if state.attack_index < a_index:
            state.start_attack(a_index)
        todo = state.todo()
        batches = list(todo.split(self.batch_size)) if len(todo) else []
        mine = [b for b in range(len(batches)) if b % info.world == info.rank]
        done = state.batches_done
        with Progress(total=sum(len(batches[b]) for b in mine), description=f"{name} ({len(todo)} robust)",
                      enabled=self.show_progress and info.is_main,
                      initial=sum(len(batches[b]) for b in mine[:done])) as bar:
            for b_index in mine[done:]:
                start = time.perf_counter()
                idx = batches[b_index]
                x_adv = self._attack_batch(attack, name, b_index, x[idx], y[idx])
                with attack_mode(self.model):
                    still = predict(self.model, x_adv, self.batch_size).argmax(dim=1) == y[idx]
                state.record_batch(name, idx, still, x_adv, time.perf_counter() - start)
                bar.advance(len(idx), robust=int(state.robust.sum() - state.mine.sum()))
        state.finish_attack(name, info)

    def _attack_batch(self, attack: Attack, name: str, b_index: int, x: Tensor, y: Tensor) -> Tensor:
        """One attack on one batch under the seed derived from (seed, attack, batch), checked to stay in the ball.

        The seed goes to torch's generators (restored afterwards) and to the attack's own ``seed`` attribute, for
        attacks that keep a private generator.
        """
        seed = derive_seed(self.seed, name, b_index)
        if hasattr(attack, "seed"):
            attack.seed = seed
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            x_adv = attack(x, y)
        if not bool(self.threat.contains(x_adv, x).all()):
            raise RuntimeError(f"attack {name} left the threat model {self.threat}")
        return x_adv


class _RunState:
    """Masks, adversarial points and progress of a run (of this rank), mirrored to its state file when there is one.

    ``robust`` is the gathered mask before the current attack (so ``todo`` is the same on every rank); ``mine``
    marks the points this rank has broken in the current attack, and ``mine_by_attack`` keeps that per finished
    attack, so a rank resumed one attack ahead of another can take part in that attack's gather again.
    """

    def __init__(self, aa: AutoAttack, x: Tensor, fp: dict[str, Any] | None, path: Path | None) -> None:
        self.path, self.fp = path, fp
        self.clean = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        self.robust = self.clean.clone()
        self.mine = self.clean.clone()
        self.flags: dict[str, Tensor] = {}
        self.mine_by_attack: dict[str, Tensor] = {}
        self.x_adv = x.detach().clone()
        self.attack_index, self.batches_done = 0, 0
        self.timings: dict[str, float] = {}
        self.resumed = False

    @classmethod
    def fresh(cls, aa: AutoAttack, x: Tensor, y: Tensor, fp: dict[str, Any] | None, path: Path | None) -> _RunState:
        """A new run: the clean pass (on every rank, all points) decides which points the first attack sees."""
        state = cls(aa, x, fp, path)
        start = time.perf_counter()
        with attack_mode(aa.model):
            state.clean = predict(aa.model, x, aa.batch_size).argmax(dim=1) == y
        state.robust = state.clean.clone()
        state.timings["clean"] = time.perf_counter() - start
        state.save()
        return state

    @classmethod
    def open(cls, aa: AutoAttack, x: Tensor, y: Tensor, fp: dict[str, Any], path: Path) -> _RunState:
        """Resume from ``path`` when it exists (refusing one from another protocol), else start fresh."""
        if not path.exists():
            return cls.fresh(aa, x, y, fp, path)
        from robustlab.io.checkpoint import load_tensors

        try:
            tensors, meta = load_tensors(path)
            info_ = json.loads(meta[STATE_KEY])
            saved_fp = info_["fingerprint"]
        except (CheckpointError, KeyError, ValueError, TypeError) as exc:
            raise InputError(f"{path} is not an AutoAttack state file: {exc}") from exc
        diff = sorted(k for k in set(fp) | set(saved_fp) if fp.get(k) != saved_fp.get(k))
        if diff:
            raise InputError(
                f"{path} belongs to another AutoAttack run (differs in: {', '.join(diff)}); "
                "use a new state_file or delete this one"
            )
        state = cls(aa, x, fp, path)
        dev = x.device
        state.clean, state.robust = tensors["clean"].to(dev), tensors["robust"].to(dev)
        state.mine = tensors["mine"].to(dev)
        state.flags = {n: tensors[f"flags.{n}"].to(dev) for n in info_["finished"]}
        state.mine_by_attack = {n: tensors[f"mine.{n}"].to(dev) for n in info_["finished"]}
        state.x_adv[tensors["broken_idx"].to(dev)] = tensors["x_broken"].to(dev, x.dtype)
        state.attack_index, state.batches_done = info_["attack_index"], info_["batches_done"]
        state.timings, state.resumed = info_["timings"], True
        return state

    def todo(self) -> Tensor:
        """The points the current attack must try: those still robust after the earlier ones (all ranks)."""
        return self.robust.nonzero().squeeze(1)

    def start_attack(self, a_index: int) -> None:
        """Begin attack ``a_index`` with nothing broken by this rank yet."""
        self.attack_index, self.batches_done = a_index, 0
        self.mine = torch.zeros_like(self.robust)

    def record_batch(self, name: str, idx: Tensor, still: Tensor, x_adv: Tensor, seconds: float) -> None:
        """Fold one batch's outcome in and save."""
        broken = ~still
        self.mine[idx[broken]] = True
        self.x_adv[idx[broken]] = x_adv[broken].to(self.x_adv.dtype)
        self.timings[name] = self.timings.get(name, 0.0) + seconds
        self.batches_done += 1
        self.save()

    def finish_attack(self, name: str, info: DistInfo) -> None:
        """Gather every rank's broken points and their adversarial versions, freeze the cumulative mask, move on."""
        self.robust = self.gather(self.robust, self.mine, info)
        self.flags[name] = self.robust.clone()
        self.mine_by_attack[name] = self.mine
        self.attack_index, self.batches_done = self.attack_index + 1, 0
        self.mine = torch.zeros_like(self.robust)
        self.save()

    def gather(self, robust: Tensor, mine: Tensor, info: DistInfo) -> Tensor:
        """``robust`` minus the points any rank broke (``mine`` on this one), whose adversarial points (each from
        the rank that broke it) are written into ``x_adv`` on every rank; a sum, as each point has one owner."""
        if info.world <= 1:
            return robust & ~mine
        todo = robust.nonzero().squeeze(1)
        broken = distributed.all_reduce_tensor(mine[todo].to(torch.int32), info) > 0
        payload = torch.where(mine[todo].reshape(-1, *([1] * (self.x_adv.dim() - 1))), self.x_adv[todo],
                              torch.zeros((), dtype=self.x_adv.dtype, device=self.x_adv.device))
        payload = distributed.all_reduce_tensor(payload.contiguous(), info)
        self.x_adv[todo[broken]] = payload[broken]
        out = robust.clone()
        out[todo[broken]] = False
        return out

    def align(self, built: list[tuple[str, Attack]], info: DistInfo) -> None:
        """After a resume under torchrun: a rank that saved one more finished attack than another (killed between
        the gather and its save) takes part in that attack's gather again, so the collective calls line up."""
        index = torch.zeros(info.world, dtype=torch.int64, device=self.robust.device)
        index[info.rank] = self.attack_index
        indices = distributed.all_reduce_tensor(index, info).tolist()
        lowest = min(indices)
        if max(indices) - lowest > 1:
            raise InputError(f"the per-rank AutoAttack state files ({self.path}) are at attacks {indices}, more than "
                             "one apart: they do not come from one run; delete them")
        if self.attack_index == lowest + 1 and lowest < len(built):
            name = built[lowest][0]
            before = self.flags[built[lowest - 1][0]] if lowest else self.clean
            self.gather(before, self.mine_by_attack[name], info)

    def save(self) -> None:
        """Atomically write the state (safetensors with JSON metadata); no-op without a state file."""
        if self.path is None:
            return
        from robustlab.io.checkpoint import save_tensors

        broken = ((self.clean & ~self.robust) | self.mine).nonzero().squeeze(1)
        tensors = {"clean": self.clean, "robust": self.robust, "mine": self.mine, "broken_idx": broken,
                   "x_broken": self.x_adv[broken]}
        tensors.update({f"flags.{n}": m for n, m in self.flags.items()})
        tensors.update({f"mine.{n}": m for n, m in self.mine_by_attack.items()})
        info = {
            "fingerprint": self.fp, "finished": list(self.flags), "attack_index": self.attack_index,
            "batches_done": self.batches_done, "timings": self.timings,
        }
        save_tensors(self.path, tensors, {STATE_KEY: json.dumps(info, sort_keys=True)})
