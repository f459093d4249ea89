"""robustlab: adversarial robustness of image classifiers — attacks, robust training, honest evaluation."""

__version__ = "0.1.0"

from robustlab.errors import RobustlabError  # noqa: E402
from robustlab.threat import ThreatModel  # noqa: E402

__all__ = ["RobustlabError", "ThreatModel", "__version__"]
