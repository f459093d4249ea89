"""Datasets (MNIST, Fashion-MNIST, CIFAR-10; the shuttle table) from offline, checksummed sources; fixed splits;
batch augmentations."""

from __future__ import annotations

from robustlab.data.batches import batch_indices, iterate_batches
from robustlab.data.registry import (
    DEFAULT_VAL_SIZE,
    SPLITS,
    DatasetInfo,
    ImageData,
    dataset_info,
    describe_sources,
    holdout_indices,
    list_datasets,
)
from robustlab.data.resolve import as_dataset
from robustlab.data.safe_pickle import UnsafePickleError, safe_load, safe_loads
from robustlab.data.sources import write_cifar10_folder
from robustlab.data.tables import load_dataset, load_table_dataset
from robustlab.data.transforms import AUGMENTATIONS, augment, random_crop, random_hflip
from robustlab.data.user import FloatData, MinMaxScaler, load_user_data

__all__ = [
    "FloatData",
    "MinMaxScaler",
    "as_dataset",
    "load_user_data",
    "AUGMENTATIONS",
    "DEFAULT_VAL_SIZE",
    "SPLITS",
    "DatasetInfo",
    "ImageData",
    "UnsafePickleError",
    "augment",
    "batch_indices",
    "dataset_info",
    "describe_sources",
    "holdout_indices",
    "iterate_batches",
    "list_datasets",
    "load_dataset",
    "load_table_dataset",
    "random_crop",
    "random_hflip",
    "safe_load",
    "safe_loads",
    "write_cifar10_folder",
]
