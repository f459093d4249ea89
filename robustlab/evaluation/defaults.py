"""Protocol defaults and rewrites: what ``robustlab evaluate`` runs when the user names no protocol, the
``autoattack-*`` protocols, and a protocol moved to another radius (with its large-eps check following it).

Everything here works on the plain dict form of an :class:`~robustlab.evaluation.protocol.EvalConfig` (as YAML
and ``--set`` overrides write it), so a caller can merge overrides before validating once.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from robustlab.core.dicts import deep_merge
from robustlab.core.errors import ConfigError

#: PGD-50 with 3 restarts: the default protocol for a model whose run names no protocol.
DEFAULT_PGD = {"name": "pgd", "steps": 50, "restarts": 3}
#: The large-eps collapse check runs at this multiple of the evaluated radius (capped at 1 for L-inf).
LARGE_EPS_FACTOR = 4.0
AUTOATTACK_VERSIONS = ("standard", "plus", "rand", "custom")


def large_eps_for(norm: str, eps: float) -> float:
    """A radius at which any model must collapse: ``LARGE_EPS_FACTOR * eps``, at most 1 for L-inf (the whole box)."""
    big = LARGE_EPS_FACTOR * eps
    return min(1.0, big) if norm == "linf" else big


def default_protocol(norm: str, eps: float) -> dict[str, Any]:
    """PGD-50x3 at (norm, eps) with the large-eps collapse check."""
    return {"attacks": [{**DEFAULT_PGD, "norm": norm, "eps": eps}], "large_eps": large_eps_for(norm, eps)}


def protocol_threat(eval_dict: dict[str, Any]) -> tuple[str, float]:
    """(norm, eps) of a protocol: its first attack's, else its AutoAttack's."""
    if eval_dict.get("attacks"):
        first = eval_dict["attacks"][0]
        return first.get("norm", "linf"), float(first["eps"])
    aa = eval_dict.get("autoattack") or {}
    if "eps" not in aa:
        raise ConfigError("the protocol has neither attacks nor an AutoAttack threat model")
    return aa.get("norm", "linf"), float(aa["eps"])


def as_autoattack(eval_dict: dict[str, Any], version: str) -> dict[str, Any]:
    """The protocol with its attacks replaced by AutoAttack ``version`` at the same threat model (split, n, seed and
    batch size kept). AutoAttack carries its own checks, so the large-eps re-run of PGD is dropped."""
    if version not in AUTOATTACK_VERSIONS:
        raise ConfigError(f"unknown AutoAttack version {version!r}; valid: {', '.join(AUTOATTACK_VERSIONS)}")
    norm, eps = protocol_threat(eval_dict)
    out = {k: copy.deepcopy(v) for k, v in eval_dict.items() if k not in ("attacks", "autoattack", "large_eps")}
    out.update(attacks=[], large_eps=None, autoattack={"version": version, "norm": norm, "eps": eps})
    return out


def at_eps(eval_dict: dict[str, Any], eps: float) -> dict[str, Any]:
    """The protocol with every attack (and AutoAttack) at radius ``eps``; steps and step sizes stay as configured.

    The large-eps check follows: it keeps its radius when that is still above ``eps`` by the same ratio, and is
    scaled with ``eps`` otherwise, so the check never runs at or below the evaluated radius."""
    if not eps > 0:
        raise ConfigError(f"eps must be > 0, got {eps}")
    out = copy.deepcopy(eval_dict)
    norm, old = protocol_threat(out)
    out["attacks"] = [{**a, "eps": eps} for a in out.get("attacks") or []]
    for key in ("autoattack", "classifier_only"):
        if out.get(key):
            out[key]["eps"] = eps
    if out.get("large_eps") is not None:
        scaled = max(float(out["large_eps"]), float(out["large_eps"]) * eps / old)
        out["large_eps"] = min(1.0, scaled) if norm == "linf" else scaled
    return out


PROTOCOL_CHOICES = ("preset", "pgd", *(f"autoattack-{v}" for v in AUTOATTACK_VERSIONS), "classifier-only")


def with_classifier_only(eval_dict: dict[str, Any]) -> dict[str, Any]:
    """The protocol plus CARSO's classifier-only AutoAttack standard at its threat model (the paper's MNIST protocol,
    reported beside the end-to-end attacks, never in their worst case)."""
    norm, eps = protocol_threat(eval_dict)
    return {**copy.deepcopy(eval_dict), "classifier_only": {"version": "standard", "norm": norm, "eps": eps}}


def protocol_for_run(
    folder: str | Path,
    *,
    protocol: str = "preset",
    preset_eval: dict[str, Any] | None = None,
    eps: float | None = None,
    norm: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(protocol dict, published numbers) for evaluating the run in ``folder``.

    The base protocol is ``preset_eval`` when given (``--preset``), else the run's own preset protocol, else PGD-50x3
    at the run's training threat model, else PGD-50x3 at ``eps``/``norm``. ``protocol`` then picks ``preset`` (the
    base), ``pgd`` (PGD-50x3 at the base's threat model), ``autoattack-<version>`` or ``classifier-only`` (the
    base plus CARSO's classifier-only AutoAttack standard, reported apart); ``overrides`` (the ``eval``
    part of ``--set``) are merged, and ``eps`` moves every attack and the large-eps check to that radius.
    """
    from robustlab.runs import run_protocol_source, training_attack

    if protocol not in PROTOCOL_CHOICES:
        raise ConfigError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOL_CHOICES)}")
    published: dict[str, Any] = {}
    base = preset_eval
    if base is None:
        base, published = run_protocol_source(folder)
    if base is None:
        attack = training_attack(folder)
        if attack is not None:
            base = default_protocol(norm or attack.get("norm", "linf"), float(attack["eps"]))
        elif eps is not None:
            base = default_protocol(norm or "linf", eps)
        elif (overrides or {}).get("attacks") or (overrides or {}).get("autoattack"):
            base = {}
        else:
            raise ConfigError(f"{folder} names no protocol (no preset.yaml, and no training attack in config.yaml): "
                              "pass --eps E (and --norm) for PGD-50x3 at that radius, or --preset NAME for a "
                              "preset's protocol")
    if protocol == "pgd":
        base = {**default_protocol(*protocol_threat(base)),
                **{k: v for k, v in base.items() if k in ("split", "n", "batch_size", "seed")}}
    elif protocol.startswith("autoattack-"):
        base = as_autoattack(base, protocol.split("-", 1)[1])
    elif protocol == "classifier-only":
        base = with_classifier_only(base)
    merged = deep_merge(base, overrides or {})
    if eps is not None:
        merged = at_eps(merged, eps)
    return merged, published


def parse_threat(threat: Any) -> tuple[str, float]:
    """(norm, eps) from a ``ThreatModel`` or text such as ``"linf:8/255"``, ``"l2:0.5"`` (eps may be a fraction)."""
    from robustlab.core.threat import ThreatModel, canonical_norm

    if isinstance(threat, ThreatModel):
        return threat.norm, threat.eps
    if not isinstance(threat, str) or ":" not in threat:
        raise ConfigError(f"threat must be a ThreatModel or text like 'linf:8/255', got {threat!r}")
    norm, _, value = threat.partition(":")
    num, _, den = value.partition("/")
    try:
        eps = float(num) / (float(den) if den else 1.0)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"threat {threat!r}: eps must be a number or a fraction such as 8/255") from None
    parsed = ThreatModel(canonical_norm(norm.strip()), eps)  # validates the norm and the radius
    return parsed.norm, parsed.eps


def protocol_for_model(protocol: Any, threat: Any | None, *, n: int | None = None,
                       batch_size: int | None = None) -> dict[str, Any]:
    """The protocol dict for evaluating a model that is not a robustlab run: ``protocol`` is a name
    (``autoattack-standard|plus|rand|custom``, ``pgd`` = PGD-50x3), an ``EvalConfig`` or its dict; ``threat`` is
    required unless the protocol carries one. Every protocol keeps the large-eps collapse check."""
    if hasattr(protocol, "model_dump"):
        protocol = protocol.model_dump(mode="json", exclude_none=True)
    if isinstance(protocol, dict):
        out = copy.deepcopy(protocol)
        if threat is not None:
            out = at_eps(out, parse_threat(threat)[1])
    else:
        if threat is None:
            raise ConfigError(f"protocol {protocol!r} needs a threat model: pass threat='linf:8/255' (CLI: --eps "
                              "and --norm)")
        norm, eps = parse_threat(threat)
        base = default_protocol(norm, eps)
        if protocol == "pgd":
            out = base
        elif isinstance(protocol, str) and protocol.startswith("autoattack-"):
            out = {**as_autoattack(base, protocol.split("-", 1)[1]), "large_eps": large_eps_for(norm, eps)}
        elif protocol == "classifier-only":  # CARSO models: PGD-50x3 end to end plus the classifier-only AutoAttack
            out = with_classifier_only(base)
        else:
            choices = ", ".join(c for c in PROTOCOL_CHOICES if c != "preset")
            raise ConfigError(f"unknown protocol {protocol!r}; valid: {choices}, an EvalConfig or its dict")
    if n is not None:
        out["n"] = n
    if batch_size is not None:
        out["batch_size"] = batch_size
    return out
