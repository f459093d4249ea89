"""Models and data users bring: a model class in their own file with their weights, evaluated on an .npz, an image
folder or a CSV table from one call or one command, trained from a run config, and every malformed input refused
with a message that names the problem."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import robustlab
from robustlab import cli
from robustlab.core.errors import CheckpointError, InputError
from robustlab.data import FloatData, ImageData, load_user_data
from robustlab.runs.user_model import convert_weights, load_user_model

runner = CliRunner()

#: A model file as a user writes it: the class is the robustlab-free "brightness" classifier (class 1 iff the mean
#: pixel exceeds 0.5), so its clean accuracy on the data below is 100% and a large enough perturbation flips it.
MODEL_FILE = textwrap.dedent('''
    import torch
    from torch import nn

    class Brightness(nn.Module):
        def __init__(self, channels: int, scale: float = 20.0, normalised: bool = False):
            super().__init__()
            self.w = nn.Parameter(torch.full((channels,), 1.0))
            self.scale, self.normalised = scale, normalised

        def forward(self, x):
            if self.normalised:  # a model trained on (x - 0.5) / 0.25 inputs
                x = x * 0.25 + 0.5
            m = (x.flatten(2).mean(2) * self.w).mean(1, keepdim=True) if x.dim() == 4 else x.mean(1, keepdim=True)
            z = self.scale * (m - 0.5)
            return torch.cat([-z, z], dim=1)

    def make(channels):
        return Brightness(channels)

    class Tuple(Brightness):
        def forward(self, x):
            return super().forward(x), x

    def not_a_model():
        return 3
''')


def _brightness_data(n: int = 24, shape: tuple[int, ...] = (1, 8, 8), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose mean is 0.5 +- 0.1..0.3: label 1 for the bright ones."""
    gen = np.random.default_rng(seed)
    y = np.arange(n) % 2
    level = 0.5 + np.where(y == 1, 1, -1) * gen.uniform(0.1, 0.3, n)
    x = np.clip(level.reshape(-1, *([1] * len(shape))) + gen.uniform(-0.05, 0.05, (n, *shape)), 0, 1)
    return x.astype(np.float32), y


@pytest.fixture()
def user(tmp_path: Path) -> dict[str, Path]:
    """A model file, its weights (.pt and .safetensors) and the same data as .npz, image folder and CSV."""
    from PIL import Image
    from safetensors.torch import save_file

    (tmp_path / "mymodels.py").write_text(MODEL_FILE)
    state = {"w": torch.ones(1)}
    torch.save(state, tmp_path / "w.pt")
    save_file(state, str(tmp_path / "w.safetensors"))
    x, y = _brightness_data()
    np.savez(tmp_path / "float.npz", x=x, y=y)
    np.savez(tmp_path / "uint8.npz", x=np.round(x * 255).astype(np.uint8).transpose(0, 2, 3, 1), y=y)
    for i, (img, label) in enumerate(zip(np.round(x * 255).astype(np.uint8), y, strict=True)):
        folder = tmp_path / "folder" / ("1-bright" if label else "0-dark")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0], mode="L").save(folder / f"{i:03d}.png")
    rows = x.reshape(len(x), -1)[:, :6] * 10 + 3  # a table: 6 numeric features in [3, 13], label column last
    with open(tmp_path / "table.csv", "w") as fh:
        fh.write(",".join(f"f{i}" for i in range(6)) + ",label\n")
        for r, label in zip(rows, y, strict=True):
            fh.write(",".join(f"{v:.5f}" for v in r) + f",{'yes' if label else 'no'}\n")
    return {"dir": tmp_path, "file": tmp_path / "mymodels.py"}


def _invoke(*args: str) -> tuple[int, str]:
    try:
        result = runner.invoke(cli.app, list(args), catch_exceptions=False)
        return result.exit_code, result.output
    except (cli.RobustlabError, OSError) as exc:
        return cli.ERROR_EXIT, str(exc)


# ------------------------------------------------------------------------------------------------ data sources
def test_each_data_format_reads_the_same_points(user: dict[str, Path]) -> None:
    d = user["dir"]
    floats, ints, folder = load_user_data(d / "float.npz"), load_user_data(d / "uint8.npz"), load_user_data(
        d / "folder")
    assert isinstance(floats, FloatData) and isinstance(ints, ImageData) and isinstance(folder, ImageData)
    assert floats.float_images().shape == ints.float_images().shape == (24, 1, 8, 8)
    assert torch.allclose(floats.float_images(), ints.float_images(), atol=0.5 / 255 + 1e-6)
    assert folder.info.class_names == ("0-dark", "1-bright") and len(folder) == 24  # class = sorted folder name
    assert torch.equal(folder.labels, ints.labels[torch.argsort(ints.labels, stable=True)])
    table = load_user_data(d / "table.csv")
    assert isinstance(table, FloatData) and table.float_images().shape == (24, 6)
    assert float(table.inputs.min()) >= 0 and float(table.inputs.max()) <= 1 and table.info.class_names == ("no", "yes")
    train = load_user_data(d / "table.csv", "train", val_size=4)
    val = load_user_data(d / "table.csv", "val", val_size=4, scaler=train.scaler)  # type: ignore[attr-defined]
    assert len(train) == 20 and len(val) == 4 and len(floats.sha256) == 64
    assert train.scaler.low == pytest.approx(  # type: ignore[attr-defined]
        load_user_data(d / "table.csv", "train", val_size=4).scaler.low)  # type: ignore[attr-defined]


@pytest.mark.parametrize("case,match", [
    ("no-y", "no y array"), ("range", r"must lie in \[0, 1\]"), ("int-range", "0-255"),
    ("empty-folder", "holds no images"), ("mixed-sizes", "one size"), ("no-label", "no label column"),
    ("text-feature", "not a number"), ("missing", "no data at"),
])
def test_malformed_data_is_refused(case: str, match: str, tmp_path: Path) -> None:
    from PIL import Image

    path: Path = tmp_path / "data.npz"
    if case == "no-y":
        np.savez(path, x=np.zeros((2, 4), np.float32))
    elif case == "range":
        np.savez(path, x=np.full((2, 4), 2.0, np.float32), y=np.array([0, 1]))
    elif case == "int-range":
        np.savez(path, x=np.full((2, 4, 4, 1), 300, np.int64), y=np.array([0, 1]))
    elif case in ("empty-folder", "mixed-sizes"):
        path = tmp_path / "folder"
        (path / "a").mkdir(parents=True)
        if case == "mixed-sizes":
            Image.new("L", (4, 4)).save(path / "a" / "1.png")
            Image.new("L", (5, 4)).save(path / "a" / "2.png")
    elif case in ("no-label", "text-feature"):
        path = tmp_path / "t.csv"
        path.write_text("a,b\n1,2\n" if case == "no-label" else "a,label\nred,1\n")
    else:
        path = tmp_path / "nowhere.npz"
    with pytest.raises(InputError, match=match):
        load_user_data(path)


# ------------------------------------------------------------------------------------------------- the model
def test_python_call_on_every_format(user: dict[str, Path]) -> None:
    d = user["dir"]
    model, _ = load_user_model(f"{user['file']}:Brightness", args={"channels": 1}, weights=d / "w.safetensors")
    for data in (d / "float.npz", d / "uint8.npz", d / "folder"):
        result = robustlab.evaluate(model, data, threat="linf:0.1", protocol="pgd", n=12)
        assert result.clean_accuracy == 1.0 and result.n == 12 and "large_eps_collapsed" in result.sanity
        assert result.sanity["large_eps_collapsed"] and "zero_grad_fraction" in result.sanity
    x, y = _brightness_data()
    pair = robustlab.evaluate(model, (torch.from_numpy(x), torch.from_numpy(y)), threat="linf:0.4", protocol="pgd")
    assert pair.worst_case_accuracy == 0.0  # eps 0.4 moves every mean across 0.5


def test_cli_evaluates_a_model_file_with_autoattack(user: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    d = user["dir"]
    monkeypatch.chdir(d)
    code, out = _invoke("evaluate", "--model", f"{user['file']}:Brightness", "--model-arg", "channels=1",
                        "--weights", str(d / "w.pt"), "--data", str(d / "folder"), "--eps", "0.05", "--n", "8",
                        "--no-progress", "--set", "eval.autoattack.attacks=[apgd-ce]",
                        "--set", "eval.autoattack.version=custom")
    assert code == 0, out
    result = json.loads(next((d / "evals").glob("Brightness-*/result.json")).read_text())
    assert result["clean_accuracy"] == 1.0 and result["protocol"][-1]["name"] == "autoattack-custom"
    assert len(result["model"]["weights_sha256"]) == 64 and len(result["model"]["data_sha256"]) == 64
    assert "recorded in the results store" in out
    code, out = _invoke("attack", "--model", f"{user['file']}:make", "--model-arg", "channels=1", "--weights",
                        str(d / "w.pt"), "--data", str(d / "float.npz"), "--eps", "0.4", "--n", "6",
                        "--out", str(d / "adv.safetensors"))
    assert code == 0 and "accuracy on them 0.00%" in out


def test_mean_and_std_equal_normalisation_inside_the_model(user: dict[str, Path]) -> None:
    """The same model evaluated on normalised inputs via --mean/--std gives the flags of the model that normalises
    inside (same points, same seeds)."""
    d = user["dir"]
    spec = f"{user['file']}:Brightness"
    inside, _ = load_user_model(spec, args={"channels": 1})
    outside, info = load_user_model(spec, args={"channels": 1, "normalised": True}, mean="0.5", std="0.25")
    assert info["mean"] == [0.5]
    a = robustlab.evaluate(inside, d / "float.npz", threat="linf:0.15", protocol="pgd")
    b = robustlab.evaluate(outside, d / "float.npz", threat="linf:0.15", protocol="pgd")
    assert a.per_sample == b.per_sample and 0 < a.worst_case_accuracy < 1


def test_table_model_end_to_end(user: dict[str, Path], tmp_path: Path) -> None:
    """A model on table rows [N, d]: the threat model is in units of each feature's range."""
    table = tmp_path / "m.py"
    table.write_text("from torch import nn\n\ndef mlp(d):\n    return nn.Sequential(nn.Linear(d, 8), nn.ReLU(), "
                     "nn.Linear(8, 2))\n")
    model, _ = load_user_model(f"{table}:mlp", args={"d": 6})
    result = robustlab.evaluate(model, user["dir"] / "table.csv", threat="linf:0.1", protocol="pgd")
    assert result.n == 24 and result.threat == {"norm": "linf", "eps": 0.1}


# --------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("case,match", [
    ("no-file", "no Python file"), ("no-name", "has no 'Nope'; it defines: Brightness, Tuple, make, not_a_model"),
    ("raises", "importing .* failed: RuntimeError: broken on purpose"), ("needs-args", "it needs channels"),
    ("not-module", "not a torch.nn.Module"), ("bad-spec", "path/to/file.py:NAME"),
])
def test_bad_model_specs(case: str, match: str, user: dict[str, Path]) -> None:
    f = user["file"]
    spec = {"no-file": f"{f.parent}/absent.py:X", "no-name": f"{f}:Nope", "needs-args": f"{f}:Brightness",
            "bad-spec": "just-a-name", "not-module": f"{f}:not_a_model"}.get(case, "")
    if case == "raises":
        bad = f.parent / "bad.py"
        bad.write_text("raise RuntimeError('broken on purpose')\n")
        spec = f"{bad}:X"
    with pytest.raises(InputError, match=match):
        load_user_model(spec)


def test_weights_that_do_not_fit_list_every_key(user: dict[str, Path]) -> None:
    from safetensors.torch import save_file

    bad = user["dir"] / "bad.safetensors"
    save_file({"w": torch.ones(3), "extra": torch.ones(1)}, str(bad))
    with pytest.raises(CheckpointError, match=r"unexpected: extra.*wrong shape \(file vs model\): w \(3,\) vs \(1,\)"):
        load_user_model(f"{user['file']}:Brightness", args={"channels": 1}, weights=bad)
    save_file({"other": torch.ones(1)}, str(bad))
    with pytest.raises(CheckpointError, match="missing: w"):
        load_user_model(f"{user['file']}:Brightness", args={"channels": 1}, weights=bad)


class _Trap:
    """Unpickling this would write a file: a .pt holding it must be refused without building it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.write_text, (Path(self.path), "built"))


def test_a_pt_that_is_not_a_plain_state_dict_is_refused_unbuilt(user: dict[str, Path]) -> None:
    d = user["dir"]
    trap = d / "trap-fired"
    torch.save({"w": _Trap(str(trap))}, d / "evil.pt")
    with pytest.raises(CheckpointError, match="not a plain state dict"):
        load_user_model(f"{user['file']}:Brightness", args={"channels": 1}, weights=d / "evil.pt")
    assert not trap.exists()
    torch.save(torch.nn.Linear(1, 1), d / "whole-model.pt")
    with pytest.raises(CheckpointError, match="not a plain state dict"):
        load_user_model(f"{user['file']}:Brightness", args={"channels": 1}, weights=d / "whole-model.pt")


def test_outputs_labels_and_normalisation_are_checked(user: dict[str, Path]) -> None:
    d = user["dir"]
    tuple_model, _ = load_user_model(f"{user['file']}:Tuple", args={"channels": 1})
    with pytest.raises(InputError, match="SelectOutput"):
        robustlab.evaluate(tuple_model, d / "float.npz", threat="linf:0.1", protocol="pgd")
    model, _ = load_user_model(f"{user['file']}:Brightness", args={"channels": 1})
    x, y = _brightness_data()
    with pytest.raises(InputError, match="label 5 but the model outputs only 2 classes"):
        robustlab.evaluate(model, (torch.from_numpy(x), torch.from_numpy(y) + 4), threat="linf:0.1", protocol="pgd")
    with pytest.raises(InputError, match="--mean and --std go together"):
        load_user_model(f"{user['file']}:Brightness", args={"channels": 1}, mean="0.5")
    code, out = _invoke("evaluate", "--model", f"{user['file']}:Brightness", "--model-arg", "channels=1",
                        "--data", str(d / "float.npz"), "--eps", "0.1", "--mean", "0.5,0.5,0.5", "--std", "1,1,1")
    assert code == 2 and "3 values but the data has 1 channels" in out
    code, out = _invoke("evaluate", "--model", f"{user['file']}:Brightness", "--data", str(d / "float.npz"))
    assert code == 2 and "--eps" in out


def test_convert_weights(user: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    d = user["dir"]
    code, out = _invoke("convert-weights", str(d / "w.pt"), str(d / "converted.safetensors"))
    assert code == 0 and torch.equal(load_file(str(d / "converted.safetensors"))["w"], torch.ones(1))
    with pytest.raises(InputError, match="must end in .safetensors"):
        convert_weights(d / "w.pt", d / "x.pt")


# ------------------------------------------------------------------------------------------------ training
def test_a_run_config_trains_a_user_model_on_a_user_table(user: dict[str, Path], tmp_path: Path) -> None:
    table = tmp_path / "tab.py"
    table.write_text("from torch import nn\n\ndef mlp(d):\n    return nn.Sequential(nn.Linear(d, 8), nn.ReLU(), "
                     "nn.Linear(8, 2))\n")
    cfg = {"train": {"name": "tab", "epochs": 1, "batch_size": 8,
                     "data": {"path": str(user["dir"] / "table.csv"), "val_size": 4},
                     "model": {"factory": f"{table}:mlp", "args": {"d": 6}},
                     "optimizer": {"name": "adam", "lr": 0.01},
                     "objective": {"name": "pgd-at", "attack": {"name": "pgd", "norm": "linf", "eps": 0.05,
                                                                 "steps": 2}},
                     "validation": {"n": 4}},
           "eval": {"attacks": [{"name": "pgd", "norm": "linf", "eps": 0.05, "steps": 5}], "large_eps": 0.5}}
    (tmp_path / "tab.yaml").write_text(yaml.safe_dump(cfg))
    code, out = _invoke("train", str(tmp_path / "tab.yaml"), "--runs-dir", str(tmp_path / "runs"), "--no-progress")
    assert code == 0, out
    run = tmp_path / "runs" / "tab"
    assert (run / "scaler.json").exists()
    code, out = _invoke("evaluate", str(run), "--no-progress")
    assert code == 2 and "pass --data" in out
    code, out = _invoke("evaluate", str(run), "--data", str(user["dir"] / "table.csv"), "--no-progress")
    assert code == 0, out
    result = json.loads(max((run / "eval").glob("best-*.json")).read_text())
    assert result["n"] == 24 and len(result["model"]["data_sha256"]) == 64
