"""What a newcomer and a careful tester hit from the command line: results that must not be lost, one checkpoint
evaluated one way, checks that follow the evaluated radius, and messages whose advice works when followed."""

from __future__ import annotations

import io
import json
import re
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console
from torch import nn
from typer.testing import CliRunner

from robustlab import cli
from robustlab.core.errors import CheckpointError, ConfigError, InputError
from robustlab.evaluation.defaults import at_eps, protocol_for_run
from robustlab.runs import resolve_checkpoint

runner = CliRunner()

TINY = {
    "train": {
        "name": "tiny-paths", "epochs": 1, "batch_size": 64, "seed": 1,
        "data": {"dataset": "mnist", "train_subset": 256},
        "model": {"name": "small-cnn"},
        "optimizer": {"name": "adam", "lr": 0.003},
        "objective": {"name": "pgd-at", "attack": {"name": "pgd", "norm": "linf", "eps": 0.1, "steps": 2}},
        "validation": {"n": 32},
    },
    "eval": {"n": 16, "attacks": [{"name": "pgd", "norm": "linf", "eps": 0.1, "steps": 3, "step_size": 0.05}],
             "large_eps": 0.5},
}


def invoke(*args: str) -> tuple[int, str]:
    """Run the CLI in-process the way ``main()`` does (robustlab and file errors -> exit code 2)."""
    try:
        result = runner.invoke(cli.app, list(args), catch_exceptions=False)
        return result.exit_code, result.output
    except (cli.RobustlabError, OSError) as exc:
        return cli.ERROR_EXIT, str(exc)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny run folder (SmallCNN on 256 MNIST images, one epoch), shared by the tests below."""
    from tests.conftest import dataset_available

    if not dataset_available("mnist"):
        pytest.skip("MNIST absent")
    root = tmp_path_factory.mktemp("runs")
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    code, out = invoke("train", str(cfg), "--runs-dir", str(root), "--no-progress")
    assert code == 0, out
    return root / "tiny-paths"


def _newest(run: Path, pattern: str) -> dict:
    path = max((run / "eval").glob(pattern), key=lambda p: p.stat().st_mtime_ns)
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------ results not lost
def test_an_unwritable_result_folder_fails_before_any_attack(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_attacks(*args: object, **kwargs: object) -> None:
        raise AssertionError("the attacks ran although the result could not be written")

    monkeypatch.setattr("robustlab.evaluation.protocol.run_protocol", no_attacks)
    blocked = run.parent / "blocked"
    blocked.write_text("a file where the result folder should be")  # mkdir fails even for root
    code, out = invoke("evaluate", str(run), "--out", str(blocked / "result.json"), "--no-progress")
    assert code == 2 and "cannot write the evaluation result" in out and str(blocked) in out


def test_a_result_that_cannot_be_written_after_the_attacks_is_printed(run: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(self: object, path: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("robustlab.evaluation.result.EvaluationResult.save", disk_full)
    result = runner.invoke(cli.app, ["evaluate", str(run), "--n", "4", "--no-progress"])
    assert isinstance(result.exception, cli.RobustlabError)
    assert "No space left on device" in str(result.exception) and "printed above as JSON" in str(result.exception)
    printed = [line for line in result.output.splitlines() if line.startswith("{")]
    assert printed and json.loads(printed[-1])["n"] == 4  # the whole result is on stdout


def test_main_gives_file_errors_the_same_exit_code(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(cli, "app", read_only)
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == cli.ERROR_EXIT and "Read-only file system" in capsys.readouterr().err


# ------------------------------------------------------------------------------- one checkpoint, one protocol
def test_a_checkpoint_inside_a_run_gets_the_runs_protocol(run: Path) -> None:
    code, out = invoke("evaluate", str(run), "--no-progress")
    assert code == 0, out
    by_folder = _newest(run, "best-*.json")
    code, out = invoke("evaluate", str(run / "checkpoints" / "best.safetensors"), "--no-progress")
    assert code == 0, out
    by_file = _newest(run, "best-*.json")
    assert by_file["protocol"] == by_folder["protocol"]
    assert by_file["sanity"]["large_eps"] == by_folder["sanity"]["large_eps"] == 0.5
    assert list(by_file["robust_accuracy"]) == ["pgd-3 step_size=0.05 linf eps=0.1"]  # the step is in the label


def test_protocols_that_differ_in_step_size_have_different_labels(run: Path) -> None:
    code, out = invoke("evaluate", str(run), "--protocol", "pgd", "--n", "4", "--no-progress")
    assert code == 0, out
    assert list(_newest(run, "best-*.json")["robust_accuracy"]) == ["pgd-50x3 linf eps=0.1"]


def test_the_large_eps_check_follows_eps(run: Path) -> None:
    code, out = invoke("evaluate", str(run), "--eps", "0.3", "--n", "4", "--no-progress")
    assert code == 0, out
    sanity = _newest(run, "best-*.json")["sanity"]
    assert sanity["large_eps"] == 1.0  # 0.5 * 0.3 / 0.1, capped at the box
    assert sanity["large_eps_attack"] == "pgd-3 step_size=0.1667 linf eps=1" and "eps=0.5" not in out
    base = {"attacks": [{"name": "pgd", "norm": "l2", "eps": 2.0}], "large_eps": 8.0}
    assert at_eps(base, 3.0)["large_eps"] == 12.0 and at_eps(base, 1.0)["large_eps"] == 8.0
    linf = {"attacks": [{"name": "pgd", "norm": "linf", "eps": 0.3}], "large_eps": 0.5}
    assert at_eps(linf, 0.6)["large_eps"] == 1.0 and at_eps(linf, 0.1)["large_eps"] == 0.5


def test_protocol_for_a_folder_that_names_none_says_what_to_pass(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"objective": {"name": "standard"}}))
    with pytest.raises(ConfigError, match="--eps"):
        protocol_for_run(tmp_path)
    proto, _ = protocol_for_run(tmp_path, eps=2.0, norm="l2")  # the advice, followed
    assert proto["attacks"][0] == {"name": "pgd", "steps": 50, "restarts": 3, "norm": "l2", "eps": 2.0}


# -------------------------------------------------------------------------------------- advice that works
class _TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.fc(x.flatten(1))
        return z, z.relu()


def test_tuple_outputs_advice_works_when_followed() -> None:
    from robustlab.attacks import PGD
    from robustlab.core.threat import ThreatModel
    from robustlab.models import SelectOutput

    net, x, y = _TupleNet(), torch.rand(5, 1, 2, 2), torch.randint(0, 3, (5,))
    with pytest.raises(InputError, match=r"SelectOutput\(model, 0\)") as exc:
        PGD(net, ThreatModel("linf", 0.1), steps=2)(x, y)
    assert "lambda" not in str(exc.value)
    x_adv = PGD(SelectOutput(net, 0), ThreatModel("linf", 0.1), steps=2)(x, y)  # the advice
    assert x_adv.shape == x.shape
    with pytest.raises(InputError, match="torch.nn.Module"):
        PGD(lambda t: net(t)[0], ThreatModel("linf", 0.1))  # type: ignore[arg-type]


def test_nhwc_input_gets_a_clear_message_for_one_channel_models_too() -> None:
    from robustlab.attacks import PGD
    from robustlab.core.threat import ThreatModel
    from robustlab.models import create_model

    nhwc = torch.rand(2, 28, 28, 1)
    y = torch.tensor([0, 1])
    with pytest.raises(InputError, match="expects 1-channel NCHW input.*NHWC"):
        PGD(create_model("small-cnn", "mnist"), ThreatModel("linf", 0.1), steps=1)(nhwc, y)
    raw = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))  # not in Normalized
    with pytest.raises(InputError, match="NHWC"):
        PGD(raw, ThreatModel("linf", 0.1), steps=1)(nhwc, y)


def test_data_hints_name_only_options_that_exist(tmp_path: Path) -> None:
    from robustlab.data.registry import HINTS

    text = " ".join(HINTS.values())
    assert "--data-root" not in text
    for command in re.findall(r"`(robustlab [^`]+)`", text):
        words = command.split()[1:]
        options = [w for w in words if w.startswith("--")]
        code, out = invoke(*[w for w in words if not w.startswith("--") and w.upper() != w][:1], "--help")
        assert code == 0, command
        assert all(opt in out for opt in options), (command, out)
    code, out = invoke("data", "cifar10", "--root", str(tmp_path))
    assert code == 2 and "not a CIFAR-10 folder" in out


@pytest.mark.usefixtures("mnist_available")
def test_data_command_loads_a_named_dataset() -> None:
    code, out = invoke("data", "mnist")
    assert code == 0 and "mnist test: 10000 images" in out


def test_missing_runs_and_checkpoints_are_told_apart(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no run folder or checkpoint"):
        resolve_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a run folder"):
        resolve_checkpoint(tmp_path / "empty")
    (tmp_path / "untrained").mkdir()
    (tmp_path / "untrained" / "config.yaml").write_text("{}")
    with pytest.raises(CheckpointError, match="train it first"):
        resolve_checkpoint(tmp_path / "untrained")
    (tmp_path / "untrained" / "checkpoints").mkdir()
    (tmp_path / "untrained" / "checkpoints" / "last.safetensors").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="--which last"):
        resolve_checkpoint(tmp_path / "untrained")
    code, out = invoke("evaluate", str(tmp_path / "nope"))
    assert code == 2 and "no run folder or checkpoint" in out and "--preset" not in out


def test_detect_on_a_single_model_explains_a_missing_auc(run: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's empty-legend warning must not leak
        code, out = invoke("detect", str(run), "--eps", "0.001", "--attacks", "fgsm", "--n", "8")
    assert code == 0, out
    assert "ensemble prediction" not in out and "the model's prediction" in out
    assert "nan" not in out.lower() and "nothing to detect" in out


def test_attack_refuses_zero_points(run: Path, tmp_path: Path) -> None:
    result = runner.invoke(cli.app, ["attack", str(run), "--out", str(tmp_path / "a.safetensors"), "--n", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output and "--n" in result.output


# ----------------------------------------------------------------------------------- leftovers and silence
def test_a_config_that_fails_validation_leaves_no_folder(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    code, out = invoke("train", "demo", "--runs-dir", str(tmp_path), "--set", "train.device=cuda")
    assert code == 2 and "CUDA" in out
    assert not any(tmp_path.iterdir())
    code, out = invoke("reproduce", "demo", "--runs-dir", str(tmp_path), "--device", "cuda")
    assert code == 2 and not any(tmp_path.iterdir())


def test_resumed_training_and_autoattack_say_so(run: Path) -> None:
    code, out = invoke("train", str(run.parent / "tiny.yaml"), "--runs-dir", str(run.parent), "--no-progress")
    assert code == 0 and "already trained to epoch 1 of 1" in out
    aa = ["evaluate", str(run), "--protocol", "autoattack-custom", "--n", "4", "--no-progress",
          "--set", "eval.autoattack.attacks=[apgd-ce]", "--set", "eval.autoattack.attack_kwargs={apgd-ce: {steps: 2}}"]
    code, out = invoke(*aa)
    assert code == 0 and "resuming AutoAttack" not in out
    code, out = invoke(*aa)
    assert code == 0 and "resuming AutoAttack from its state file" in out


def test_progress_is_plain_text_off_a_terminal_and_whole_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    from robustlab.utils.progress import Progress

    monkeypatch.delenv("ROBUSTLAB_NO_PROGRESS", raising=False)
    monkeypatch.setenv("ROBUSTLAB_PROGRESS_SECONDS", "0")
    pipe = io.StringIO()
    with Progress(4, "epoch 1/3", unit="img", console=Console(file=pipe)) as bar:
        for _ in range(4):
            bar.advance(1, loss=0.123456, adv_acc=0.5)
    lines = pipe.getvalue().splitlines()
    assert lines[0].startswith("epoch 1/3: 0/4") and lines[-1].endswith("done") and "loss=0.1235" in lines[-2]
    term = io.StringIO()
    with Progress(429, "epoch 1/5", unit="img",
                  console=Console(file=term, width=80, force_terminal=True, color_system=None)) as bar:
        bar.advance(100, loss=0.4321, acc=0.9123, adv_acc=0.5432, lr=0.01)
    shown = term.getvalue()
    assert "100/429" in shown and "lr=0.01" in shown and "adv_acc=0.5432" in shown


def test_leaderboard_shows_whole_numbers_and_n_at_80_columns(tmp_path: Path) -> None:
    from robustlab.store import ResultsStore
    from robustlab.store.leaderboard import leaderboard_rows, render_tables
    from tests._store_fixtures import make_result, make_run

    with ResultsStore(tmp_path / "s.sqlite") as store:
        store.record(make_result(worst=0.9, n=20, clean=0.99), make_run(tmp_path, "a-rather-long-run-name-quick"))
        store.record(make_result(worst=0.2056, n=1000, aa=True), make_run(tmp_path, "demo"))
        rows = leaderboard_rows(store)
    out = io.StringIO()
    for table in render_tables(rows):
        Console(file=out, width=80, color_system=None).print(table)
    text = out.getvalue()
    assert "20.56" in text and "1000" in text and "±13.7" in text and "…" not in text


def test_reproduce_keeps_its_store_in_runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import dataset_available

    if not dataset_available("mnist"):
        pytest.skip("MNIST absent")
    monkeypatch.delenv("ROBUSTLAB_STORE")
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "eval": {**TINY["eval"], "n": 4, "large_eps": None}}))
    code, out = invoke("reproduce", str(cfg), "--runs-dir", "elsewhere", "--no-progress")
    assert code == 0, out
    assert (tmp_path / "elsewhere" / "results.sqlite").exists() and not (tmp_path / "runs").exists()


def test_readme_tour_trains_every_run_it_uses() -> None:
    from robustlab.presets import load_preset

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    tour = readme.split("## A one-screen tour", 1)[1].split("```", 2)[1]
    trained: set[str] = set()
    for line in tour.splitlines():
        for command in line.split("#", 1)[0].split("&&"):
            words = command.split()
            if "robustlab" in words and words.index("robustlab") + 1 < len(words):
                i = words.index("robustlab") + 1
                if words[i].endswith(".cli"):
                    i += 1
                verb, rest = words[i], words[i + 1:]
                if verb == "train" or verb == "reproduce":
                    scale = rest[rest.index("--scale") + 1] if "--scale" in rest else "quick"
                    trained.add(load_preset(rest[0], scale).train.name)
                for word in rest:
                    if word.startswith("runs/"):
                        assert word.split("/")[1] in trained, f"the tour uses {word} before training it: {line}"
