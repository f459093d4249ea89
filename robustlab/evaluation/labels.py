"""Attack labels written into results and the store: every setting that is set appears in the label, so two
evaluations that differ in any setting (step size, loss, random start) never share one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Settings shown in a label's head (``pgd-50x3``) or tail (EoT, surrogate), or carried elsewhere (the threat).
_PLACED = ("name", "steps", "restarts", "norm", "eps", "threat", "eot_samples", "surrogate", "protocol", "target")


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def attack_head(settings: Mapping[str, Any]) -> str:
    """``pgd-50x3 step_size=0.01``: name, steps and restarts, then every other set setting as ``key=value``."""
    steps = f"-{settings['steps']}" if settings.get("steps") else ""
    restarts = f"x{settings['restarts']}" if (settings.get("restarts") or 1) > 1 else ""
    extra = "".join(f" {k}={_value(v)}" for k, v in sorted(settings.items())
                    if k not in _PLACED and v is not None and not isinstance(v, (dict, list)))
    return f"{settings.get('name', '?')}{steps}{restarts}{extra}"


def attack_tail(settings: Mapping[str, Any]) -> str:
    """`` eot=20 via logit``: how the gradients were taken, when that differs from one plain pass."""
    eot = f" eot={settings['eot_samples']}" if (settings.get("eot_samples") or 1) > 1 else ""
    via = f" via {settings['surrogate']}" if settings.get("surrogate") else ""
    return eot + via


def attack_label(settings: Mapping[str, Any]) -> str:
    """``pgd-50x3 step_size=0.01 linf eps=0.3 eot=20``: the head, the threat model, then the tail."""
    return f"{attack_head(settings)} {settings['norm']} eps={settings['eps']:.4g}{attack_tail(settings)}"


#: Protocol entries crafted on a CARSO model's classifier alone (:mod:`robustlab.evaluation.classifier_only`) start
#: with this; their label carries :data:`CLASSIFIER_ONLY_MARK`, so no table reads them as attacks on the model.
CLASSIFIER_ONLY = "classifier-only"
CLASSIFIER_ONLY_MARK = " (judged on CARSO, not in worst case)"


def is_classifier_only(entry: Mapping[str, Any]) -> bool:
    """Whether a stored protocol entry is the classifier-only protocol (outside the worst case)."""
    return str(entry.get("name", "")).startswith(CLASSIFIER_ONLY)


def entry_label(entry: Mapping[str, Any]) -> str:
    """A stored protocol entry's label without its threat model. Entries name the registry attack and carry its
    settings; entries written by hand-built protocols (AToP) carry a whole label as their name. Classifier-only
    entries are marked as judged on CARSO and outside the worst case."""
    name = str(entry.get("name", "?"))
    if name.startswith(CLASSIFIER_ONLY):
        return " ".join(name.split()[:2]) + CLASSIFIER_ONLY_MARK
    if name.startswith("autoattack"):
        return name.split(" ")[0]
    if " " in name:
        return " ".join(t for t in name.split() if t not in ("linf", "l2", "l1") and not t.startswith("eps="))
    return attack_head(entry) + attack_tail(entry)


#: Published numbers (a preset's ``published``) are keyed by the registry name of the attack that measured them,
#: except where the paper's column has another name.
_PUBLISHED_KEY_EXCEPTIONS = {"mt-pgd": "multi-target"}


def published_key(attack: str) -> str:
    """The key of registered attack ``attack``'s published counterpart in a preset (``mt-pgd`` -> ``multi-target``)."""
    return _PUBLISHED_KEY_EXCEPTIONS.get(attack, attack)
