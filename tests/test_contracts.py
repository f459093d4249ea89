"""Contracts every registered attack, objective and preset keeps, parametrised over the registries: a new attack or
objective is tested the moment it is registered, without anyone writing a test for it.

Attacks run with small budgets: every setting of the shared vocabulary that sizes the work (``steps``, ``queries``,
``restarts``, ...) is set small when the attack takes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from robustlab.attacks import Attack, list_attacks, register_attack
from robustlab.attacks.config import attack_settings
from robustlab.attacks.registry import ATTACKS, get_attack_class
from robustlab.core.errors import ConfigError, InputError, RobustlabError
from robustlab.core.threat import ThreatModel
from robustlab.models import Ensemble, Normalized
from robustlab.presets import SCALES, list_presets, load_preset
from robustlab.training.objectives import get_objective_class, list_objectives

#: Settings that size an attack's work, and the small values the contract runs them with.
SMALL = {"steps": 2, "restarts": 1, "queries": 40, "binary_search_steps": 2, "binary_steps": 2,
         "n_target_classes": 2, "n_samples": 8, "n_targets": 2, "inner_steps": 2, "n_candidates": 3,
         "group_size": 2, "chunk_size": 8, "transforms": ("identity", "hflip")}
NORMS = ("linf", "l2", "l1")
EPS = {"linf": 0.1, "l2": 0.5, "l1": 2.0}
NUM_CLASSES, SHAPE = 4, (1, 8, 8)


def _member(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 64, NUM_CLASSES))


def contract_model() -> nn.Module:
    """A two-member ensemble of tiny conv nets behind ``Normalized`` (every attack, ensemble ones included, runs)."""
    return Normalized(Ensemble([_member(0), _member(1)]), [0.5], [0.25], in_channels=1)


def make(name: str, model: nn.Module, norm: str, **override: object) -> Attack:
    """Registered attack ``name`` on ``model`` with small budgets (``override`` for a batch of one's group size)."""
    takes = attack_settings(get_attack_class(name))
    settings = {k: v for k, v in {**SMALL, **override}.items() if k in takes}
    return get_attack_class(name)(model, ThreatModel(norm, EPS[norm]), **settings)


def batch(n: int = 4, seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SHAPE, generator=gen), torch.randint(0, NUM_CLASSES, (n,), generator=gen)


def supported_norms(name: str) -> Iterator[str]:
    """The norms an attack runs in; a norm it does not support must be refused with a robustlab error."""
    for norm in NORMS:
        x, y = batch()
        try:
            make(name, contract_model(), norm)(x, y)
        except RobustlabError:
            continue
        yield norm


def check_attack_contract(name: str) -> None:
    """Everything an attack promises, on the contract model; AssertionError names the broken promise."""
    norms = list(supported_norms(name))
    assert "linf" in norms or norms, f"{name} runs in no norm"
    for norm in norms:
        model, (x, y) = contract_model(), batch()
        x0 = x.clone()
        threat = ThreatModel(norm, EPS[norm])
        attack = make(name, model, norm)
        torch.manual_seed(0)
        x_adv = attack(x, y)
        assert x_adv.shape == x.shape and x_adv.dtype == x.dtype, f"{name} {norm}: shape or dtype changed"
        assert torch.equal(x, x0), f"{name} {norm}: the attack modified its input"
        assert bool(threat.contains(x_adv, x).all()), f"{name} {norm}: output outside the ball or the [0, 1] box"
        twin = make(name, contract_model(), norm)  # built first: building the model reseeds the global RNG
        torch.manual_seed(0)
        again = twin(x, y)
        assert torch.equal(x_adv, again), f"{name} {norm}: the same seed gave another output"
        one = make(name, model, norm, group_size=1)(x[:1], y[:1])
        assert one.shape == x[:1].shape, f"{name} {norm}: a batch of one failed"
    norm = norms[0]
    model, (x, y) = contract_model(), batch()
    model.train()
    frozen = next(iter(model.parameters()))
    frozen.requires_grad_(False)
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    make(name, model, norm)(x, y)
    assert [m.training for m in model.modules()] == modes, f"{name}: module modes not restored"
    assert [p.requires_grad for p in model.parameters()] == flags, f"{name}: requires_grad not restored"
    attack = make(name, model, norm)
    wrong = y if get_attack_class(name).supports_targeted else (y + 1) % NUM_CLASSES
    try:
        attack(x, y, target=wrong)
    except InputError:
        pass
    else:
        raise AssertionError(f"{name}: accepted a target equal to the label (or a target without a targeted mode)")
    try:
        attack(x[:0], y[:0])
    except InputError:
        pass
    else:
        raise AssertionError(f"{name}: an empty batch did not get a clear error")


@pytest.mark.parametrize("name", list_attacks())
def test_attack_contract(name: str) -> None:
    check_attack_contract(name)


class _ToyAttack(Attack):
    """A toy attack for the contract's own test: FGSM-like, or (``escape=True``) stepping out of the ball."""

    def __init__(self, model: nn.Module, threat: ThreatModel, *, steps: int = 1, escape: bool = False) -> None:
        super().__init__(model, threat)
        self.escape = escape

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        grad, _, _ = self.gradient(x, y)
        x_adv = self.threat.project(x + self.threat.eps * self.threat.steepest_ascent(grad), x)
        return x_adv + (2 * self.threat.eps if self.escape else 0.0)


class _EscapingToyAttack(_ToyAttack):
    def __init__(self, model: nn.Module, threat: ThreatModel, *, steps: int = 1) -> None:
        super().__init__(model, threat, steps=steps, escape=True)


class _ForgetfulToyAttack(_ToyAttack):
    """Leaves the model in eval mode after the attack (breaks the restore promise)."""

    def __call__(self, x: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
        out = super().__call__(x, y, target)
        self.model.eval()
        return out


@pytest.mark.parametrize("broken", [_EscapingToyAttack, _ForgetfulToyAttack])
def test_a_newly_registered_attack_is_held_to_the_contract(broken: type[Attack]) -> None:
    register_attack("toy-contract", _ToyAttack)
    register_attack("toy-broken", broken)
    try:
        check_attack_contract("toy-contract")  # a sound attack passes without a test of its own
        with pytest.raises((AssertionError, RuntimeError)):
            check_attack_contract("toy-broken")  # a broken promise is caught
    finally:
        ATTACKS.unregister("toy-contract")
        ATTACKS.unregister("toy-broken")
    assert "toy-contract" not in list_attacks()


# ---------------------------------------------------------------------------------------------- objectives
@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory: pytest.TempPathFactory, mnist_available: None) -> Path:
    """A classifier run trained for one step (the frozen classifier a CARSO model needs)."""
    from robustlab.training.trainer import Trainer
    from tests._training_helpers import tiny_config

    run = tmp_path_factory.mktemp("contract") / "classifier"
    Trainer(tiny_config(epochs=1, max_steps_per_epoch=1, data={"train_subset": 64},
                        model={"name": "mlp", "kwargs": {"hidden": [16]}},
                        validation={"n": 16, "attack": None}), run, show_progress=False).fit()
    return run


def _model_for(kind: str, classifier: Path) -> dict:
    if kind == "ensemble":
        return {"name": "ensemble", "kwargs": {"member": "mlp", "k": 2}}
    if kind == "carso":
        return {"name": "carso", "kwargs": {"classifier": str(classifier), "layers": "net.hidden.fc1",
                                            "latent_dim": 4, "cond_dim": 8, "joint_dim": 8, "ensemble_size": 2}}
    return {"name": "mlp", "kwargs": {"hidden": [16]}}


def _objective_for(name: str) -> dict:
    """The objective with the parameters of the first preset that trains it (an objective may have required
    parameters, such as WRM's gamma) and its training attack cut to 2 steps at eps 0.1."""
    preset = next((p for p in (load_preset(n) for n in list_presets()) if p.train.objective.name == name), None)
    params = preset.train.objective.params if preset is not None else {}
    attack = preset.train.objective.attack if preset is not None else None
    spec = {"name": attack.name if attack else "pgd", "norm": "linf", "eps": 0.1}
    if "steps" in attack_settings(get_attack_class(spec["name"])):
        spec["steps"] = 2
    return {"name": name, "params": params, **({"attack": spec} if get_objective_class(name).needs_attack else {})}


@pytest.mark.usefixtures("mnist_available")
@pytest.mark.parametrize("name", list_objectives())
def test_objective_contract(name: str, classifier_run: Path, tmp_path: Path) -> None:
    """One step through the Trainer, a checkpoint written and a resume that continues from it."""
    from robustlab.training.trainer import Trainer
    from tests._training_helpers import tiny_config

    kind = get_objective_class(name).model_kind
    cfg = tiny_config(epochs=1, max_steps_per_epoch=1, batch_size=16, data={"train_subset": 32},
                      model=_model_for(kind, classifier_run), objective=_objective_for(name),
                      validation={"n": 16, "attack": None})
    summary = Trainer(cfg, tmp_path / name, show_progress=False).fit()
    assert (tmp_path / name / "checkpoints" / "last.safetensors").exists()
    assert summary.last_metrics and all(v == v for v in summary.last_metrics.values() if isinstance(v, float))
    again = Trainer(cfg.model_copy(update={"epochs": 2}), tmp_path / name, show_progress=False).fit()
    assert again.epochs == 2


# ------------------------------------------------------------------------------------------------- presets
@pytest.mark.parametrize("scale", SCALES)
def test_every_preset_resolves(scale: str) -> None:
    """Every preset resolves at ``quick`` and at every other scale it declares."""
    for name in list_presets():
        try:
            p = load_preset(name, scale)
        except ConfigError as exc:
            assert scale != "quick" and "has no" in str(exc), f"{name} ({scale}): {exc}"
            continue
        assert p.train.name and (p.eval.attacks or p.eval.autoattack), f"{name} ({scale}) evaluates nothing"
