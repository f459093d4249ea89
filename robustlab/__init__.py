"""robustlab: adversarial robustness of image classifiers — attacks, robust training, honest evaluation."""

__version__ = "0.1.0"

from robustlab.core.errors import RobustlabError  # noqa: E402
from robustlab.core.threat import ThreatModel  # noqa: E402

__all__ = ["RobustlabError", "ThreatModel", "__version__"]
