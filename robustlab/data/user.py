"""Data users bring: an ``.npz`` of arrays, a folder of class sub-folders of images, or a table (CSV).

Each file or folder is one labelled set; ``split="train"`` and ``"val"`` carve the same fixed hash holdout out of it
that the registry datasets use, ``"all"`` (and ``"test"``) is the whole set. Images become :class:`ImageData` (uint8,
as the registry sets); float arrays and tables become :class:`FloatData` (float32 in [0, 1]). A table's numeric
features are min-max scaled to [0, 1] by a :class:`MinMaxScaler` fitted on the training rows and saved with the run,
so a threat model's eps is in units of each feature's range. Every source records the sha256 of what it read.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlab.core.errors import InputError
from robustlab.data.registry import DatasetInfo, ImageData, holdout_indices
from robustlab.io.atomic import atomic_write_json, sha256_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
USER_SPLITS = ("all", "test", "train", "val")
TABLE_SUFFIXES = (".csv",)


@dataclass
class FloatData:
    """An in-memory labelled set of float32 inputs in [0, 1]: images N x C x H x W or table rows N x d. Offers the
    interface of :class:`ImageData` (``float_images``, ``labels``, ``subset``, ``info``), so every consumer takes it."""

    inputs: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo
    split: str
    source: str
    sha256: str = ""
    scaler: MinMaxScaler | None = None
    clipped: int = 0  # table values outside the scaler's training range, clipped into [0, 1]

    def __post_init__(self) -> None:
        """Check dtypes, shapes and range once, so every consumer can rely on them."""
        x, y = self.inputs, self.labels
        if x.dtype != torch.float32 or tuple(x.shape[1:]) != tuple(self.info.shape):
            raise InputError(f"inputs must be float32 N x {self.info.shape}, got {x.dtype} {tuple(x.shape)}")
        if y.dtype != torch.int64 or tuple(y.shape) != (x.shape[0],):
            raise InputError(f"labels must be an int64 tensor of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")

    def __len__(self) -> int:
        """Number of points."""
        return int(self.labels.shape[0])

    def float_images(self, idx: Any = None) -> torch.Tensor:
        """Inputs (all, or ``inputs[idx]``), float32 in [0, 1]; a copy, so callers may modify it."""
        return (self.inputs if idx is None else self.inputs[idx]).clone()

    def subset(self, n: int | None = None, indices: Any = None) -> FloatData:
        """The first ``n`` points or the points at ``indices``; same info, split and source."""
        if n is not None and indices is not None:
            raise InputError("subset takes n or indices, not both")
        if n is not None:
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(self):
                raise InputError(f"subset size n must be an int in [0, {len(self)}], got {n!r}")
            indices = torch.arange(n)
        idx = torch.arange(len(self)) if indices is None else torch.as_tensor(indices, dtype=torch.int64)
        return FloatData(self.inputs[idx], self.labels[idx], self.info, self.split, self.source, self.sha256,
                         self.scaler, self.clipped)


@dataclass
class MinMaxScaler:
    """Per-feature min-max scaling to [0, 1], fitted on training rows; constant features map to 0."""

    columns: list[str]
    low: list[float]
    high: list[float]
    label_column: str = "label"
    classes: list[str] = field(default_factory=list)

    @classmethod
    def fit(cls, values: np.ndarray, columns: list[str], label_column: str, classes: list[str]) -> MinMaxScaler:
        """The scaler of ``values`` (rows x features)."""
        return cls(list(columns), values.min(axis=0).tolist(), values.max(axis=0).tolist(), label_column, classes)

    def transform(self, values: np.ndarray) -> tuple[np.ndarray, int]:
        """(scaled values clipped to [0, 1], how many values were outside the training range)."""
        low, high = np.asarray(self.low), np.asarray(self.high)
        span = np.where(high > low, high - low, 1.0)
        scaled = (values - low) / span
        outside = int(((scaled < 0) | (scaled > 1)).sum())
        return np.clip(scaled, 0.0, 1.0), outside

    def save(self, path: str | Path) -> Path:
        """Write as JSON (atomically), e.g. beside a run's checkpoints."""
        atomic_write_json(path, {"format": "robustlab-minmax-v1", "columns": self.columns, "low": self.low,
                                 "high": self.high, "label_column": self.label_column, "classes": self.classes})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> MinMaxScaler:
        """Read a scaler written by :meth:`save`."""
        doc = json.loads(Path(path).read_text())
        if doc.get("format") != "robustlab-minmax-v1":
            raise InputError(f"{path} is not a robustlab scaler file")
        return cls(doc["columns"], doc["low"], doc["high"], doc.get("label_column", "label"), doc.get("classes", []))


def dataset_info_for(name: str, shape: tuple[int, ...], labels: np.ndarray,
                     class_names: list[str] | None = None) -> DatasetInfo:
    """Facts of a user set: classes from ``class_names`` or the largest label, identity normalisation."""
    num_classes = len(class_names) if class_names else int(labels.max()) + 1 if labels.size else 0
    names = tuple(class_names) if class_names else tuple(str(i) for i in range(num_classes))
    channels = shape[0] if len(shape) == 3 else 1
    return DatasetInfo(name, num_classes, shape, (0.0,) * channels, (1.0,) * channels, names)


def _split_rows(n: int, split: str, val_size: int | None, name: str) -> np.ndarray:
    """Row indices of ``split`` of a user set of ``n`` rows (the registry's fixed hash holdout for val)."""
    if split not in USER_SPLITS:
        raise InputError(f"unknown split {split!r} for a user data set; valid: {', '.join(USER_SPLITS)}")
    if split in ("all", "test"):
        return np.arange(n)
    k = min(5000, n // 10) if val_size is None else val_size
    if not 0 <= k < n:
        raise InputError(f"val_size must be in [0, {n - 1}] for a set of {n} points, got {k}")
    val = holdout_indices(n, k, name)
    if split == "val":
        return val
    keep = np.ones(n, dtype=bool)
    keep[val] = False
    return np.flatnonzero(keep)


def _labels(y: np.ndarray, where: str) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) and not (
            np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)):
        raise InputError(f"{where}: y must be a 1-D array of integer class labels, got {y.dtype} {y.shape}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise InputError(f"{where}: labels must be >= 0, found {int(y.min())}")
    return y


def load_npz(path: str | Path, split: str = "all", *, val_size: int | None = None) -> ImageData | FloatData:
    """An ``.npz`` with ``x`` (uint8 N x H x W x C images, or float N x C x H x W / N x d in [0, 1]) and ``y``
    (integer labels). Read without pickles (``allow_pickle=False``)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise InputError(f"{path} has no {' and '.join(missing)} array (it has: {', '.join(z.files) or 'none'})"
                                 "; save inputs as x and labels as y: np.savez(path, x=x, y=y)")
            x, y = z["x"], z["y"]
    except ValueError as exc:  # object arrays need pickles: refused
        raise InputError(f"{path}: cannot read without unpickling ({exc}); save plain numeric arrays") from None
    y = _labels(y, str(path))
    if len(x) != len(y):
        raise InputError(f"{path}: x has {len(x)} rows but y has {len(y)} labels")
    rows = _split_rows(len(y), split, val_size, path.stem)
    x, y = x[rows], y[rows]
    sha = sha256_file(path)
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise InputError(f"{path}: integer x must hold 0-255 pixel values, got [{x.min()}, {x.max()}]")
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise InputError(f"{path}: integer x must be images N x H x W (x C=1 or 3), got shape {x.shape}")
        images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2).astype(np.uint8)))
        info = dataset_info_for(path.stem, tuple(images.shape[1:]), y)
        return ImageData(images, torch.from_numpy(y), info, split, f"npz:{path}", sha)
    if not np.issubdtype(x.dtype, np.floating) or x.ndim not in (2, 4):
        raise InputError(f"{path}: float x must be N x C x H x W images or N x d rows, got {x.dtype} {x.shape}")
    if x.size and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 1):
        raise InputError(f"{path}: float x must lie in [0, 1] (got [{np.nanmin(x):.4g}, {np.nanmax(x):.4g}]): "
                         "scale pixels by 1/255, or pass a table as CSV to have it min-max scaled")
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    info = dataset_info_for(path.stem, tuple(inputs.shape[1:]), y)
    return FloatData(inputs, torch.from_numpy(y), info, split, f"npz:{path}", sha)


def load_image_folder(path: str | Path, split: str = "all", *, val_size: int | None = None) -> ImageData:
    """A folder of class sub-folders holding PNG/JPEG images (the ImageFolder convention): class index = position
    of the sub-folder in sorted order. Every image must have the same size; grayscale sets stay 1-channel."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InputError(f"{root} holds no images: expected class sub-folders (e.g. {root}/cat/001.png) with "
                         f"{', '.join(IMAGE_SUFFIXES)} files")
    labels = np.array([i for _, i in files], dtype=np.int64)
    rows = _split_rows(len(files), split, val_size, root.name)
    arrays, size, gray = [], None, True
    opened = []
    for f, _ in (files[i] for i in rows):
        try:
            with Image.open(f) as im:
                im.load()
                opened.append((f, im.copy()))
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"{f} is not a readable image: {exc}") from None
        gray &= opened[-1][1].mode in ("L", "1", "I;16", "I")
    for f, image in opened:
        if size is None:
            size = image.size
        elif image.size != size:
            raise InputError(f"images must all have one size: {opened[0][0]} is {size[0]}x{size[1]} but {f} is "
                             f"{image.size[0]}x{image.size[1]}; resize them first")
        a = np.asarray(image.convert("L" if gray else "RGB"), dtype=np.uint8)
        arrays.append(a[None] if gray else a.transpose(2, 0, 1))
    images = torch.from_numpy(np.stack(arrays))
    y = labels[rows]
    info = dataset_info_for(root.name, tuple(images.shape[1:]), y, classes)
    return ImageData(images, torch.from_numpy(y), info, split, f"folder:{root}", _folder_sha(files))


def _folder_sha(files: list[tuple[Path, int]]) -> str:
    """One digest of a folder's images: their relative paths and contents, in order."""
    import hashlib

    h = hashlib.sha256()
    for f, _ in files:
        h.update(f"{f.parent.name}/{f.name}\n{sha256_file(f)}\n".encode())
    return h.hexdigest()


def read_table(path: str | Path, label_column: str = "label") -> tuple[list[str], np.ndarray, list[str]]:
    """(feature columns, float feature rows, raw labels) of a CSV whose features are all numeric."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise InputError(f"{path} is empty; expected a header row naming the columns")
        header = [h.strip() for h in header]
        if label_column not in header:
            raise InputError(f"{path} has no label column {label_column!r} (columns: {', '.join(header)}); pass "
                             "--label-column NAME")
        li = header.index(label_column)
        features = [h for i, h in enumerate(header) if i != li]
        rows, labels = [], []
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise InputError(f"{path}:{line_no}: {len(row)} fields, the header has {len(header)}")
            values = []
            for i, cell in enumerate(row):
                if i == li:
                    continue
                try:
                    v = float(cell)
                except ValueError:
                    raise InputError(f"{path}:{line_no}: column {header[i]!r} holds {cell!r}, not a number: every "
                                     "feature must be numeric (one-hot encode categorical columns first)") from None
                if not math.isfinite(v):
                    raise InputError(f"{path}:{line_no}: column {header[i]!r} holds {cell!r}; fill missing values")
                values.append(v)
            rows.append(values)
            labels.append(row[li].strip())
    if not rows:
        raise InputError(f"{path} has a header but no rows")
    return features, np.asarray(rows, dtype=np.float64), labels


def load_table(path: str | Path, split: str = "all", *, label_column: str = "label", val_size: int | None = None,
               scaler: MinMaxScaler | None = None) -> FloatData:
    """A CSV table: numeric features scaled to [0, 1] by ``scaler`` (else one fitted on this file's training rows,
    i.e. all rows but the validation holdout), labels mapped to class indices (sorted label values, or the
    scaler's classes)."""
    path = Path(path)
    features, values, raw = read_table(path, label_column)
    if scaler is not None and scaler.columns != features:
        raise InputError(f"{path}'s feature columns differ from the scaler's: {features} vs {scaler.columns}")
    classes = scaler.classes if scaler is not None and scaler.classes else sorted(set(raw), key=_label_order)
    unknown = sorted(set(raw) - set(classes))
    if unknown:
        raise InputError(f"{path}: labels {unknown} are not among the training classes {classes}")
    y = np.array([classes.index(v) for v in raw], dtype=np.int64)
    if scaler is None:
        train_rows = _split_rows(len(y), "train", val_size, path.stem)
        scaler = MinMaxScaler.fit(values[train_rows], features, label_column, classes)
    rows = _split_rows(len(y), split, val_size, path.stem)
    scaled, clipped = scaler.transform(values[rows])
    inputs = torch.from_numpy(scaled.astype(np.float32))
    info = dataset_info_for(path.stem, (len(features),), y, classes)
    return FloatData(inputs, torch.from_numpy(y[rows]), info, split, f"table:{path}", sha256_file(path), scaler,
                     clipped)


def _label_order(value: str) -> tuple[int, float | str]:
    """Numeric labels in numeric order, then others alphabetically."""
    try:
        return 0, float(value)
    except ValueError:
        return 1, value


def load_user_data(path: str | Path, split: str = "all", *, label_column: str = "label",
                   val_size: int | None = None, scaler: MinMaxScaler | None = None) -> ImageData | FloatData:
    """The data set at ``path``: an ``.npz``, a ``.csv`` table or an image folder, by what it is."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no data at {path}: pass an .npz, a .csv or a folder of class sub-folders of images")
    if path.is_dir():
        return load_image_folder(path, split, val_size=val_size)
    if path.suffix.lower() == ".npz":
        return load_npz(path, split, val_size=val_size)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return load_table(path, split, label_column=label_column, val_size=val_size, scaler=scaler)
    raise InputError(f"{path}: unknown data format {path.suffix!r}; robustlab reads .npz, .csv and image folders")
