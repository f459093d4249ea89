"""Architecture fingerprints, so a checkpoint can tell that it belongs to a different network."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip torch.compile (``_orig_mod``) and (Distributed)DataParallel wrappers so state_dict keys are canonical."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
            continue
        compiled = getattr(model, "_orig_mod", None)
        if not isinstance(compiled, nn.Module):
            return model
        model = compiled


def shapes_sha(shapes: Mapping[str, Iterable[int]]) -> str:
    """sha256 over the sorted ``name:d0,d1,...`` lines of a state_dict's names and shapes (dtypes ignored)."""
    lines = sorted(f"{name}:{','.join(str(int(d)) for d in shape)}" for name, shape in shapes.items())
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """{"parameter_names_shapes_sha": sha of all state_dict names+shapes (buffers included), "num_parameters": int}."""
    model = unwrap_model(model)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return {
        "parameter_names_shapes_sha": shapes_sha(shapes),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
