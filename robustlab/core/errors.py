"""Exception types: every user-facing failure raises one of these with a message that says what to do."""

from __future__ import annotations


class RobustlabError(Exception):
    """Base class for errors robustlab raises on purpose (bad input, missing files, bad configs)."""


class InputError(RobustlabError, ValueError):
    """Images, labels or hyper-parameters that violate the documented contract."""


class NoGradientError(InputError):
    """A model whose output has no gradient path to its input (a hard vote, an argmax): gradient attacks cannot run
    on it; the message names what can (a differentiable surrogate view, BPDA)."""


class ConfigError(RobustlabError, ValueError):
    """A preset or YAML config that is unknown, mistyped or inconsistent."""


class DatasetNotFoundError(RobustlabError, FileNotFoundError):
    """No source for a dataset could be found; the message says how to get one."""


class ChecksumError(RobustlabError):
    """A data or checkpoint file does not have the expected hash (corrupt, truncated or foreign)."""


class CheckpointError(RobustlabError):
    """A checkpoint that cannot be loaded into the requested model (corrupt, foreign, wrong architecture)."""


class OutputError(RobustlabError, OSError):
    """A result, checkpoint or report that cannot be written (read-only folder, full disk, permissions)."""


class UnknownNameError(RobustlabError, KeyError):
    """A registry lookup for a name that does not exist; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would repr() the message, adding quotes
        return str(self.args[0]) if self.args else ""
