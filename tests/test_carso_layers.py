"""TwoNN intrinsic dimension and CARSO's ``layers: auto`` (chosen at training start, recorded in the run)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from robustlab.core.errors import ConfigError, InputError
from robustlab.models import create_model
from robustlab.purification.carso import carso_of
from robustlab.purification.carso.intrinsic_dim import layer_intrinsic_dims, twonn
from robustlab.purification.carso.layer_choice import candidate_layers, choose_layers
from robustlab.runs.loading import load_trained_model
from robustlab.training.trainer import Trainer
from tests._training_helpers import tiny_config


def _manifold(d: int, dim: int, n: int, seed: int) -> torch.Tensor:
    """n Gaussian points on a random d-dimensional linear subspace of R^dim."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, d, generator=g))[0]
    return torch.randn(n, d, generator=g) @ basis.T


@pytest.mark.parametrize(("d", "dim"), [(3, 20), (6, 40)])
def test_twonn_recovers_the_dimension_of_a_linear_manifold(d: int, dim: int) -> None:
    assert twonn(_manifold(d, dim, 1000, seed=0)) == pytest.approx(d, rel=0.15)


def test_twonn_drops_duplicates_and_refuses_too_few_points() -> None:
    x = _manifold(3, 20, 600, seed=1)
    assert twonn(torch.cat([x, x[:50]])) == pytest.approx(3, rel=0.15)  # duplicated points have r1 = 0: dropped
    with pytest.raises(InputError, match="at least 3"):
        twonn(x[:2])


def _known_net() -> nn.Sequential:
    """Four 20 -> 20 linear maps: ``a`` keeps everything, ``d`` the data's 3 coordinates and 2 noise ones, ``b`` and
    ``c`` only the data's 3 coordinates."""
    def mask(keep: int) -> nn.Linear:
        lin = nn.Linear(20, 20, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.diag((torch.arange(20) < keep).float()))
        return lin

    return nn.Sequential(OrderedDict(a=mask(20), d=mask(5), b=mask(3), c=mask(20)))


def test_choose_layers_picks_the_layers_the_attack_changes_most() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(500, 20)
    x[:, :3] = torch.randn(500, 3, generator=g)  # data: a 3-dimensional manifold
    x_adv = x.clone()
    x_adv[:, 3:13] += torch.randn(500, 10, generator=g)  # the "attack": 10 directions off the manifold
    net = _known_net()
    dims = layer_intrinsic_dims(net, x_adv, ["a", "d", "b"])
    assert dims["a"] == pytest.approx(13, rel=0.2) and dims["d"] == pytest.approx(5, rel=0.2)
    assert dims["b"] == pytest.approx(3, rel=0.15)
    choice = choose_layers(net, x, x_adv, 2)
    assert choice.layers == ["a", "d"]  # a: ID 3 -> ~13, d: 3 -> ~5; b and c: 3 -> 3 (the noise is projected away)
    assert choice.change("b") == 0 and choice.change("c") == 0
    assert choose_layers(net, x, x_adv, 1, candidates=["c", "b", "d"]).layers == ["d"]
    assert set(choice.record(500)["intrinsic_dim"]) == {"a", "d", "b", "c"}
    with pytest.raises(InputError, match="auto_layers"):
        choose_layers(net, x, x_adv, 5)


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("clf") / "clf"
    Trainer(tiny_config(epochs=1, max_steps_per_epoch=3, validation={"n": 32, "attack": None}), run,
            show_progress=False).fit()
    return run


def _auto_config(classifier: Path) -> object:
    return tiny_config(
        epochs=1, max_steps_per_epoch=1, batch_size=16,
        model={"name": "carso", "kwargs": {"classifier": str(classifier), "layers": "auto", "auto_layers": 2,
                                           "latent_dim": 8, "cond_dim": 16, "joint_dim": 12, "ensemble_size": 2}},
        optimizer={"name": "radam", "lr": 0.001},
        objective={"name": "carso", "attack": {"name": "pgd", "norm": "linf", "eps": 0.3, "steps": 2},
                   "params": {"adv_fraction": 0.5}},
        validation={"n": 16, "attack": None},
    )


def test_layers_auto_is_chosen_at_training_start_and_recorded(classifier_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "carso"
    trainer = Trainer(_auto_config(classifier_run), run, show_progress=False)
    kwargs = trainer.cfg.model.kwargs
    chosen = kwargs["layers"]
    candidates = candidate_layers(create_model("mlp", "mnist", hidden=[32]))
    assert len(chosen) == 2 and set(chosen) <= set(candidates)
    assert chosen == [c for c in candidates if c in chosen]  # network order
    assert set(kwargs["layers_auto"]["intrinsic_dim"]) == set(candidates) and kwargs["layers_auto"]["n"] == 256
    assert carso_of(trainer.model)[0].layers == chosen
    trainer.fit()
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["kwargs"]["layers"] == chosen
    model, _ = load_trained_model(run, which="last")  # evaluation rebuilds the same model from the checkpoint
    assert carso_of(model)[0].layers == chosen
    again = Trainer(_auto_config(classifier_run), run, show_progress=False)  # same points, same seed: same choice
    assert again.cfg.model.kwargs == kwargs and again.hash == trainer.hash
    with pytest.raises(ConfigError, match="layers: auto"):
        create_model("carso", "mnist", classifier=str(classifier_run), layers="auto")
