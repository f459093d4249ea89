"""Loading what a run trained: its model (registry model, user factory or CARSO, rebuilt from the checkpoint's
metadata), the data it was evaluated on, and the first test points for an analysis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.core.errors import CheckpointError, InputError
from robustlab.data import as_dataset, load_dataset
from robustlab.data.resolve import AnyData
from robustlab.data.user import MinMaxScaler
from robustlab.io.checkpoint import load_weights, read_metadata
from robustlab.models import create_model
from robustlab.runs.folder import SCALER_FILE, resolve_checkpoint, run_config, run_folder_of
from robustlab.runs.user_model import build_model
from robustlab.utils.device import model_device, resolve_device


def model_from_metadata(meta: dict[str, str], where: Path) -> nn.Module:
    """An untrained model of the architecture a checkpoint's metadata names (user factory or registry model)."""
    if "model_factory" in meta:
        return build_model(meta["model_factory"], json.loads(meta.get("model_args", "{}")))
    if "model" not in meta or "dataset" not in meta:
        raise CheckpointError(f"{where} has no model/dataset metadata; it was not written by the robustlab trainer")
    kwargs = json.loads(meta.get("model_kwargs", "{}"))
    dataset: Any = meta["dataset"]
    if "dataset_info" in meta:  # a user's data set: its facts travel in the checkpoint
        from robustlab.data import DatasetInfo

        facts = json.loads(meta["dataset_info"])
        dataset = DatasetInfo(facts["name"], facts["num_classes"], tuple(facts["shape"]), tuple(facts["mean"]),
                              tuple(facts["std"]), tuple(facts.get("class_names", ())))
    return create_model(meta["model"], dataset, **kwargs)


def load_trained_model(run_or_ckpt: str | Path, which: str = "best",
                       device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a run folder (or of a checkpoint file written by the trainer), load its weights, put it
    in eval mode on ``device`` (``auto`` = CUDA when available); returns (model, checkpoint metadata)."""
    path = resolve_checkpoint(run_or_ckpt, which)
    meta = read_metadata(path)
    model = model_from_metadata(meta, path)
    load_weights(path, model)
    model.eval()
    return model.to(resolve_device(device)), meta


def run_data(folder: str | Path, split: str = "test", data: str | Path | None = None) -> AnyData:
    """The data a run trained on a user's file is evaluated on: ``data`` if given, else its config's
    ``data.test_path``; a table is scaled with the run's own scaler (fitted on its training rows)."""
    folder = Path(folder)
    cfg_data = run_config(folder).get("data") or {}
    source = data if data is not None else cfg_data.get("test_path")
    if source is None:
        raise InputError(f"{folder} was trained on a user's file ({cfg_data.get('path', '?')}) and names no "
                         "data.test_path: pass --data with the test set")
    scaler_path = folder / SCALER_FILE
    scaler = MinMaxScaler.load(scaler_path) if scaler_path.exists() else None
    return as_dataset(source, split, label_column=cfg_data.get("label_column") or "label", scaler=scaler)


def load_run_points(run: str | Path, n: int, *, which: str = "best", device: str = "auto",
                    split: str = "test") -> tuple[nn.Module, dict[str, Any], Tensor, Tensor]:
    """(model in eval mode, checkpoint metadata, x, y) of the first ``n`` points of the run's ``split``."""
    model, meta = load_trained_model(run, which, device)
    data = (run_data(run_folder_of(run), split) if "data_path" in meta else load_dataset(meta["dataset"], split))
    k = min(n, len(data))
    dev = model_device(model)
    return model.eval(), meta, data.float_images(torch.arange(k)).to(dev), data.labels[:k].to(dev)
