"""Ensemble: log-mean-softmax output by hand, member access through the wrapper, registry, checkpoints, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from robustlab.attacks import PGD
from robustlab.core.errors import ConfigError, InputError, UnknownNameError
from robustlab.core.threat import ThreatModel
from robustlab.io.checkpoint import load_weights, save_weights
from robustlab.models import Ensemble, create_model, member_logits, member_models
from robustlab.models.ensemble import as_ensemble, is_ensemble
from robustlab.runs.ensemble import ensemble_from_runs
from robustlab.runs.loading import load_trained_model


class Fixed(nn.Module):
    """Returns the same logits for every input (shape (N, C))."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)
        self.num_classes = len(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1) + 0 * x.flatten(1)[:, :1]


def test_output_is_log_of_mean_softmax_by_hand() -> None:
    a, b = [2.0, 0.0, -1.0], [0.0, 3.0, 0.0]
    ens = Ensemble([Fixed(a), Fixed(b)])
    x = torch.rand(2, 1, 4, 4)
    pa = [math.exp(v) / sum(math.exp(u) for u in a) for v in a]
    pb = [math.exp(v) / sum(math.exp(u) for u in b) for v in b]
    want = [math.log((p + q) / 2) for p, q in zip(pa, pb)]
    out = ens(x)
    assert out.shape == (2, 3)
    assert torch.allclose(out[0], torch.tensor(want), atol=1e-6)
    assert torch.allclose(out.exp().sum(1), torch.ones(2), atol=1e-6)
    assert ens.member_logits(x).shape == (2, 2, 3)
    assert torch.equal(ens.member_logits(x)[1, 0], torch.tensor(b))


def test_output_is_stable_for_huge_logits() -> None:
    ens = Ensemble([Fixed([1000.0, 0.0]), Fixed([0.0, 1000.0])])
    out = ens(torch.zeros(1, 1, 2, 2))
    assert torch.isfinite(out).all()
    assert torch.allclose(out, torch.full((1, 2), math.log(0.5)), atol=1e-5)


def test_registry_ensemble_members_share_parameters_with_views() -> None:
    torch.manual_seed(0)
    model = create_model("ensemble", "mnist", member="mlp", k=3, member_kwargs={"hidden": [8]})
    assert is_ensemble(model) and len(as_ensemble(model)) == 3 and model.num_classes == 10
    x = torch.rand(4, 1, 28, 28)
    z = member_logits(model, x)
    assert z.shape == (3, 4, 10)
    views = member_models(model)
    for k, view in enumerate(views):
        assert torch.allclose(view(x), z[k])
    # members start different (drawn one after another), and a view is the member itself, not a copy
    assert not torch.allclose(z[0], z[1])
    with torch.no_grad():
        as_ensemble(model).members[1].fc.bias.add_(1.0)
    assert torch.allclose(views[1](x), z[1] + 1.0, atol=1e-5)
    # the attack on the ensemble output runs and stays in the ball
    x_adv = PGD(model, ThreatModel("linf", 0.1), steps=3)(x, torch.zeros(4, dtype=torch.long))
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6


def test_members_list_form_and_checkpoint_roundtrip(tmp_path: Path) -> None:
    spec = [{"name": "mlp", "kwargs": {"hidden": [8]}}, {"name": "mlp", "kwargs": {"hidden": [4, 4]}}]
    model = create_model("ensemble", "mnist", members=spec)
    assert model.model_spec["kwargs"] == {"members": spec}
    path = tmp_path / "ens.safetensors"
    save_weights(path, model, {"model": "ensemble", "dataset": "mnist", "model_kwargs": json.dumps({"members": spec})})
    again = create_model("ensemble", "mnist", members=spec)
    load_weights(path, again)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(again(x), model(x))
    loaded, _ = load_trained_model(path)
    assert torch.equal(loaded(x), model(x))


def _fake_run(root: Path, name: str, dataset: str, hidden: list[int]) -> Path:
    model = create_model("mlp", dataset, hidden=hidden)
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    save_weights(run / "checkpoints" / "best.safetensors", model,
                 {"model": "mlp", "dataset": dataset, "model_kwargs": json.dumps({"hidden": hidden})})
    return run


def test_ensemble_from_runs_matches_members_and_reloads(tmp_path: Path) -> None:
    runs = [_fake_run(tmp_path, "a", "mnist", [8]), _fake_run(tmp_path, "b", "mnist", [6])]
    ens = ensemble_from_runs(runs)
    x = torch.rand(3, 1, 28, 28)
    singles = [load_trained_model(r)[0](x) for r in runs]
    want = torch.logsumexp(torch.stack([s.log_softmax(1) for s in singles]), 0) - math.log(2)
    assert torch.allclose(ens(x), want, atol=1e-6)
    spec = ens.model_spec
    rebuilt = create_model(spec["model"], spec["dataset"], **spec["kwargs"])
    rebuilt.load_state_dict(ens.state_dict())
    assert torch.allclose(rebuilt(x), ens(x))


def test_ensemble_from_runs_refuses_mixed_datasets_and_single_runs(tmp_path: Path) -> None:
    a = _fake_run(tmp_path, "a", "mnist", [8])
    c = _fake_run(tmp_path, "c", "cifar10", [8])
    with pytest.raises(ConfigError, match="different datasets"):
        ensemble_from_runs([a, c])
    with pytest.raises(ConfigError, match="at least 2"):
        ensemble_from_runs([a])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"member": "mlp", "k": 1}, ConfigError, "at least 2 members"),
        ({"members": [{"name": "mlp"}]}, ConfigError, "at least 2 members"),
        ({}, ConfigError, "members"),
        ({"member": "mlp"}, ConfigError, "k: K"),
        ({"member": "mlp", "k": 2, "members": [{"name": "mlp"}]}, ConfigError, "not both"),
        ({"members": [{"name": "mlp", "kwarg": {}}, {"name": "mlp"}]}, ConfigError, "member 0"),
        ({"members": [{"name": "ensemble"}, {"name": "mlp"}]}, ConfigError, "itself an ensemble"),
        ({"member": "mpl", "k": 2}, UnknownNameError, "mlp"),
        ({"member": "mlp", "k": 2, "member_kwargs": {"width": 3}}, InputError, "hidden"),
    ],
)
def test_bad_ensemble_specs(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        create_model("ensemble", "mnist", **kwargs)


def test_members_with_different_classes_or_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="number of classes"):
        Ensemble([Fixed([0.0, 1.0]), Fixed([0.0, 1.0, 2.0])])
    # members without num_classes: the shape check happens at the first forward
    mixed = Ensemble([nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), nn.Sequential(nn.Flatten(), nn.Linear(4, 2))])
    with pytest.raises(InputError, match="different shapes"):
        mixed(torch.rand(2, 1, 2, 2))
    with pytest.raises(ConfigError, match="needs an ensemble"):
        as_ensemble(create_model("mlp", "mnist", hidden=[4]))
