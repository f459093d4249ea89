"""Config bases: pydantic models whose unknown keys are errors, and one readable error for a bad config."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from robustlab.core.errors import ConfigError


def plain_run_name(v: str) -> str:
    """A run name becomes a folder under the runs directory: refuse empty names, separators and dot-names."""
    if not v or any(c in v for c in "/\\") or v.startswith("."):
        raise ValueError(f"run name {v!r} must be a plain folder name")
    return v


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=False)


def parse_config(data: dict[str, Any], cls: type[BaseModel], where: str = "") -> Any:
    """Validate a plain dict into a config, turning pydantic's errors into one readable ConfigError.

    ``where`` prefixes each error's key path (``train`` -> ``train.optimizer.lr``).
    """
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            path = ".".join(str(p) for p in ((where,) if where else ()) + tuple(err["loc"]))
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (typo?)"
            lines.append(f"  {path or '(top level)'}: {msg}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
