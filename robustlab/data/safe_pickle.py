"""A restricted unpickler for dataset files: numpy arrays and plain containers only, never arbitrary code.

Dataset pickles (the MNIST ``mnist.pkl.gz``, CIFAR-10 ``cifar-10-batches-py``) come from outside the project, so
they are read with an unpickler whose ``find_class`` only resolves the handful of globals numpy needs to rebuild
arrays. Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``...) raises ``UnsafePickleError``
before anything is called.
"""

from __future__ import annotations

import codecs
import importlib
import io
import pickle
from collections.abc import Callable
from typing import Any, Protocol

from robustlab.core.errors import RobustlabError


class UnsafePickleError(RobustlabError, pickle.UnpicklingError):
    """A pickle referenced a global outside the numpy-array allow-list."""


_LATIN1_NAMES = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"}


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for ``_codecs.encode`` (how protocol-2 pickles store bytes), restricted to latin-1."""
    if not isinstance(encoding, str) or encoding.lower().replace("_", "-") not in _LATIN1_NAMES:
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}: only latin-1 is allowed")
    return codecs.encode(text, "latin-1", errors)


def _numpy_attr(modules: tuple[str, ...], name: str) -> Callable[[], Any]:
    """Resolve ``name`` from the first importable numpy module (numpy 2 renamed numpy.core to numpy._core)."""

    def resolve() -> Any:
        for module in modules:
            try:
                return getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                continue
        raise UnsafePickleError(f"numpy provides no {name} in {modules}")

    return resolve


_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")

_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): _numpy_attr(("numpy",), "ndarray"),
    ("numpy", "dtype"): _numpy_attr(("numpy",), "dtype"),
    ("numpy.core.multiarray", "_reconstruct"): _numpy_attr(_MULTIARRAY, "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_attr(_MULTIARRAY, "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): _numpy_attr(_NUMERIC, "_frombuffer"),  # protocol-5 arrays
    ("numpy._core.numeric", "_frombuffer"): _numpy_attr(_NUMERIC, "_frombuffer"),
    ("_codecs", "encode"): lambda: _latin1_encode,  # how protocol-2 pickles from Python 3 store bytes
}
for _module in ("builtins", "__builtin__"):  # __builtin__: Python 2 pickles (find_class sees the raw name)
    for _obj in (list, dict, tuple, set, frozenset, bytes, bytearray):
        _ALLOWED[(_module, _obj.__name__)] = (lambda o: lambda: o)(_obj)


class Readable(Protocol):
    """What ``pickle.Unpickler`` reads from: an open binary file, ``gzip.open(...)``, ``io.BytesIO``."""

    def read(self, n: int, /) -> bytes: ...

    def readline(self) -> bytes: ...


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only numpy array-reconstruction globals and builtin containers."""

    def find_class(self, module: str, name: str) -> Any:
        """Return an allow-listed global, refuse everything else."""
        resolve = _ALLOWED.get((module, name))
        if resolve is None:
            raise UnsafePickleError(
                f"refusing to unpickle global {module}.{name}: dataset pickles may only hold numpy arrays "
                "and plain containers (the file is corrupt or malicious)"
            )
        return resolve()


def safe_load(fh: Readable, *, encoding: str = "ASCII") -> Any:
    """Unpickle from a binary file with the restricted unpickler (``encoding='latin1'`` for Python 2 pickles)."""
    return RestrictedUnpickler(fh, encoding=encoding).load()


def safe_loads(data: bytes, *, encoding: str = "ASCII") -> Any:
    """Unpickle bytes with the restricted unpickler."""
    return safe_load(io.BytesIO(data), encoding=encoding)
