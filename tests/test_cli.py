"""The command line end to end on a tiny run, and its error paths (exit code 2, one clear line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from robustlab import cli
from robustlab.data import load_dataset
from robustlab.io.checkpoint import load_tensors

runner = CliRunner()

TINY = {
    "train": {
        "name": "tiny-cli", "epochs": 1, "batch_size": 64, "seed": 1,
        "data": {"dataset": "mnist", "train_subset": 256},
        "model": {"name": "mlp", "kwargs": {"hidden": [32]}},
        "optimizer": {"name": "adam", "lr": 0.003},
        "objective": {"name": "pgd-at", "attack": {"name": "pgd", "norm": "linf", "eps": 0.1, "steps": 2}},
        "validation": {"n": 64},
    },
    "eval": {"n": 50, "attacks": [{"name": "pgd", "norm": "linf", "eps": 0.1, "steps": 5}], "large_eps": 0.9},
}


def invoke(*args: str) -> tuple[int, str]:
    """Run the CLI in-process the way `main()` does (robustlab errors -> exit 2)."""
    try:
        result = runner.invoke(cli.app, list(args), catch_exceptions=False)
        return result.exit_code, result.output
    except cli.RobustlabError as exc:
        return 2, str(exc)


@pytest.mark.usefixtures("mnist_available")
def test_train_then_evaluate_writes_results(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    code, out = invoke("train", str(cfg), "--runs-dir", str(tmp_path), "--no-progress", "--evaluate")
    assert code == 0, out
    run = tmp_path / "tiny-cli"
    results = list((run / "eval").glob("best-*.json"))
    assert len(results) == 1
    data = json.loads(results[0].read_text())
    assert data["n"] == 50 and data["threat"] == {"norm": "linf", "eps": 0.1}
    assert data["sanity"]["large_eps"] == 0.9 and data["sanity"]["large_eps_collapsed"]
    assert data["worst_case_accuracy"] <= data["clean_accuracy"]
    code, out = invoke("evaluate", str(run), "--eps", "0.05", "--n", "20", "--no-progress")
    assert code == 0, out
    assert "eps=0.05" in out

    code, out = invoke("evaluate", str(run / "checkpoints" / "last.safetensors"), "--protocol", "pgd", "--n", "10",
                       "--no-progress")
    assert code == 0, out
    assert len(list((run / "eval").glob("last-*.json"))) == 1  # a checkpoint file evaluates into its run folder

    adv = tmp_path / "adv.safetensors"
    code, out = invoke("attack", str(run), "--out", str(adv), "--attack", "mim", "--eps", "0.1", "--n", "16",
                       "--set", "attack.steps=3")
    assert code == 0, out
    tensors, meta = load_tensors(adv)
    assert tensors["x_adv"].shape == (16, 1, 28, 28) and tensors["labels"].shape == (16,)
    assert json.loads(meta["protocol"])["steps"] == 3 and meta["dataset"] == "mnist"
    x = load_dataset("mnist", "test").float_images(range(16))
    assert float((tensors["x_adv"] - x).abs().max()) <= 0.1 + 1e-6
    code, out = invoke("attack", str(run), "--out", str(adv), "--attack", "mim", "--set", "attack.stepz=3")
    assert code == 2 and "stepz" in out

    aa = ["evaluate", str(run), "--protocol", "autoattack-standard", "--n", "12", "--no-progress",
          "--set", "eval.autoattack.version=custom", "--set", "eval.autoattack.attacks=[apgd-ce, apgd-dlr]",
          "--set", "eval.autoattack.attack_kwargs={apgd-ce: {steps: 5}, apgd-dlr: {steps: 5}}"]
    code, out = invoke(*aa)
    assert code == 0, out
    states = list((run / "eval" / "state-best").glob("autoattack-custom-*.state.safetensors"))
    assert len(states) == 1  # resumable state kept beside the results
    newest = max((run / "eval").glob("best-*.json"), key=lambda p: p.stat().st_mtime_ns)
    data = json.loads(newest.read_text())
    keys = list(data["robust_accuracy"])
    assert keys[0].endswith(": apgd-ce") and keys[1].endswith(": apgd-dlr") and data["n"] == 12
    assert data["protocol"][-1]["name"] == "autoattack-custom"
    assert data["worst_case_accuracy"] == data["robust_accuracy"][keys[1]]


def test_data_and_presets_commands_list_things() -> None:
    code, out = invoke("data")
    assert code == 0 and "mnist" in out and "cifar10" in out
    code, out = invoke("presets")
    assert code == 0 and "mnist-pgd-at" in out


def test_unknown_preset_lists_valid_names(tmp_path: Path) -> None:
    code, out = invoke("train", "no-such-preset", "--runs-dir", str(tmp_path))
    assert code == 2 and "mnist-pgd-at" in out


def test_mistyped_override_is_an_error(tmp_path: Path) -> None:
    code, out = invoke("train", "mnist-pgd-at", "--set", "train.optimiser.lr=1", "--runs-dir", str(tmp_path))
    assert code == 2 and "optimiser" in out and "unknown key" in out


def test_evaluate_refuses_a_corrupt_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "run" / "checkpoints" / "best.safetensors"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x80\x02not a checkpoint at all")
    code, out = invoke("evaluate", str(tmp_path / "run"), "--preset", "demo")
    assert code == 2 and "best.safetensors" in out


def test_main_turns_errors_into_exit_code_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr("sys.argv", ["robustlab", "train", "no-such-preset"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    assert "unknown preset" in capsys.readouterr().err
