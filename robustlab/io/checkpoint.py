"""Safe checkpoint files: safetensors only (never pickle), written atomically, with metadata that detects foreign,
corrupt, truncated or mismatched files before any weight is copied into a model.

Weights files carry ``"format": "robustlab-weights-v1"`` plus the model fingerprint in the safetensors header;
generic tensor files (e.g. optimizer state) carry ``"format": "robustlab-tensors-v1"``. Metadata values are strings.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
from torch import Tensor, nn

from robustlab.core.errors import CheckpointError, InputError
from robustlab.io.atomic import atomic_write_bytes, atomic_write_json, sha256_file
from robustlab.io.fingerprint import model_fingerprint, shapes_sha, unwrap_model

WEIGHTS_FORMAT = "robustlab-weights-v1"
TENSORS_FORMAT = "robustlab-tensors-v1"
_FORMATS = (WEIGHTS_FORMAT, TENSORS_FORMAT)
_MAX_HEADER = 100_000_000  # the safetensors limit
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
_SHOW = 5  # how many offending keys an error lists per kind


def save_weights(path: str | os.PathLike, model: nn.Module, metadata: Mapping[str, Any] | None = None) -> str:
    """Atomically save ``model.state_dict()`` as safetensors with format marker, fingerprint and user metadata.

    Values in ``metadata`` must be str/int/float/bool (stored as strings). When the model came from
    ``create_model`` and ``metadata`` lacks them, "model", "dataset" and "model_kwargs" (JSON) are recorded too.
    The keys "format", "parameter_names_shapes_sha" and "num_parameters" are always computed here.
    Returns the sha256 hex digest of the written file.
    """
    model = unwrap_model(model)
    meta = _user_metadata(metadata)
    spec = getattr(model, "model_spec", None)
    if isinstance(spec, dict) and spec:
        meta.setdefault("model", str(spec.get("model", "")))
        meta.setdefault("dataset", str(spec.get("dataset", "")))
        meta.setdefault("model_kwargs", json.dumps(spec.get("kwargs", {}), sort_keys=True, default=str))
    fp = model_fingerprint(model)
    meta.update(
        format=WEIGHTS_FORMAT,
        parameter_names_shapes_sha=fp["parameter_names_shapes_sha"],
        num_parameters=str(fp["num_parameters"]),
    )
    return _write(path, _cpu_tensors(model.state_dict()), meta)


def load_weights(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    expected: Mapping[str, Any] | None = None,
    sha256: str | None = None,
) -> dict[str, str]:
    """Load a ``save_weights`` file into ``model`` (strictly) and return its metadata.

    Checks, in order, each raising ``CheckpointError``: file exists; it is a well-formed, complete safetensors file
    (pickles are refused, never loaded); its sha256 equals ``sha256`` when given; it has the robustlab weights
    marker; metadata values equal ``expected`` (compared as strings); its tensor names and shapes match ``model``.
    """
    p, info, meta, data = _inspect(path, read_all=True)
    if sha256 is not None:
        _check_sha(p, data, sha256)
    _require_format(p, meta, (WEIGHTS_FORMAT,))
    if expected:
        _check_expected(p, meta, expected)
    target = unwrap_model(model)
    _check_architecture(p, info, meta, target)
    tensors = _decode(p, data)
    try:
        target.load_state_dict(tensors, strict=True)
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{p}: could not copy the weights into the model: {exc}") from exc
    return dict(meta)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Metadata of a robustlab weights or tensors file, reading only its header (same structural checks)."""
    p, _, meta, _ = _inspect(path, read_all=False)
    _require_format(p, meta, _FORMATS)
    return dict(meta)


def save_tensors(
    path: str | os.PathLike, tensors: Mapping[str, Tensor], metadata: Mapping[str, Any] | None = None
) -> str:
    """Atomically save named tensors (e.g. flattened optimizer state) with string metadata; returns the sha256."""
    bad = [k for k, v in tensors.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise InputError(f"save_tensors needs str keys and torch.Tensor values; bad entries: {bad[:_SHOW]}")
    meta = _user_metadata(metadata)
    meta["format"] = TENSORS_FORMAT
    return _write(path, _cpu_tensors(tensors), meta)


def load_tensors(path: str | os.PathLike, *, sha256: str | None = None) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Load a robustlab tensors (or weights) file onto the CPU; returns (tensors, metadata)."""
    p, _, meta, data = _inspect(path, read_all=True)
    if sha256 is not None:
        _check_sha(p, data, sha256)
    _require_format(p, meta, _FORMATS)
    return _decode(p, data), dict(meta)


# ---------------------------------------------------------------- writing


def _user_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str):
            raise InputError(f"metadata keys must be strings, got {key!r}")
        if not isinstance(value, (str, int, float, bool)):
            raise InputError(
                f"metadata[{key!r}] must be str, int, float or bool, got {type(value).__name__}; "
                "store structured values with json.dumps"
            )
        out[key] = str(value)
    return out


def _cpu_tensors(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Detached, contiguous CPU tensors; anything sharing storage (tied weights, views) is cloned for safetensors."""
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for name, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if t.numel() and (ptr in seen or storage.nbytes() != t.numel() * t.element_size()):
            t = t.clone()
            ptr = t.untyped_storage().data_ptr()
        if t.numel():
            seen.add(ptr)
        out[name] = t
    return out


def _write(path: str | os.PathLike, tensors: dict[str, Tensor], meta: dict[str, str]) -> str:
    try:
        data = safetensors.torch.save(tensors, metadata=meta)
    except Exception as exc:  # safetensors raises several types for unsupported tensors
        raise InputError(f"cannot serialise these tensors as safetensors: {exc}") from exc
    data = _canonical_header(data)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def _canonical_header(data: bytes) -> bytes:
    """Sort the header metadata (safetensors writes it in hash order), so equal content gives equal bytes and sha."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    head += b" " * (-len(head) % 8)  # keep the tensor data 8-byte aligned, as safetensors does
    return len(head).to_bytes(8, "little") + head + data[8 + n :]


# ---------------------------------------------------------------- reading and checks


def _inspect(
    path: str | os.PathLike, *, read_all: bool
) -> tuple[Path, dict[str, dict[str, Any]], dict[str, str], bytes]:
    """Validate the file's structure from its header; returns (path, tensor entries, metadata, file bytes or b"")."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint file not found: {p}")
    if not p.is_file():
        raise CheckpointError(f"{p} is not a regular file (a directory?); pass the path of a .safetensors file")
    with open(p, "rb") as fh:
        if read_all:
            data = fh.read()
            first, size = data[:8], len(data)
        else:
            data = b""
            size = os.fstat(fh.fileno()).st_size
            first = fh.read(8)
        if size < 8:
            raise CheckpointError(f"{p} is only {size} bytes: too small to be a safetensors file (empty or truncated)")
        n = int.from_bytes(first, "little")
        if n > _MAX_HEADER:
            _refuse_pickles(p, first)
            raise CheckpointError(
                f"{p} is not a safetensors file (its first 8 bytes do not encode a plausible header length); "
                "robustlab checkpoints are written by robustlab.io.checkpoint.save_weights"
            )
        if n > size - 8:
            raise CheckpointError(
                f"{p} is truncated: its header should be {n} bytes but the file has only {size} bytes; "
                "re-copy or re-create the checkpoint"
            )
        head = data[8 : 8 + n] if read_all else fh.read(n)
    header = _decode_header(p, head)
    info, meta = _validate_entries(p, header, size - 8 - n)
    return p, info, meta, data


def _refuse_pickles(p: Path, first: bytes) -> None:
    """Name torch/pickle files precisely (only called once the bytes cannot be a safetensors length prefix)."""
    if first[:4] == b"PK\x03\x04":
        raise CheckpointError(
            f"{p} is a zip archive, most likely a torch.save() pickle checkpoint. robustlab never unpickles files "
            "(unpickling can run arbitrary code). In a trusted session, torch.load(..., weights_only=True) it, "
            "load_state_dict into the matching robustlab model and write it with robustlab.io.checkpoint.save_weights"
        )
    if len(first) >= 2 and first[0] == 0x80 and 2 <= first[1] <= 5:
        raise CheckpointError(
            f"{p} is a Python pickle (legacy torch.save format), not safetensors. robustlab never unpickles files; "
            "convert it in a trusted session with robustlab.io.checkpoint.save_weights"
        )


def _decode_header(p: Path, head: bytes) -> dict[str, Any]:
    if not head.lstrip(b" ").startswith(b"{"):
        raise CheckpointError(f"{p} is not a safetensors file (no JSON header after the length prefix)")
    try:
        header = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{p} has a corrupt safetensors header ({exc}); the file is damaged or truncated"
        ) from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{p} has a corrupt safetensors header (not a JSON object)")
    return header


def _validate_entries(
    p: Path, header: dict[str, Any], data_len: int
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise CheckpointError(f"{p} has corrupt header metadata (it must map strings to strings)")
    end_max = 0
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            nbytes = _DTYPE_BYTES[dtype] * math.prod(int(d) for d in shape)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{p} has a corrupt or unsupported header entry for tensor {name!r}") from exc
        if not (isinstance(begin, int) and isinstance(end, int)) or end - begin != nbytes or begin < 0:
            raise CheckpointError(f"{p} is corrupt: offsets of tensor {name!r} do not match its dtype and shape")
        end_max = max(end_max, end)
    if end_max > data_len:
        raise CheckpointError(
            f"{p} is truncated: the header describes {end_max} bytes of tensor data but only {data_len} are present; "
            "re-copy or re-create the checkpoint"
        )
    if end_max < data_len:
        raise CheckpointError(f"{p} is corrupt: {data_len - end_max} unexpected bytes follow the tensor data")
    return header, meta


def _check_sha(p: Path, data: bytes, sha256: str) -> None:
    want = sha256.strip().lower().removeprefix("sha256:")
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise CheckpointError(
            f"{p} has sha256 {got} but {want} was expected: the file was modified, corrupted or is a different file"
        )


def _require_format(p: Path, meta: dict[str, str], allowed: tuple[str, ...]) -> None:
    fmt = meta.get("format")
    if fmt is None:
        keys = ", ".join(sorted(meta)[:_SHOW]) or "none"
        raise CheckpointError(
            f"{p} is a safetensors file from outside robustlab (no 'format' marker in its metadata; metadata keys: "
            f"{keys}). To use foreign weights, load them with safetensors.torch.load_file, check them, "
            "load_state_dict into the robustlab model and save it with robustlab.io.checkpoint.save_weights"
        )
    if fmt not in allowed:
        raise CheckpointError(f"{p} has format {fmt!r}, but {' or '.join(repr(a) for a in allowed)} is needed here")


def _check_expected(p: Path, meta: dict[str, str], expected: Mapping[str, Any]) -> None:
    problems = []
    for key, want in expected.items():
        if key not in meta:
            problems.append(f"{key}: missing (expected {str(want)!r})")
        elif meta[key] != str(want):
            problems.append(f"{key}: checkpoint has {meta[key]!r}, expected {str(want)!r}")
    if problems:
        raise CheckpointError(f"{p} does not match the expected metadata: " + "; ".join(problems))


def _check_architecture(p: Path, info: dict[str, dict[str, Any]], meta: dict[str, str], model: nn.Module) -> None:
    file_shapes = {k: tuple(int(d) for d in v["shape"]) for k, v in info.items()}
    model_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in model_shapes if k not in file_shapes]
    unexpected = [k for k in file_shapes if k not in model_shapes]
    mismatched = [
        f"{k} (file {list(file_shapes[k])}, model {list(model_shapes[k])})"
        for k in model_shapes
        if k in file_shapes and file_shapes[k] != model_shapes[k]
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)):
            if keys:
                more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
                parts.append(f"{len(keys)} {label} key(s): {', '.join(keys[:_SHOW])}{more}")
        hint = ""
        if unexpected and all("net." + k in missing for k in unexpected):
            hint = " The file holds a bare net's weights: load it into model.net, not the Normalized wrapper."
        elif unexpected and all(k.startswith("net.") and k[4:] in missing for k in unexpected):
            hint = " The file holds a Normalized model's weights: load it into the wrapper, not into .net."
        what = f" (saved for model {meta['model']!r}, dataset {meta.get('dataset', '?')!r})" if "model" in meta else ""
        raise CheckpointError(f"{p} was saved from a different architecture{what}: " + "; ".join(parts) + "." + hint)
    stored = meta.get("parameter_names_shapes_sha")
    if stored is not None and stored != shapes_sha(file_shapes):
        raise CheckpointError(f"{p} is inconsistent: its fingerprint does not match its own tensors (edited file?)")


def _decode(p: Path, data: bytes) -> dict[str, Tensor]:
    try:
        return safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own error type for malformed buffers
        raise CheckpointError(f"{p} could not be decoded as safetensors: {exc}") from exc


__all__ = [
    "TENSORS_FORMAT",
    "WEIGHTS_FORMAT",
    "load_tensors",
    "load_weights",
    "read_metadata",
    "save_tensors",
    "save_weights",
]


# --------------------------------------------------------------------------- two-phase training checkpoints
def commit_checkpoint(
    ckpt_dir: Path,
    module: nn.Module,
    sidecar: dict[str, Tensor],
    state: dict[str, Any],
    *,
    step: int,
    state_key: str,
    meta: dict[str, Any],
    sidecar_meta: dict[str, str],
) -> dict[str, Any]:
    """Commit a resumable checkpoint in two phases; returns the state as written.

    The sidecar (optimizer state and anything else that must move with the weights) goes to
    ``optim-<step>.safetensors`` first; then ``last.safetensors`` (the weights, whose metadata under ``state_key``
    holds ``state`` plus the sidecar's name and sha256) replaces the old one atomically; then older sidecars are
    removed. A kill at any moment leaves a consistent pair. ``last.json`` mirrors the state (``*_meta`` left out).
    """
    name = f"optim-{step:09d}.safetensors"
    save_tensors(ckpt_dir / name, sidecar, sidecar_meta)
    full = {**state, "optimizer_file": name, "optimizer_sha256": sha256_file(ckpt_dir / name)}
    save_weights(ckpt_dir / "last.safetensors", module, {**meta, state_key: json.dumps(full)})
    atomic_write_json(ckpt_dir / "last.json", {k: v for k, v in full.items() if not k.endswith("_meta")})
    for old in ckpt_dir.glob("optim-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return full


def read_sidecar(ckpt_dir: Path, state: dict[str, Any]) -> dict[str, Tensor]:
    """The sidecar tensors a committed state names, after checking they are the ones committed with the weights."""
    path = ckpt_dir / state["optimizer_file"]
    if not path.exists() or sha256_file(path) != state["optimizer_sha256"]:
        raise CheckpointError(f"optimizer state {path} is missing or does not match the weights (corrupt run folder)")
    return load_tensors(path)[0]
