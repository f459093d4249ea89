"""Models users bring: ``path/to/file.py:NAME`` or ``package.module:NAME`` (a class or a function returning an
``nn.Module``), built with keyword arguments, loaded with weights from ``.safetensors`` or from a PyTorch state dict
read only through ``torch.load(weights_only=True)`` (PyTorch's restricted unpickler: tensors and plain containers,
nothing else is built), and wrapped in ``Normalized`` when the model expects normalised inputs."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import pickle
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.core.errors import CheckpointError, InputError
from robustlab.io.atomic import sha256_file
from robustlab.models.normalized import Normalized

SPEC_FORM = "path/to/file.py:NAME or package.module:NAME"
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_NESTED_KEYS = ("state_dict", "model_state_dict", "model")  # where training scripts commonly nest the weights


def _split_spec(spec: str) -> tuple[str, str]:
    where, sep, name = str(spec).rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise InputError(f"model {spec!r} must look like {SPEC_FORM}")
    return where, name


def _import_file(path: Path) -> ModuleType:
    """Execute a user's Python file as a module (its folder first on ``sys.path``, so sibling imports work)."""
    key = "robustlab_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12] + "_" + path.stem
    if key in sys.modules:
        return sys.modules[key]
    loader_spec = importlib.util.spec_from_file_location(key, path)
    if loader_spec is None or loader_spec.loader is None:
        raise InputError(f"cannot import {path} as Python")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[key] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[key]
        raise InputError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def _import_module(where: str) -> ModuleType:
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
        if not path.is_file():
            raise InputError(f"no Python file at {path} (model spec form: {SPEC_FORM})")
        return _import_file(path)
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        raise InputError(f"no Python module {where!r} importable ({exc}); give a file path instead: "
                         f"{SPEC_FORM}") from None
    except Exception as exc:
        raise InputError(f"importing {where} failed: {type(exc).__name__}: {exc}") from exc


def _defined_names(module: ModuleType) -> list[str]:
    """Classes and functions the module defines itself (not the ones it imports)."""
    return sorted(n for n, v in vars(module).items()
                  if not n.startswith("_") and (inspect.isclass(v) or inspect.isfunction(v))
                  and getattr(v, "__module__", None) == module.__name__)


def _missing_arguments(factory: Any, args: dict[str, Any]) -> list[str]:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.default is inspect.Parameter.empty and p.name not in args
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def build_model(spec: str, args: dict[str, Any] | None = None) -> nn.Module:
    """Call the class or function ``spec`` names with keyword ``args``; the result must be an ``nn.Module``."""
    where, name = _split_spec(spec)
    module = _import_module(where)
    if not hasattr(module, name):
        raise InputError(f"{where} has no {name!r}; it defines: {', '.join(_defined_names(module)) or 'nothing'}")
    factory, args = getattr(module, name), dict(args or {})
    if not callable(factory):
        raise InputError(f"{spec} is a {type(factory).__name__}, not a class or a function returning a model")
    missing = _missing_arguments(factory, args)
    if missing:
        raise InputError(f"{spec} cannot be built: it needs {', '.join(missing)} (pass "
                         + " ".join(f"--model-arg {m}=..." for m in missing) + ", or args: in a run config)")
    try:
        model = factory(**args)
    except TypeError as exc:
        raise InputError(f"{spec} could not be built with {args}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise InputError(f"{spec}({', '.join(f'{k}={v!r}' for k, v in args.items())}) returned a "
                         f"{type(model).__name__}, not a torch.nn.Module")
    return model


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a weights file: safetensors, or a state dict through ``torch.load(weights_only=True)`` (a pickled
    whole model or any other object is refused without being built). A state dict nested under ``state_dict``/
    ``model`` is unwrapped and a DataParallel ``module.`` prefix dropped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path} could not be read as safetensors: {exc}") from None
    if path.suffix not in STATE_DICT_SUFFIXES:
        raise CheckpointError(f"{path}: weights must be .safetensors or a PyTorch state dict "
                              f"({', '.join(STATE_DICT_SUFFIXES)})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise CheckpointError(f"{path} is not a plain state dict: PyTorch's restricted loader (weights_only=True) "
                              f"refused it ({first}). Save model.state_dict() instead of the model, then "
                              "`robustlab convert-weights`") from None
    for key in _NESTED_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, Tensor)
                                                        for k, v in obj.items()):
        raise CheckpointError(f"{path} is not a plain state dict (a mapping of names to tensors); got "
                              f"{type(obj).__name__}")
    if all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def load_state_into(model: nn.Module, tensors: dict[str, Tensor], path: str | Path) -> None:
    """Copy ``tensors`` into ``model`` exactly; a misfit lists every missing, unexpected and misshapen key."""
    own = model.state_dict()
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    shapes = [f"{k} {tuple(tensors[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in tensors and tuple(tensors[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{label}: {', '.join(keys)}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape (file vs model)", shapes)) if keys]
        raise CheckpointError(f"{path} does not fit the model: " + "; ".join(parts))
    model.load_state_dict(tensors, strict=True)


def _floats(text: Any, what: str) -> list[float]:
    values = text.split(",") if isinstance(text, str) else list(text)
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise InputError(f"{what} must be comma-separated numbers, got {text!r}") from None


def load_user_model(spec: str, *, args: dict[str, Any] | None = None, weights: str | Path | None = None,
                    mean: Any = None, std: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, what identifies it: spec, args, weights file and its sha256, mean/std) for a user's
    model; ``mean``/``std`` (one value or one per channel) wrap it in ``Normalized``."""
    if (mean is None) != (std is None):
        raise InputError("--mean and --std go together: pass both (one value per channel) or neither")
    model = build_model(spec, args)
    info: dict[str, Any] = {"model": spec, "model_args": dict(args or {})}
    if weights is not None:
        load_state_into(model, read_state_dict(weights), weights)
        info.update(weights=str(weights), weights_sha256=sha256_file(weights))
    if mean is not None:
        m, s = _floats(mean, "--mean"), _floats(std, "--std")
        model = Normalized(model, m, s)
        info.update(mean=m, std=s)
    return model.eval(), info


def convert_weights(src: str | Path, dst: str | Path) -> Path:
    """Write the state dict in ``src`` (read with ``weights_only=True``) as safetensors at ``dst``."""
    from safetensors.torch import save_file

    from robustlab.io.atomic import atomic_write_bytes

    dst = Path(dst)
    if dst.suffix != ".safetensors":
        raise InputError(f"{dst} must end in .safetensors")
    tensors = {k: v.detach().cpu().contiguous() for k, v in read_state_dict(src).items()}
    tmp = dst.with_name(f".{dst.name}.tmp")
    save_file(tensors, str(tmp), metadata={"converted_from": Path(src).name})
    data = tmp.read_bytes()
    tmp.unlink()
    atomic_write_bytes(dst, data)
    return dst
