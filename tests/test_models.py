"""Model zoo: shapes, parameter counts, normalisation, layer taps, registry errors."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from robustlab.core.errors import ConfigError, InputError, RobustlabError, UnknownNameError
from robustlab.io.fingerprint import model_fingerprint
from robustlab.models import (
    ClassifierNet,
    LayerTaps,
    Normalized,
    create_model,
    list_models,
    named_layers,
    register_model,
)
from robustlab.models import registry as registry_mod


@dataclass(frozen=True)
class Info:
    name: str
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()


MNIST = Info("mnist", 10, (1, 28, 28), (0.0,), (1.0,))
CIFAR = Info("cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
ALIASES = {"wrn-34-10": 46_160_474, "wrn-28-10": 36_479_194}
SMALL = {"wide-resnet": {"depth": 10, "widen_factor": 1}}
# Models built from other models (their own tests: test_ensemble.py, test_carso.py); not single ClassifierNets.
COMPOSITES = {"ensemble", "carso"}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_has_the_documented_names():
    expected = {"small-cnn", "cw-cnn", "adr-cnn", "resnet20", "preact-resnet18", "wide-resnet", "mlp", *ALIASES,
                *COMPOSITES}
    assert set(list_models()) == expected
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("info", [MNIST, CIFAR], ids=["1x28x28", "3x32x32"])
@pytest.mark.parametrize("name", [n for n in sorted(set(list_models()) - set(ALIASES) - COMPOSITES)])
def test_every_model_shapes_latent_and_gradients(name, info):
    torch.manual_seed(0)
    model = create_model(name, info, **SMALL.get(name, {})).eval()
    assert isinstance(model, Normalized) and isinstance(model.net, ClassifierNet)
    x = torch.rand(2, *info.shape, requires_grad=True)
    with LayerTaps(model, [model.latent_layer, model.penultimate_layer]) as taps:
        logits = model(x)
    assert logits.shape == (2, 10)
    z = model.encode(x)
    assert z.shape == (2, model.latent_dim)
    torch.testing.assert_close(taps[model.latent_layer], z)  # latent_layer really is the encoder output
    torch.testing.assert_close(model.classify(z), logits)
    assert taps[model.penultimate_layer].dim() == 2
    grad = torch.autograd.grad(logits[:, 0].sum(), x)[0]
    assert grad.abs().sum() > 0  # untrained nets must still give attacks a gradient


@pytest.mark.parametrize("alias,count", sorted(ALIASES.items()))
def test_wide_resnet_aliases_build(alias, count):
    with torch.device("meta"):  # no memory or init cost for the 46M-parameter net
        model = create_model(alias, CIFAR)
    assert n_params(model) == count
    assert model.latent_layer == "net.flatten" and model.latent_dim == 640


def test_small_cnn_parameter_count_matches_trades():
    # conv 320 + 9,248 + 18,496 + 36,928; fc 205,000 + 40,200 + 2,010
    assert n_params(create_model("small-cnn", MNIST)) == 312_202
    assert n_params(create_model("small-cnn", "mnist")) == 312_202  # by name (data package or fallback table)
    assert create_model("small-cnn", CIFAR).net.latent_dim == 64 * 5 * 5


def test_cw_and_adr_cnn_widths_differ_as_documented():
    cw, adr = create_model("cw-cnn", CIFAR).net, create_model("adr-cnn", CIFAR).net
    assert [m.out_channels for m in cw.features if isinstance(m, nn.Conv2d)] == [64, 64, 128, 128]
    assert [m.out_channels for m in adr.features if isinstance(m, nn.Conv2d)] == [64, 64, 64, 64]
    assert cw.classifier.fc1.out_features == adr.classifier.fc1.out_features == 256
    same = create_model("cw-cnn", MNIST, padding="same").net
    assert same.latent_dim == 64 * 7 * 7
    assert n_params(create_model("cw-cnn", MNIST)) == 312_202  # C&W MNIST CNN == TRADES SmallCNN


def test_non_square_and_custom_channels():
    info = Info("custom", 5, (2, 40, 36), (0.5, 0.5), (0.25, 0.5))
    for name in ("small-cnn", "cw-cnn", "resnet20", "mlp"):
        assert create_model(name, info)(torch.rand(2, 2, 40, 36)).shape == (2, 5)


def test_normalized_math_and_buffers():
    net = nn.Identity()
    model = Normalized(net, (0.5, 0.25, 0.0), (0.5, 2.0, 1.0))
    x = torch.rand(2, 3, 4, 4)
    expected = torch.stack([(x[:, 0] - 0.5) / 0.5, (x[:, 1] - 0.25) / 2.0, x[:, 2]], dim=1)
    torch.testing.assert_close(model(x), expected)
    assert model.net is net
    assert set(model.state_dict()) == {"mean", "std"} and model.mean.shape == (1, 3, 1, 1)
    with pytest.raises(InputError, match="3-channel"):
        model(torch.rand(2, 1, 4, 4))
    with pytest.raises(InputError, match="std"):
        Normalized(net, (0.5,), (0.0,))
    with pytest.raises(InputError, match="same non-zero length"):
        Normalized(net, (0.5, 0.5), (1.0,))


def test_create_model_wraps_with_dataset_statistics():
    model = create_model("resnet20", CIFAR)
    torch.testing.assert_close(model.mean.flatten(), torch.tensor(CIFAR.mean))
    torch.testing.assert_close(model.std.flatten(), torch.tensor(CIFAR.std))
    assert model.model_spec == {"model": "resnet20", "dataset": "cifar10", "kwargs": {}}
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(model(x), model.net((x - model.mean) / model.std))


def test_named_layers_look_like_documented():
    names = named_layers(create_model("small-cnn", MNIST))
    assert "net" not in names and "" not in names
    assert {"net.features", "net.features.conv4", "net.flatten", "net.classifier.relu2"} <= set(names)
    assert "features.conv4" in named_layers(create_model("small-cnn", MNIST).net)  # bare nets: no prefix
    assert "net.layer3.2.relu2" in named_layers(create_model("resnet20", CIFAR))


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_layer_taps_shapes_graph_and_hook_removal():
    model = create_model("small-cnn", MNIST).eval()
    x = torch.rand(2, 1, 28, 28)
    with LayerTaps(model, ["net.features.conv4", "net.flatten", "net.classifier.fc1"]) as taps:
        assert _hook_count(model) == 3
        logits = model(x)
    assert _hook_count(model) == 0
    assert taps["net.features.conv4"].shape == (2, 64, 8, 8)
    assert taps["net.flatten"].shape == (2, 1024)
    assert taps["net.classifier.fc1"].shape == (2, 200)
    assert logits.requires_grad and taps["net.flatten"].requires_grad
    taps["net.flatten"].sum().backward()  # the graph is kept by default
    with LayerTaps(model, "net.flatten", detach=True) as taps:
        model(x)
    assert not taps["net.flatten"].requires_grad
    with pytest.raises(RobustlabError, match="has not run yet"):
        LayerTaps(model, ["net.flatten"])["net.flatten"]


def test_layer_taps_remove_hooks_after_an_exception():
    model = create_model("mlp", MNIST)
    with pytest.raises(InputError, match="1-channel"), LayerTaps(model, ["net.hidden.fc1", "net.hidden"]):
        assert _hook_count(model) == 2
        model(torch.rand(2, 3, 5, 5))  # wrong input size
    assert _hook_count(model) == 0


def test_unknown_names_list_valid_ones():
    with pytest.raises(UnknownNameError) as err:
        create_model("resnet-20", MNIST)
    msg = str(err.value)
    assert all(name in msg for name in list_models()) and "Did you mean 'resnet20'" in msg
    assert isinstance(err.value, KeyError)
    model = create_model("small-cnn", MNIST)
    with pytest.raises(UnknownNameError, match="net.features.conv4") as err:
        LayerTaps(model, ["net.conv4"])
    assert "net.flatten" in str(err.value)
    with pytest.raises(RobustlabError):
        create_model("mlp", "no-such-dataset")
    with pytest.raises(InputError, match="dropout"):
        create_model("mlp", MNIST, dropout=0.1)  # mlp takes only `hidden`
    with pytest.raises(InputError, match="lacks"):
        create_model("mlp", object())


def test_kwargs_are_validated():
    with pytest.raises(InputError, match="6n\\+2"):
        create_model("resnet20", CIFAR, depth=21)
    with pytest.raises(InputError, match="6n\\+4"):
        create_model("wide-resnet", CIFAR, depth=30)
    with pytest.raises(InputError, match="padding"):
        create_model("cw-cnn", CIFAR, padding="full")
    with pytest.raises(InputError, match="dropout"):
        create_model("small-cnn", MNIST, dropout=1.5)
    assert n_params(create_model("resnet20", CIFAR, depth=32)) > n_params(create_model("resnet20", CIFAR))
    assert create_model("mlp", MNIST, hidden=(32,)).net.latent_dim == 32
    assert n_params(create_model("resnet20", CIFAR, shortcut="pad")) < n_params(create_model("resnet20", CIFAR))


def test_register_model_and_duplicates():
    @register_model("tmp-linear")
    def build(in_channels, num_classes, image_size, *, bias=True):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes, bias=bias))

    try:
        assert "tmp-linear" in list_models()
        assert create_model("TMP_linear", MNIST, bias=False)(torch.rand(2, 1, 28, 28)).shape == (2, 10)
        with pytest.raises(InputError, match="already registered"):
            register_model("tmp-linear")(lambda c, k, s: nn.Identity())
    finally:
        registry_mod.MODELS.unregister("tmp-linear")


def test_fingerprint_tells_architectures_apart():
    a, b = model_fingerprint(create_model("small-cnn", MNIST)), model_fingerprint(create_model("small-cnn", MNIST))
    assert a == b and a["num_parameters"] == 312_202
    assert model_fingerprint(create_model("small-cnn", CIFAR)) != a
    assert model_fingerprint(create_model("adr-cnn", MNIST)) != a


def test_fallback_table_without_the_data_package(monkeypatch):
    real = {n: registry_mod.resolve_dataset(n) for n in ("mnist", "fashion-mnist", "cifar10")}
    monkeypatch.setitem(sys.modules, "robustlab.data", None)  # `from robustlab.data import ...` -> ImportError
    for name, info in real.items():
        fallback = registry_mod.resolve_dataset(name.upper().replace("-", "_"))
        assert (fallback.num_classes, fallback.shape, fallback.mean, fallback.std) == (
            info.num_classes,
            tuple(info.shape),
            tuple(info.mean),
            tuple(info.std),
        )
    assert create_model("small-cnn", "mnist").model_spec["dataset"] == "mnist"
    with pytest.raises(UnknownNameError, match="cifar10"):
        create_model("small-cnn", "cifar-100")


def test_plugin_models_are_listed_and_missing_required_options_are_clear():
    """carso lives in robustlab.purification; the registry lists it and builds it on first use."""
    assert "carso" in list_models()
    with pytest.raises(ConfigError, match="needs option\\(s\\) layers"):
        create_model("carso", MNIST)
