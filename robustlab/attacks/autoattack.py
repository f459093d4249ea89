"""AutoAttack (Croce & Hein 2020): a fixed ensemble of attacks, each run only on the points still robust.

``AutoAttack(model, threat, version="standard").run(x, y)`` returns an :class:`AutoAttackResult` with the clean mask,
the cumulative robust mask after each attack and the pointwise worst case. Versions follow the reference code with its
defaults (100 APGD iterations, 9 target classes, 5000 Square queries; never torchattacks' 10 APGD steps):

* ``standard``: apgd-ce, apgd-t, fab-t, square;
* ``plus``: apgd-ce (5 restarts), apgd-dlr (5 restarts), fab (5 restarts), square, apgd-t, fab-t;
* ``rand`` (randomised defences): apgd-ce and apgd-dlr with ``eot_samples=20``;
* ``custom``: the registered attacks named in ``attacks``, with their own defaults.

Every (attack, batch) runs under its own seed ``derive_seed(seed, attack, batch)``. With ``state_file`` the masks and
adversarial points are written atomically after each (attack, batch), with a fingerprint of the protocol, data and
model; a rerun resumes where the last one stopped and gives the same flags as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.attacks.base import Attack, attack_mode, predict
from robustlab.core.errors import CheckpointError, InputError
from robustlab.core.rng import derive_seed
from robustlab.core.threat import ThreatModel
from robustlab.core.validation import check_images, check_labels
from robustlab.utils.progress import Progress

VERSIONS = ("standard", "plus", "rand", "custom")
STATE_KEY = "autoattack_state"

#: (attack name, settings) per version, as in the reference ``set_version`` for L-inf and L2.
_VERSION_ATTACKS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "standard": [
        ("apgd-ce", {"steps": 100, "restarts": 1}),
        ("apgd-t", {"steps": 100, "restarts": 1, "n_target_classes": 9}),
        ("fab-t", {"restarts": 1, "n_target_classes": 9}),
        ("square", {"queries": 5000, "restarts": 1}),
    ],
    "plus": [
        ("apgd-ce", {"steps": 100, "restarts": 5}),
        ("apgd-dlr", {"steps": 100, "restarts": 5}),
        ("fab", {"restarts": 5}),
        ("square", {"queries": 5000, "restarts": 1}),
        ("apgd-t", {"steps": 100, "restarts": 1, "n_target_classes": 9}),
        ("fab-t", {"restarts": 1, "n_target_classes": 9}),
    ],
    "rand": [
        ("apgd-ce", {"steps": 100, "restarts": 1, "eot_samples": 20}),
        ("apgd-dlr", {"steps": 100, "restarts": 1, "eot_samples": 20}),
    ],
}

#: Names other attack modules may use for the same setting; the first one the constructor takes is used.
_ALIASES: dict[str, tuple[str, ...]] = {
    "steps": ("steps", "n_iter", "iterations"),
    "restarts": ("restarts", "n_restarts"),
    "n_target_classes": ("n_target_classes", "num_target_classes"),
    "queries": ("queries", "n_queries", "max_queries"),
    "eot_samples": ("eot_samples",),
}


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
    """Map canonical settings onto the constructor's keyword names; a setting it cannot take is an error."""
    params = inspect.signature(cls.__init__).parameters
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = {}
    for key, value in settings.items():
        names = [n for n in _ALIASES.get(key, (key,)) if n in params]
        if names:
            kwargs[names[0]] = value
        elif open_kwargs:
            kwargs[key] = value
        elif not (key == "restarts" and value == 1):  # an attack without restarts does exactly one run
            raise InputError(f"attack {name!r} ({cls.__name__}) takes no {key!r} setting, which AutoAttack needs")
    return kwargs


class AutoAttack:
    """``AutoAttack(model, threat, version="standard")``; ``run(x, y)`` -> :class:`AutoAttackResult`.

    ``attacks`` names registered attacks and requires ``version="custom"``; ``attack_kwargs`` maps an attack name to
    extra constructor settings (e.g. fewer steps for a smoke test) and is part of the protocol fingerprint.
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
            self.plan = [(n, {}) for n in names]
        else:
            if attacks is not None:
                raise InputError(f"attacks can only be given with version='custom', not {version!r}")
            if threat.norm not in ("linf", "l2"):
                raise InputError(f"AutoAttack {version!r} supports linf and l2; {threat.norm} is not supported")
            self.plan = [(n, dict(s)) for n, s in _VERSION_ATTACKS[version]]
        for name, extra in (attack_kwargs or {}).items():
            match = [s for n, s in self.plan if n == name]
            if not match:
                raise InputError(f"attack_kwargs names {name!r}, which is not in this run's attacks")
            match[0].update(extra)
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.model, self.threat, self.version = model, threat, version
        self.seed, self.batch_size, self.show_progress = int(seed), int(batch_size), bool(show_progress)
        self.state_file = Path(state_file) if state_file is not None else None

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

    def run(self, x: Tensor, y: Tensor) -> AutoAttackResult:
        """Run (or resume) the ensemble; each attack sees only the points all earlier ones failed to break."""
        check_images(x)
        check_labels(y, x.shape[0])
        y = y.to(x.device)
        built = self.build_attacks()
        fp = json.loads(json.dumps(self.fingerprint(x, y), default=str))  # JSON types, comparable with a loaded one
        state = _RunState.fresh(self, x, y, fp) if self.state_file is None else _RunState.open(self, x, y, fp)
        for a_index, (name, attack) in enumerate(built):
            if a_index < state.attack_index:
                continue
            self._run_attack(state, a_index, name, attack, x, y)
        return AutoAttackResult(
            version=self.version, attacks=self.attack_names, seed=self.seed, threat=self.threat.to_dict(),
            clean=state.clean, robust=dict(state.flags), x_adv=state.x_adv, timings=dict(state.timings),
            resumed=state.resumed,
        )

    def _run_attack(self, state: _RunState, a_index: int, name: str, attack: Attack, x: Tensor, y: Tensor) -> None:
        """All batches of one attack, skipping those a resumed state has done; saves after each batch."""
        if state.attack_index < a_index or state.todo is None:
            state.start_attack(a_index)
        assert state.todo is not None
        batches = list(state.todo.split(self.batch_size)) if len(state.todo) else []
        done = state.batches_done
        with Progress(total=len(state.todo), description=f"{name} ({len(state.todo)} robust)",
                      enabled=self.show_progress, initial=sum(len(b) for b in batches[:done])) as bar:
            for b_index in range(done, len(batches)):
                start = time.perf_counter()
                idx = batches[b_index]
                x_adv = self._attack_batch(attack, name, b_index, x[idx], y[idx])
                with attack_mode(self.model):
                    still = predict(self.model, x_adv, self.batch_size).argmax(dim=1) == y[idx]
                state.record_batch(name, idx, still, x_adv, time.perf_counter() - start)
                bar.advance(len(idx), robust=int(state.robust.sum()))
        state.finish_attack(name)

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
    """Masks, adversarial points and progress of a run, mirrored to the state file when there is one."""

    def __init__(self, aa: AutoAttack, x: Tensor, fp: dict[str, Any]) -> None:
        self.path, self.fp, self.names = aa.state_file, fp, aa.attack_names
        self.clean = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        self.robust = self.clean.clone()
        self.flags: dict[str, Tensor] = {}
        self.x_adv = x.detach().clone()
        self.todo: Tensor | None = None
        self.attack_index, self.batches_done = 0, 0
        self.timings: dict[str, float] = {}
        self.resumed = False

    @classmethod
    def fresh(cls, aa: AutoAttack, x: Tensor, y: Tensor, fp: dict[str, Any]) -> _RunState:
        """A new run: the clean pass decides which points the first attack sees."""
        state = cls(aa, x, fp)
        start = time.perf_counter()
        with attack_mode(aa.model):
            state.clean = predict(aa.model, x, aa.batch_size).argmax(dim=1) == y
        state.robust = state.clean.clone()
        state.timings["clean"] = time.perf_counter() - start
        state.save()
        return state

    @classmethod
    def open(cls, aa: AutoAttack, x: Tensor, y: Tensor, fp: dict[str, Any]) -> _RunState:
        """Resume from ``aa.state_file`` when it exists (refusing one from another protocol), else start fresh."""
        assert aa.state_file is not None
        if not aa.state_file.exists():
            return cls.fresh(aa, x, y, fp)
        from robustlab.io.checkpoint import load_tensors

        try:
            tensors, meta = load_tensors(aa.state_file)
            info = json.loads(meta[STATE_KEY])
        except (CheckpointError, KeyError, ValueError) as exc:
            raise InputError(f"{aa.state_file} is not an AutoAttack state file: {exc}") from exc
        diff = sorted(k for k in set(fp) | set(info["fingerprint"]) if fp.get(k) != info["fingerprint"].get(k))
        if diff:
            raise InputError(
                f"{aa.state_file} belongs to another AutoAttack run (differs in: {', '.join(diff)}); "
                "use a new state_file or delete this one"
            )
        state = cls(aa, x, fp)
        dev = x.device
        state.clean, state.robust = tensors["clean"].to(dev), tensors["robust"].to(dev)
        state.flags = {n: tensors[f"flags.{n}"].to(dev) for n in info["finished"]}
        state.x_adv[tensors["broken_idx"].to(dev)] = tensors["x_broken"].to(dev, x.dtype)
        state.todo = tensors["todo"].to(dev) if "todo" in tensors else None
        state.attack_index, state.batches_done = info["attack_index"], info["batches_done"]
        state.timings, state.resumed = info["timings"], True
        return state

    def start_attack(self, a_index: int) -> None:
        """The points the attack must try: those still robust now."""
        self.attack_index, self.batches_done = a_index, 0
        self.todo = self.robust.nonzero().squeeze(1)

    def record_batch(self, name: str, idx: Tensor, still: Tensor, x_adv: Tensor, seconds: float) -> None:
        """Fold one batch's outcome in and save."""
        broken = ~still
        self.robust[idx] = still
        self.x_adv[idx[broken]] = x_adv[broken].to(self.x_adv.dtype)
        self.timings[name] = self.timings.get(name, 0.0) + seconds
        self.batches_done += 1
        self.save()

    def finish_attack(self, name: str) -> None:
        """Freeze the attack's cumulative mask and move on."""
        self.flags[name] = self.robust.clone()
        self.attack_index, self.batches_done, self.todo = self.attack_index + 1, 0, None
        self.save()

    def save(self) -> None:
        """Atomically write the state (safetensors with JSON metadata); no-op without a state file."""
        if self.path is None:
            return
        from robustlab.io.checkpoint import save_tensors

        broken = (self.clean & ~self.robust).nonzero().squeeze(1)
        tensors = {"clean": self.clean, "robust": self.robust, "broken_idx": broken, "x_broken": self.x_adv[broken]}
        tensors.update({f"flags.{n}": m for n, m in self.flags.items()})
        if self.todo is not None:
            tensors["todo"] = self.todo
        info = {
            "fingerprint": self.fp, "finished": list(self.flags), "attack_index": self.attack_index,
            "batches_done": self.batches_done, "timings": self.timings,
        }
        save_tensors(self.path, tensors, {STATE_KEY: json.dumps(info, sort_keys=True)})
