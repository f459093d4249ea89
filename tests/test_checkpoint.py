"""Checkpoints: exact round trips and a specific CheckpointError for every kind of bad file."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest
import safetensors.torch
import torch
from torch import nn

from robustlab.core.errors import CheckpointError, InputError
from robustlab.io.atomic import sha256_file
from robustlab.io.checkpoint import (
    TENSORS_FORMAT,
    WEIGHTS_FORMAT,
    load_tensors,
    load_weights,
    read_metadata,
    save_tensors,
    save_weights,
)
from robustlab.io.fingerprint import model_fingerprint
from robustlab.models import create_model


@dataclass(frozen=True)
class Info:
    name: str
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]


MNIST = Info("mnist", 10, (1, 28, 28), (0.0,), (1.0,))
CIFAR = Info("cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))


def _perturb(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(0.05 * torch.rand_like(t))  # small and positive: BN running_var stays valid
            else:
                t.add_(7)
    return model


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = _perturb(create_model("resnet20", CIFAR))  # BN buffers, int64 num_batches_tracked, mean/std
    path = tmp_path / "w.safetensors"
    sha = save_weights(path, model, {"epoch": 3, "lr": 0.1, "note": "hi", "best": True})
    return model, path, sha


def _state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_is_exact(saved):
    model, path, sha = saved
    assert sha == sha256_file(path)
    fresh = create_model("resnet20", CIFAR)
    assert not _state_equal(model, fresh)
    meta = load_weights(path, fresh, expected={"dataset": "cifar10", "model": "resnet20", "epoch": 3}, sha256=sha)
    assert _state_equal(model, fresh)
    assert meta["format"] == WEIGHTS_FORMAT
    assert meta["epoch"] == "3" and meta["lr"] == "0.1" and meta["note"] == "hi" and meta["best"] == "True"
    assert meta["model"] == "resnet20" and meta["dataset"] == "cifar10" and json.loads(meta["model_kwargs"]) == {}
    fp = model_fingerprint(model)
    assert meta["parameter_names_shapes_sha"] == fp["parameter_names_shapes_sha"]
    assert meta["num_parameters"] == str(fp["num_parameters"])
    assert read_metadata(path) == meta
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), fresh.eval()(x), rtol=0, atol=0)


def test_saving_is_deterministic_and_atomic(saved, tmp_path):
    model, path, sha = saved
    assert save_weights(path, model, {"epoch": 3, "lr": 0.1, "note": "hi", "best": True}) == sha
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temp files left behind


def test_tied_and_view_tensors_are_saved(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)
            self.b.weight = self.a.weight
            self.register_buffer("view", torch.arange(10.0)[2:6])

    model = Tied()
    save_weights(tmp_path / "t.safetensors", model, {})
    other = Tied()
    with torch.no_grad():
        other.a.weight.zero_()
    load_weights(tmp_path / "t.safetensors", other)
    assert torch.equal(other.a.weight, model.a.weight) and other.b.weight is other.a.weight
    assert torch.equal(other.view, torch.arange(2.0, 6.0))


def _assert_untouched(model: nn.Module, before: dict) -> None:
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def _expect_error(path, model, match, **kwargs):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=match):
        load_weights(path, model, **kwargs)
    _assert_untouched(model, before)  # nothing is copied before every check passed


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "nope.safetensors", create_model("mlp", MNIST), "not found")
    with pytest.raises(CheckpointError, match="not found"):
        read_metadata(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="not a regular file"):
        read_metadata(tmp_path)


def test_random_bytes_and_tiny_files(tmp_path):
    path = tmp_path / "rand.safetensors"
    path.write_bytes(os.urandom(4096) if os.urandom(1) else b"")
    path.write_bytes(b"\xff" * 8 + os.urandom(4088))
    _expect_error(path, create_model("mlp", MNIST), "not a safetensors file")
    path.write_bytes(b"abc")
    _expect_error(path, create_model("mlp", MNIST), "too small")
    path.write_bytes((10).to_bytes(8, "little") + b"0123456789")
    _expect_error(path, create_model("mlp", MNIST), "not a safetensors file")


def test_torch_pickles_are_refused_without_unpickling(tmp_path, monkeypatch):
    model = create_model("small-cnn", MNIST)
    zip_path, legacy_path = tmp_path / "model.pt", tmp_path / "legacy.pt"
    torch.save(model.state_dict(), zip_path)
    torch.save(model.state_dict(), legacy_path, _use_new_zipfile_serialization=False)

    def boom(*a, **k):
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", boom)
    _expect_error(zip_path, model, "torch.save.*never unpickles")
    _expect_error(legacy_path, model, "pickle.*never unpickles")
    with pytest.raises(CheckpointError, match="never unpickles"):
        read_metadata(zip_path)


def test_truncated_files(saved):
    model, path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect_error(path, model, "truncated")
    with pytest.raises(CheckpointError, match="truncated"):
        read_metadata(path)
    path.write_bytes(data[:40])  # cut inside the header
    _expect_error(path, model, "truncated")
    path.write_bytes(data + b"junk")
    _expect_error(path, model, "unexpected bytes")


def test_corrupt_header(saved):
    model, path, _ = saved
    data = bytearray(path.read_bytes())
    n = int.from_bytes(data[:8], "little")
    data[8 + n // 2] = ord("}")  # break the JSON
    path.write_bytes(bytes(data))
    _expect_error(path, model, "corrupt")


def test_sha_mismatch(saved):
    model, path, sha = saved
    wrong = ("0" if sha[0] != "0" else "1") + sha[1:]
    _expect_error(path, model, "sha256", sha256=wrong)
    load_weights(path, model, sha256="SHA256:" + sha.upper())  # prefix and case are tolerated


def test_foreign_safetensors_files(tmp_path):
    model = create_model("mlp", MNIST)
    path = tmp_path / "foreign.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    _expect_error(path, model, "outside robustlab")
    safetensors.torch.save_file({"w": torch.zeros(2)}, path, metadata={"format": "pt"})
    _expect_error(path, model, "format 'pt'")
    with pytest.raises(CheckpointError, match="outside robustlab|format 'pt'"):
        load_tensors(path)


def test_other_architecture(saved, tmp_path):
    _, path, _ = saved
    with pytest.raises(CheckpointError, match="different architecture") as err:
        load_weights(path, create_model("small-cnn", CIFAR))
    msg = str(err.value)
    assert "missing" in msg and "unexpected" in msg and "net.features.conv1.weight" in msg and "resnet20" in msg
    # same family, other dataset: channel counts differ -> shapes listed
    path_m = tmp_path / "m.safetensors"
    save_weights(path_m, create_model("resnet20", MNIST), {})
    with pytest.raises(CheckpointError, match=r"shape-mismatched.*net\.conv1\.weight \(file \[16, 1, 3, 3\]"):
        load_weights(path_m, create_model("resnet20", CIFAR))
    # a bare net's file loaded into the wrapper gets a hint
    save_weights(path_m, create_model("resnet20", CIFAR).net, {})
    with pytest.raises(CheckpointError, match="bare net"):
        load_weights(path_m, create_model("resnet20", CIFAR))
    load_weights(path_m, create_model("resnet20", CIFAR).net)


def test_expected_metadata_mismatch(saved):
    model, path, _ = saved
    _expect_error(
        path, model, "dataset: checkpoint has 'cifar10', expected 'cifar100'", expected={"dataset": "cifar100"}
    )
    _expect_error(path, model, "seed: missing", expected={"seed": 1})


def test_edited_fingerprint_is_detected(saved):
    model, path, _ = saved
    tensors = safetensors.torch.load_file(path)
    meta = read_metadata(path)
    meta["parameter_names_shapes_sha"] = "0" * 64
    safetensors.torch.save_file(tensors, path, metadata=meta)
    _expect_error(path, model, "fingerprint")


def test_metadata_values_are_checked(tmp_path):
    with pytest.raises(InputError, match="json.dumps"):
        save_weights(tmp_path / "x.safetensors", create_model("mlp", MNIST), {"cfg": {"a": 1}})
    assert not (tmp_path / "x.safetensors").exists()


def test_save_and_load_tensors(tmp_path):
    path = tmp_path / "opt.safetensors"
    shared = torch.arange(6.0)
    tensors = {
        "step": torch.tensor(5),
        "exp_avg.0": shared.view(2, 3).t(),
        "exp_avg.1": shared,
        "flag": torch.ones(2) > 0,
    }
    sha = save_tensors(path, tensors, {"optimizer": "SGD", "step": 5})
    loaded, meta = load_tensors(path, sha256=sha)
    assert meta == {"optimizer": "SGD", "step": "5", "format": TENSORS_FORMAT}
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert read_metadata(path)["format"] == TENSORS_FORMAT
    with pytest.raises(CheckpointError, match="robustlab-weights-v1"):
        load_weights(path, create_model("mlp", MNIST))
    with pytest.raises(InputError, match="torch.Tensor"):
        save_tensors(path, {"a": [1, 2]}, {})


def test_header_lengths_that_look_like_pickle_opcodes_still_load(tmp_path):
    # a header of 0x280 bytes starts the file with 80 02, the legacy pickle magic: it must not be mistaken for one
    path = tmp_path / "t.safetensors"
    for pad in range(0, 800, 8):
        save_tensors(path, {"x": torch.arange(3)}, {"pad": "p" * pad})
        if path.read_bytes()[:2] == b"\x80\x02":
            break
    else:
        pytest.fail("no padding gave a 0x280-byte header")
    loaded, meta = load_tensors(path)
    assert torch.equal(loaded["x"], torch.arange(3))
