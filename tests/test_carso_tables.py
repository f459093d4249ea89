"""CARSO on table rows: fully connected pre-encoder and decoder (architecture auto/fc) over an MLP classifier of N x d
rows, a Trainer step with the carso objective on a synthetic shuttle-format table, the checkpoint round trip, the
refusal of the convolutional blocks on rows, and the carso-shuttle preset."""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from robustlab.core.errors import ConfigError, InputError
from robustlab.data import sources
from robustlab.data.registry import DatasetInfo
from robustlab.io.atomic import sha256_file
from robustlab.models import create_model
from robustlab.presets import load_preset
from robustlab.purification.carso import carso_of
from robustlab.purification.carso.blocks import MLPDecoder, MLPPreEncoder
from robustlab.purification.carso.model import CARSO
from robustlab.runs.loading import load_trained_model
from robustlab.training.trainer import Trainer
from tests._training_helpers import tiny_config

SIZES = {"latent_dim": 8, "cond_dim": 16, "joint_dim": 12, "fc_width": 24}
SHUTTLE_LAYERS = "net.hidden.fc1,net.fc"


def _shuttle_carso(**kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("carso", "shuttle", classifier_model="mlp", classifier_dataset="shuttle",
                        classifier_kwargs={"hidden": [16]}, layers=SHUTTLE_LAYERS, **{**SIZES, **kw})


def test_fc_carso_over_an_mlp_takes_rows() -> None:
    """A synthetic table (6 features, 3 classes): auto picks fc; rows in, (N, classes) out, reconstructions in [0, 1]
    of the rows' shape, and the input gradient flows end to end through the representation and the ensemble."""
    info = DatasetInfo("rows6", 3, (6,), (0.5,), (0.25,), ("a", "b", "c"))
    torch.manual_seed(0)
    clf = create_model("mlp", info, hidden=[16, 16]).eval().requires_grad_(False)
    net = CARSO(clf, ["net.hidden.fc1", "net.hidden.fc2", "net.fc"], image_shape=(6,), ensemble_size=3,
                latent_dim=8, cond_dim=16, joint_dim=12, fc_width=24)
    assert net.architecture == "fc" and net.num_classes == 3
    assert isinstance(net.pre_encoder, MLPPreEncoder) and isinstance(net.decoder, MLPDecoder)
    x = torch.rand(5, 6)
    xn = clf.normalize(x)
    rec, mu, logvar = net.reconstruct(xn)
    assert rec.shape == (5, 6) and mu.shape == logvar.shape == (5, 8)
    assert float(rec.detach().min()) >= 0 and float(rec.detach().max()) <= 1
    assert net.sample_reconstructions(xn).shape == (5, 3, 6) and net.sample_logits(xn).shape == (5, 3, 3)
    net.eval()
    x.requires_grad_(True)
    out = net(clf.normalize(x))
    assert out.shape == (5, 3) and torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    with pytest.raises(InputError, match="table rows of 6 features"):
        net(torch.rand(5, 1, 1, 6))


def test_the_registry_builder_reads_rows_from_a_table_classifier() -> None:
    model = _shuttle_carso(ensemble_size=2).eval()
    net, wrapper = carso_of(model)
    assert net.image_shape == (9,) and net.architecture == "fc"
    assert model(torch.rand(4, 9)).shape == (4, 2)
    fc_images = create_model("carso", "mnist", classifier_model="mlp", classifier_dataset="mnist",
                             classifier_kwargs={"hidden": [16]}, layers="net.fc", architecture="fc", **SIZES)
    assert carso_of(fc_images)[0].architecture == "fc"  # fc also takes images (flattened), any size
    assert fc_images.eval()(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    conv = create_model("carso", "mnist", classifier_model="mlp", classifier_dataset="mnist",
                        classifier_kwargs={"hidden": [16]}, layers="net.fc", **SIZES)
    assert carso_of(conv)[0].architecture == "conv"  # auto keeps images on the paper's convolutions


def test_conv_on_rows_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="architecture conv needs images .* use architecture: fc"):
        _shuttle_carso(architecture="conv")
    with pytest.raises(ConfigError, match="must be auto, conv or fc"):
        _shuttle_carso(architecture="dense")
    with pytest.raises(ConfigError, match=r"trained on shuttle \(\(9,\)"):  # a table classifier, image CARSO
        create_model("carso", "mnist", classifier_model="mlp", classifier_dataset="shuttle", layers="net.fc")


# ------------------------------------------------------------------------------------------------ training
def _write_table(path: Path, seed: int = 0) -> Path:
    """A file in river's shuttle format (f1..f9, anomaly; 30% anomalies, separable on f1)."""
    rng = np.random.default_rng(seed)
    n = sources.SHUTTLE_ROWS
    y = (rng.random(n) < 0.3).astype(int)
    x = rng.integers(-50, 50, (n, 9))
    x[:, 0] = np.where(y == 1, rng.integers(60, 100, n), rng.integers(0, 40, n))
    lines = [",".join([*sources.SHUTTLE_COLUMNS, "anomaly"])]
    lines += [",".join(map(str, [*r, c])) for r, c in zip(x.tolist(), y.tolist())]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


@pytest.fixture(scope="module")
def table_classifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The registry's shuttle replaced by a synthetic table; a tiny MLP trained on it (its run folder)."""
    root = tmp_path_factory.mktemp("table")
    path = _write_table(root / "shuttle.csv.gz")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sources, "shuttle_package_file", lambda: path)
        mp.setattr(sources, "SHUTTLE_CSV_SHA256", sha256_file(path))
        run = root / "clf"
        cfg = tiny_config(epochs=1, max_steps_per_epoch=4, data={"dataset": "shuttle", "val_size": 4000,
                                                                 "train_subset": 512},
                          model={"name": "mlp", "kwargs": {"hidden": [16]}},
                          objective={"name": "pgd-at", "attack": {"name": "pgd", "norm": "linf", "eps": 0.05,
                                                                  "steps": 2}},
                          validation={"n": 64, "attack": None})
        Trainer(cfg, run, show_progress=False).fit()
        yield run


def test_a_trainer_step_on_rows_and_the_checkpoint_round_trip(table_classifier: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        epochs=1, max_steps_per_epoch=2, batch_size=32,
        data={"dataset": "shuttle", "val_size": 4000, "train_subset": 256},
        model={"name": "carso", "kwargs": {"classifier": str(table_classifier), "layers": SHUTTLE_LAYERS,
                                           "ensemble_size": 2, **SIZES}},
        optimizer={"name": "radam", "lr": 0.001, "lookahead": {"k": 5, "alpha": 0.8}},
        objective={"name": "carso", "attack": {"name": "pgd", "norm": "linf", "eps": 0.05, "steps": 2},
                   "params": {"adv_fraction": 0.5}},
        validation={"n": 32, "attack": None},
    )
    trainer = Trainer(cfg, tmp_path / "carso", show_progress=False)
    net, _ = carso_of(trainer.model)
    assert net.architecture == "fc" and net.image_shape == (9,)
    frozen = {k: v.clone() for k, v in net.classifier.state_dict().items()}
    decoder = {k: v.clone() for k, v in net.decoder.state_dict().items()}
    summary = trainer.fit()
    assert all(torch.equal(frozen[k], v) for k, v in net.classifier.state_dict().items())
    assert any(not torch.equal(decoder[k], v) for k, v in net.decoder.state_dict().items())
    assert math.isfinite(summary.last_metrics["train_loss"]) and summary.last_metrics["train_adv_fraction"] == 0.5

    loaded, meta = load_trained_model(tmp_path / "carso", which="last")
    assert meta["model"] == "carso" and meta["dataset"] == "shuttle"
    again = carso_of(loaded)[0]
    assert again.architecture == "fc" and again.ensemble_size == 2
    net.sampling = again.sampling = "mean"  # z = 0: deterministic, so the two must agree
    trainer.model.eval()
    loaded.eval()
    x = torch.rand(6, 9)
    assert torch.allclose(loaded(x), trainer.model.cpu()(x), atol=1e-6)


def test_layers_auto_chooses_among_the_mlp_layers_on_rows(table_classifier: Path, tmp_path: Path) -> None:
    """``layers: auto`` measures the classifier's Linear layers on N x d training rows and writes its choice down."""
    cfg = tiny_config(
        epochs=1, max_steps_per_epoch=1, batch_size=32,
        data={"dataset": "shuttle", "val_size": 4000, "train_subset": 256},
        model={"name": "carso", "kwargs": {"classifier": str(table_classifier), "layers": "auto", "auto_layers": 2,
                                           "ensemble_size": 2, **SIZES}},
        objective={"name": "carso", "attack": {"name": "pgd", "norm": "linf", "eps": 0.05, "steps": 2}},
        validation={"n": 32, "attack": None},
    )
    trainer = Trainer(cfg, tmp_path / "auto", show_progress=False)
    net, _ = carso_of(trainer.model)
    assert len(net.layers) == 2 and set(net.layers) <= {"net.hidden.fc1", "net.fc"}
    assert trainer.model.eval()(torch.rand(3, 9)).shape == (3, 2)


# ------------------------------------------------------------------------------------------------ preset
def test_the_carso_shuttle_preset_builds_an_fc_carso_over_the_shuttle_mlp() -> None:
    p = load_preset("carso-shuttle", "quick")
    kwargs = p.train.model.kwargs
    assert p.train.data.dataset == "shuttle" and p.train.model.name == "carso" and kwargs["architecture"] == "fc"
    assert kwargs["classifier_kwargs"] == load_preset("tabular-shuttle-pgd-at", "quick").train.model.kwargs
    assert p.train.objective.name == "carso" and p.train.objective.attack.eps == 0.05
    assert p.eval.autoattack is None and "DLR loss needs at least 3 classes" in p.notes  # 2 classes: no rand AA
    assert [a.name for a in p.eval.attacks] == ["apgd-ce", "apgd-ce", "pgd"] and all(a.eot_samples
                                                                                  for a in p.eval.attacks)
    model = create_model(p.train.model.name, p.train.data.dataset, **kwargs).eval()
    assert carso_of(model)[0].layers == ["net.hidden.fc1", "net.hidden.fc2", "net.fc"]
    assert model(torch.rand(3, 9)).shape == (3, 2)
    assert load_preset("carso-shuttle", "paper").eval.classifier_only.attacks == ["apgd-ce", "fab-t"]
