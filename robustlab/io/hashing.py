"""The hash that decides whether a run folder may resume: sha256 of a config's JSON form, stable across versions."""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Fields added after runs existed whose unset value cannot change training: left out of the hash while unset, so
# adding them did not orphan every earlier run folder.
UNSET_FIELDS_OUT_OF_HASH = ("surrogate", "path", "test_path", "label_column", "factory", "args")


def _drop_unset(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _drop_unset(v) for k, v in data.items() if not (k in UNSET_FIELDS_OUT_OF_HASH and v is None)}
    if isinstance(data, list):
        return [_drop_unset(v) for v in data]
    return data


def stable_config_hash(data: dict[str, Any]) -> str:
    """16 hex digits of sha256 over ``data`` (a config's ``model_dump(mode="json")``), unset late fields left out."""
    return hashlib.sha256(json.dumps(_drop_unset(data), sort_keys=True).encode()).hexdigest()[:16]


__all__ = ["UNSET_FIELDS_OUT_OF_HASH", "stable_config_hash"]
