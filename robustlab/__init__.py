"""robustlab: adversarial robustness of image classifiers — attacks, robust training, honest evaluation.

``robustlab.evaluate(model, data, threat="linf:8/255")`` evaluates any model (AutoAttack standard by default, with
the sanity checks); ``robustlab.ThreatModel`` is the threat model every result names.
"""

from typing import Any

__version__ = "0.1.0"

from robustlab.core.errors import RobustlabError  # noqa: E402
from robustlab.core.threat import ThreatModel  # noqa: E402

__all__ = ["RobustlabError", "ThreatModel", "__version__", "evaluate"]


def __getattr__(name: str) -> Any:
    """``robustlab.evaluate`` is imported on first use, so ``import robustlab`` stays light."""
    if name == "evaluate":
        from robustlab.app.evaluate import evaluate_model

        return evaluate_model
    raise AttributeError(f"module 'robustlab' has no attribute {name!r}")
