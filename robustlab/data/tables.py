"""The registry's tables (the Statlog shuttle set from the river wheel) and the one ``load_dataset`` for every name.

A table has no official test split in its shipped form, so the test rows are a fixed hash holdout of the whole file
(``holdout_indices`` keyed by ``"<name>:test"``, identical everywhere, never chosen by a seed); "train+val" is the
rest, and "train"/"val" carve the registry's usual validation holdout out of it. Features are min-max scaled to
[0, 1] by a :class:`MinMaxScaler` fitted on the train+val rows (never the test rows; independent of ``val_size``, so
every split of one table shares one scaler), and test values outside that range are clipped and counted. A threat
model's eps is therefore in units of each feature's training range.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from robustlab.core.errors import DatasetNotFoundError, InputError, UnknownNameError
from robustlab.data import sources
from robustlab.data.registry import (
    DEFAULT_VAL_SIZE,
    HINTS,
    SPLITS,
    ImageData,
    dataset_info,
    holdout_indices,
    is_table,
)
from robustlab.data.registry import load_dataset as load_image_dataset
from robustlab.data.user import FloatData, MinMaxScaler

#: Test rows held out of each table (shuttle: 49,097 rows -> 40,000 train+val and 9,097 test).
TEST_SIZE = {"shuttle": 9097}


@lru_cache(maxsize=4)
def _read_shuttle(path: str) -> sources.RawTable:
    """The parsed, checksummed file (cached per process: train and val are loaded separately)."""
    raw = sources.load_shuttle_package(Path(path))
    raw.features.setflags(write=False)
    raw.labels.setflags(write=False)
    return raw


def read_table_dataset(name: str) -> sources.RawTable:
    """The whole shipped table of registry dataset ``name``, or DatasetNotFoundError saying how to install it."""
    info = dataset_info(name)
    if info.name != "shuttle":
        raise UnknownNameError(f"{info.name} is not a registry table")
    path = sources.shuttle_package_file()
    if path is None:
        raise DatasetNotFoundError(f"shuttle not found (looked in: the river package, river/datasets/shuttle.csv.gz, "
                                   f"located without importing river). {HINTS['shuttle']}")
    return _read_shuttle(str(path))


def table_split_rows(n: int, name: str, split: str, val_size: int | None = None) -> np.ndarray:
    """Sorted row indices of ``split`` of a registry table of ``n`` rows (module docstring)."""
    if split not in SPLITS:
        raise UnknownNameError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    test = holdout_indices(n, TEST_SIZE[name], f"{name}:test")
    if split == "test":
        return test
    keep = np.ones(n, dtype=bool)
    keep[test] = False
    trainval = np.flatnonzero(keep)
    if split == "train+val":
        return trainval
    m = len(trainval)
    if val_size is None:
        val_size = min(DEFAULT_VAL_SIZE, m // 10)
    elif isinstance(val_size, bool) or not isinstance(val_size, int) or not 0 <= val_size < m:
        raise InputError(f"val_size must be an int in [0, {m - 1}] for a training set of {m}, got {val_size!r}")
    if split == "val" and val_size == 0:
        raise InputError("the 'val' split is empty with val_size=0; pass val_size > 0")
    val = holdout_indices(m, val_size, name)
    if split == "val":
        return trainval[val]
    inner = np.ones(m, dtype=bool)
    inner[val] = False
    return trainval[inner]


def table_scaler(name: str) -> MinMaxScaler:
    """The min-max scaler of registry table ``name``, fitted on its train+val rows."""
    raw = read_table_dataset(name)
    info = dataset_info(name)
    rows = table_split_rows(len(raw.labels), info.name, "train+val")
    return MinMaxScaler.fit(raw.features[rows], list(raw.columns), "label", list(info.class_names))


def load_table_dataset(name: str, split: str = "train", *, val_size: int | None = None) -> FloatData:
    """A split of registry table ``name`` as float32 rows in [0, 1] with int64 labels and its scaler."""
    info = dataset_info(name)
    raw = read_table_dataset(info.name)
    rows = table_split_rows(len(raw.labels), info.name, split, val_size)
    scaler = table_scaler(info.name)
    scaled, clipped = scaler.transform(raw.features[rows])
    inputs = torch.from_numpy(np.ascontiguousarray(scaled, dtype=np.float32))
    labels = torch.from_numpy(np.array(raw.labels[rows], dtype=np.int64))
    return FloatData(inputs, labels, info, split, raw.source, raw.sha256, scaler, clipped)


def load_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | Path | None = None,
    val_size: int | None = None,
    download: bool = False,
) -> ImageData | FloatData:
    """Load a split of any registry dataset: images via the image registry, tables via :func:`load_table_dataset`
    (``root`` and ``download`` do not apply to tables: they come only from their package)."""
    info = dataset_info(name)
    if not is_table(info):
        return load_image_dataset(name, split, root=root, val_size=val_size, download=download)
    if val_size is not None and (isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 0):
        raise InputError(f"val_size must be a non-negative int or None, got {val_size!r}")
    return load_table_dataset(info.name, split, val_size=val_size)
