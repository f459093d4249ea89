"""One entry point for "the data to evaluate on", whatever form the user has it in: a registry name, a file or
folder, a pair of tensors, a robustlab data set, or a ``torch.utils.data.Dataset``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from robustlab.core.errors import InputError
from robustlab.data.registry import DATASETS, ImageData
from robustlab.data.tables import load_dataset
from robustlab.data.user import FloatData, MinMaxScaler, dataset_info_for, load_user_data

AnyData = ImageData | FloatData


def _from_tensors(x: Any, y: Any, source: str) -> FloatData:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise InputError(f"(x, y) must be two tensors, got {type(x).__name__} and {type(y).__name__}")
    if not x.is_floating_point() or x.dim() not in (2, 4):
        raise InputError(f"x must be float N x C x H x W images or N x d rows in [0, 1], got {x.dtype} "
                         f"{tuple(x.shape)}")
    if x.numel() and (not torch.isfinite(x).all() or float(x.min()) < 0 or float(x.max()) > 1):
        raise InputError("x must lie in [0, 1] (normalisation belongs inside the model: wrap it with "
                         "robustlab.models.Normalized or pass --mean/--std)")
    if y.dim() != 1 or y.is_floating_point() or len(y) != len(x):
        raise InputError(f"y must hold {len(x)} integer labels, got {y.dtype} {tuple(y.shape)}")
    y = y.to(torch.int64).cpu()
    if y.numel() and int(y.min()) < 0:
        raise InputError(f"labels must be >= 0, found {int(y.min())}")
    x = x.detach().to(torch.float32).cpu().contiguous()
    return FloatData(x, y, dataset_info_for("tensors", tuple(x.shape[1:]), y.numpy()), "all", source)


def as_dataset(data: Any, split: str = "test", *, label_column: str = "label",
               scaler: MinMaxScaler | None = None) -> AnyData:
    """``data`` as a robustlab data set: a registry name (its ``split``), a path (``.npz``, ``.csv``, image folder:
    the whole set), ``(x, y)`` tensors, an :class:`ImageData`/:class:`FloatData`, or a torch ``Dataset`` of
    ``(x, y)`` items."""
    if isinstance(data, (ImageData, FloatData)):
        return data
    if isinstance(data, (str, Path)):
        if isinstance(data, str) and data in DATASETS:
            return load_dataset(data, split)
        if Path(data).exists() or Path(data).suffix.lower() in (".npz", ".csv"):
            return load_user_data(data, "all", label_column=label_column, scaler=scaler)
        raise InputError(f"{data!r} is neither a registered dataset ({', '.join(DATASETS.names())}) nor an existing "
                         ".npz, .csv or image folder")
    if isinstance(data, tuple) and len(data) == 2:
        return _from_tensors(data[0], data[1], "tensors")
    if isinstance(data, torch.utils.data.Dataset):
        items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
        if not items:
            raise InputError("the Dataset is empty")
        try:
            x = torch.stack([torch.as_tensor(it[0]) for it in items])
            y = torch.as_tensor([int(it[1]) for it in items])
        except (TypeError, IndexError, RuntimeError) as exc:
            raise InputError(f"the Dataset's items must be (x, label) pairs of equal shape: {exc}") from None
        return _from_tensors(x, y, f"dataset:{type(data).__name__}")
    raise InputError(f"cannot use {type(data).__name__} as data: pass a dataset name, a path, (x, y) tensors, an "
                     "ImageData or a torch Dataset")
