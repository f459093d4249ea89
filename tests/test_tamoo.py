"""TA-MOO (thesis ch. 4 Part B): regulariser and projection vs hand values, the MGDA min-norm solver vs the
2-task closed form and the K-task optimality conditions, ENS/UNI/EoT attacks, the transformations, tamoo-at."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from robustlab.attacks import PGD
from robustlab.attacks.moo import (
    FAMILIES,
    TABLE9,
    EnsembleMOO,
    MOOSettings,
    TransformMOO,
    TransformSet,
    UniversalMOO,
    check_task_weights,
    geometry_regularizer,
    get_family,
    min_norm_2,
    min_norm_weights,
    project_simplex,
    project_to_unachieved,
    regularised_gram,
)
from robustlab.attacks.moo.solver import _WeightState
from robustlab.core.errors import ConfigError, InputError, UnknownNameError
from robustlab.core.threat import ThreatModel
from robustlab.models.ensemble import Ensemble
from robustlab.training.trainer import Trainer
from tests._training_helpers import tiny_config

T, F_ = True, False


def rows(*values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def mask(*values: list[bool]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)


# ------------------------------------------------------------------------------------------ regulariser
def test_regulariser_closed_form_matches_hand_values_and_edge_cases() -> None:
    w = rows([0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.5, 0.3, 0.2], [0.5, 0.3, 0.2])
    a = mask([T, F_, F_], [T, T, F_], [F_, F_, F_], [T, T, T])
    # 0.5^2 + (1 - 0.5)^2 / 2 ;  0.2^2 + 0.3^2 + (1 - 0.5)^2 / 1 ;  s = 0: plain MOO ;  s = m: sum of squares
    expected = [0.375, 0.38, 0.0, 0.38]
    assert geometry_regularizer(w, a).tolist() == pytest.approx(expected, abs=1e-12)
    assert geometry_regularizer(w, a, all_achieved="zero").tolist() == pytest.approx([0.375, 0.38, 0.0, 0.0])


def test_projection_lemma_matches_hand_values() -> None:
    w = rows([0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.1, 0.9, -0.5])
    a = mask([T, F_, F_], [T, T, F_], [T, F_, F_])
    w4, a4 = rows([0.4, 0.4, 0.4, -1.0]), mask([F_, F_, F_, F_])
    # rho = m, gamma = 0.25 -> (0, .55, .45);  only one free task -> (0, 0, 1);  rho = s+1, gamma = .1 -> (0, 1, 0)
    out = project_to_unachieved(w, a)
    assert torch.allclose(out, rows([0, 0.55, 0.45], [0, 0, 1], [0, 1, 0]), atol=1e-12)
    # no achieved task: the plain simplex projection, gamma = (1 - 1.2) / 3
    assert project_to_unachieved(w4, a4).tolist()[0] == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0.0], abs=1e-12)
    with pytest.raises(InputError, match="every task is achieved"):
        project_to_unachieved(w[:1], mask([T, T, T]))


def test_closed_form_equals_distance_to_projection_and_gram_form() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.softmax(3 * torch.randn(64, 5, generator=gen, dtype=torch.float64), dim=1)
    a = torch.rand(64, 5, generator=gen) < 0.5
    a[:, 0] = False  # at least one unachieved task per row
    dist = ((w - project_to_unachieved(w, a)) ** 2).sum(dim=1)
    assert torch.allclose(geometry_regularizer(w, a), dist, atol=1e-12)
    q = torch.randn(64, 5, 5, generator=gen, dtype=torch.float64)
    q = q @ q.transpose(1, 2)
    via_gram = torch.einsum("bi,bij,bj->b", w, regularised_gram(q, a, 7.0, "sum-squares"), w)
    direct = torch.einsum("bi,bij,bj->b", w, q, w) + 7.0 * geometry_regularizer(w, a)
    assert torch.allclose(via_gram, direct, atol=1e-10)


def test_ta_moo_weights_move_to_the_unachieved_task_and_moo_weights_do_not() -> None:
    q = torch.eye(2)[None]  # equal, orthogonal gradients: MGDA's optimum is uniform already
    achieved = mask([T, F_])
    weights = {}
    for method in ("moo", "tamoo"):
        state = _WeightState(1, 2, MOOSettings(method=method, inner_steps=10, w_lr=0.005), torch.device("cpu"))
        state.update(q, achieved, torch.zeros(1, 2))
        weights[method] = state.w[0].tolist()
    assert weights["moo"] == pytest.approx([0.5, 0.5], abs=1e-6)
    assert weights["tamoo"][1] > 0.55  # lambda = 100 pulls weight off the achieved task
    exact = _WeightState(1, 2, MOOSettings(method="tamoo", weight_solver="exact"), torch.device("cpu"))
    exact.update(q, achieved, torch.zeros(1, 2))
    # argmin w1^2 + w2^2 + 100 (w1^2 + w1^2) on the simplex: w1 = 1 / 202
    assert exact.w[0].tolist() == pytest.approx([1 / 202, 201 / 202], abs=1e-6)


# ------------------------------------------------------------------------------------------ MGDA
def test_min_norm_two_tasks_closed_form() -> None:
    g = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[1.0, 0.0], [2.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    q = g @ g.transpose(1, 2)
    w = min_norm_2(q)
    # (4 - 0) / (1 + 4) = 0.8 ; clipped at 1 (g1 is inside the hull's closest point) ; identical gradients: 0.5
    assert torch.allclose(w, torch.tensor([[0.8, 0.2], [1.0, 0.0], [0.5, 0.5]]), atol=1e-6)
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(32, 2, 10, generator=gen, dtype=torch.float64)
    q = g @ g.transpose(1, 2)
    closed = min_norm_2(q)
    for method in ("frank-wolfe", "projected"):
        assert torch.allclose(min_norm_weights(q, method), closed, atol=1e-6), method


def test_min_norm_k_tasks_satisfies_optimality_conditions() -> None:
    gen = torch.Generator().manual_seed(2)
    g = torch.randn(16, 5, 8, generator=gen, dtype=torch.float64) + 0.5
    q = g @ g.transpose(1, 2)
    w = min_norm_weights(q, "exact", max_iter=20000, tol=1e-14)  # m = 5: projected gradient
    assert torch.allclose(w.sum(dim=1), torch.ones(16, dtype=torch.float64)) and bool((w >= 0).all())
    qw = torch.einsum("bij,bj->bi", q, w)
    value = (w * qw).sum(dim=1, keepdim=True)
    scale = q.diagonal(dim1=1, dim2=2).amax(dim=1, keepdim=True)
    # KKT on the simplex: (Qw)_i >= w^T Q w for every task, with equality on the support of w
    assert bool((qw >= value - 1e-6 * scale).all())
    support = w > 1e-4
    assert bool(((qw - value).abs()[support] <= 1e-6 * scale.expand_as(qw)[support]).all())
    assert bool((~support).any())  # the instance has inactive tasks, so the inequality part is exercised
    fw = min_norm_weights(q, "frank-wolfe", max_iter=2000)
    assert torch.allclose(fw, w, atol=1e-6)


def test_user_weights_must_lie_on_the_simplex() -> None:
    assert check_task_weights([0.25, 0.75], 2).tolist() == [0.25, 0.75]
    for bad, match in (([0.5, 0.6], "sum to 1"), ([1.2, -0.2], ">= 0"), ([1.0], "expected 2")):
        with pytest.raises(InputError, match=match):
            check_task_weights(bad, 2)
    ens = toy_ensemble()
    x = toy_batch()
    attack = EnsembleMOO(ens, ThreatModel("linf", 0.1), method="uniform", steps=2, init_weights=[0.5, 0.3, 0.3])
    with pytest.raises(InputError, match="sum to 1"):
        attack(x, torch.zeros(len(x), dtype=torch.long))


# ------------------------------------------------------------------------------------------ ENS
class Linear2(nn.Module):
    """2-class member on 1x2x2 images: logits (0, w . (x - 0.5) - c); class 0 is true, fooled iff w.(x-.5) > c."""

    num_classes = 2

    def __init__(self, w: list[float], c: float) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[0.0] * 4, w]))
            self.lin.bias.copy_(torch.tensor([0.0, -c - 0.5 * sum(w)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


def toy_members() -> list[nn.Module]:
    # member 1 needs pixels 1-2 pushed up, member 2 pixels 3-4; member 3 (100x smaller gradient) needs all four
    return [Linear2([1, 1, 0, 0], 0.15), Linear2([0, 0, 1, 1], 0.15), Linear2([0.01] * 4, 0.0035)]


def toy_ensemble() -> Ensemble:
    return Ensemble(toy_members())


def toy_batch(n: int = 16) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    return 0.5 + 0.01 * (2 * torch.rand(n, 1, 2, 2, generator=gen) - 1)


def all_fooled(members: list[nn.Module], x_adv: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.stack([m(x_adv).argmax(1) != 0 for m in members]).all(0).float().mean())


@pytest.mark.parametrize("method", ["tamoo", "moo", "uniform", "minmax"])
def test_ens_attack_never_below_the_best_single_model_attack(method: str) -> None:
    members, threat = toy_members(), ThreatModel("linf", 0.1)
    x, y = toy_batch(), torch.zeros(16, dtype=torch.long)
    ens = Ensemble(members)
    assert all_fooled(members, x) == 0.0
    # single-model PGD on member k: members 1 and 2 leave the other half untouched, member 3 pushes all pixels
    singles = [all_fooled(members, PGD(m, threat, steps=10, step_size=0.025, random_start=False)(x, y))
               for m in members]
    assert singles == [0.0, 0.0, 1.0]
    attack = EnsembleMOO(ens, threat, method=method, steps=10, step_size=0.025)
    x_adv = attack(x, y)
    assert threat.contains(x_adv, x).all()
    rates = attack.success(x_adv, y)
    assert rates.a_all / 100 == all_fooled(members, x_adv) >= min(singles)
    assert rates.a_all == 100.0 and rates.per_task == [100.0] * 3  # the joint optimum fools every member


def test_ens_on_a_trained_like_ensemble_stays_in_the_ball_for_each_loss() -> None:
    torch.manual_seed(0)
    ens = Ensemble([nn.Sequential(nn.Flatten(), nn.Linear(16, 3)) for _ in range(3)])
    x, y = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    for norm, eps in (("linf", 0.05), ("l2", 0.3)):
        threat = ThreatModel(norm, eps)
        for loss in ("ce", "cw", "kl"):
            x_adv = EnsembleMOO(ens, threat, loss=loss, steps=3, inner_steps=2)(x, y)
            assert threat.contains(x_adv, x).all() and not torch.equal(x_adv, x)


def test_ens_bad_models() -> None:
    threat, x, y = ThreatModel("linf", 0.1), toy_batch(4), torch.zeros(4, dtype=torch.long)
    with pytest.raises(InputError, match="ensemble"):
        EnsembleMOO(Linear2([1, 1, 1, 1], 0.1), threat, steps=1)(x, y)

    class One(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = Linear2([1, 1, 1, 1], 0.1)

        def member_logits(self, x: torch.Tensor) -> torch.Tensor:
            return self.m(x)[None]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m(x)

    with pytest.raises(InputError, match="ensemble of one"):
        EnsembleMOO(One(), threat, steps=1)(x, y)
    with pytest.raises(ConfigError, match="at least 2"):
        Ensemble([Linear2([1, 1, 1, 1], 0.1)])
    with pytest.raises(InputError, match="valid: tamoo, moo, uniform, minmax"):
        EnsembleMOO(toy_ensemble(), threat, method="pcgrad")


# ------------------------------------------------------------------------------------------ UNI
def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 0.5)])
def test_universal_perturbation_is_shared_and_stays_in_the_ball(norm: str, eps: float) -> None:
    model, threat = cnn(), ThreatModel(norm, eps)
    x = torch.rand(12, 1, 6, 6)
    x[0, 0, 0, :3] = 0.0  # saturated pixels: the shared delta must respect every image's box
    x[1, 0, 0, :3] = 1.0
    y = torch.arange(12) % 5
    attack = UniversalMOO(model, threat, group_size=4, steps=5, step_size=eps / 4)
    x_adv = attack(x, y)
    delta = (x_adv - x).reshape(3, 4, 1, 6, 6)
    assert torch.allclose(delta, delta[:, :1].expand_as(delta), atol=1e-6)  # one delta per group
    assert threat.contains(x_adv, x).all() and float(delta.abs().sum()) > 0
    assert attack.last is not None and attack.last.weights.shape == (3, 4)
    rates = attack.success(x_adv, x, y)
    assert len(rates.per_task) == 4 and 0 <= rates.a_all <= rates.a_avg <= 100


def test_universal_group_errors() -> None:
    model, threat, x, y = cnn(), ThreatModel("linf", 0.1), torch.rand(6, 1, 6, 6), torch.zeros(6, dtype=torch.long)
    with pytest.raises(InputError, match="larger than the batch"):
        UniversalMOO(model, threat, group_size=8, steps=1)(x, y)
    with pytest.raises(InputError, match="multiple of 4"):
        UniversalMOO(model, threat, group_size=4, steps=1)(x, y)


# ------------------------------------------------------------------------------------------ EoT
@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("stochastic", [False, True])
def test_each_transformation_is_differentiable_and_shape_preserving(name: str, stochastic: bool) -> None:
    x = (0.05 + 0.9 * torch.rand(2, 3, 8, 8)).requires_grad_(True)
    ts = TransformSet([name], stochastic=stochastic, generator=torch.Generator().manual_seed(5))
    (out,) = ts(x)
    assert out.shape == x.shape
    (grad,) = torch.autograd.grad((out * torch.linspace(0, 1, 64).view(8, 8)).sum(), x)
    assert torch.isfinite(grad).all() and float(grad.abs().sum()) > 0


def test_transformations_match_hand_definitions() -> None:
    x = torch.rand(2, 1, 5, 5)
    assert torch.equal(get_family("hflip").apply(x, 1.0), x.flip(-1))
    assert torch.equal(get_family("vflip").apply(x, 1.0), x.flip(-2))
    assert torch.equal(get_family("hflip").apply(x, 0.0), x)  # stochastic coin says "no flip"
    assert torch.allclose(get_family("brightness").apply(x, 1.3), (1.3 * x).clamp(0, 1))
    assert torch.allclose(get_family("gamma").apply(x, 1.3), x**1.3)
    assert torch.allclose(get_family("rotation").apply(x, 0.0), x, atol=1e-6)
    assert torch.allclose(get_family("center-crop").apply(x, 1.0), x, atol=1e-6)
    r90 = get_family("rotation").apply(x, 90.0)
    assert torch.allclose(r90[:, :, 1:-1, 1:-1], torch.rot90(x, 1, (-2, -1))[:, :, 1:-1, 1:-1], atol=1e-5)
    assert tuple(TABLE9) == ("identity", "hflip", "vflip", "center-crop", "brightness", "rotation", "gamma")
    with pytest.raises(UnknownNameError, match="Valid transformations: .*'hflip', 'identity'"):
        get_family("shear")
    with pytest.raises(UnknownNameError, match="shear"):
        TransformMOO(cnn(), ThreatModel("linf", 0.1), transforms=["hflip", "shear"])


def test_eot_attack_in_ball_with_grad_memory() -> None:
    model, threat = cnn(), ThreatModel("linf", 0.1)
    x, y = torch.rand(4, 1, 6, 6), torch.arange(4)
    x[:, :, 0, 0] = 0.0  # gamma < 1 has an infinite gradient here (App. D.4)
    attack = TransformMOO(model, threat, stochastic=True, steps=3, grad_memory=True,
                          generator=torch.Generator().manual_seed(0))
    x_adv = attack(x, y)
    assert threat.contains(x_adv, x).all()
    assert attack.last is not None and torch.isfinite(attack.last.weights).all()
    assert len(attack.success(x_adv, x, y).per_task) == 7


# ------------------------------------------------------------------------------------------ tamoo-at
def test_tamoo_at_trains_one_step(tmp_path: Path, mnist_available: None) -> None:
    members = {"member": "mlp", "k": 2, "member_kwargs": {"hidden": [16]}}
    cfg = tiny_config(epochs=1, max_steps_per_epoch=1, validation={"n": 32},
                      model={"name": "ensemble", "kwargs": members},
                      objective={"name": "tamoo-at", "params": {"natural_weight": 1.0, "inner_steps": 2},
                                 "attack": {"name": "tamoo-ens", "norm": "linf", "eps": 0.1, "steps": 2}})
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    row = trainer.fit().last_metrics
    for key in ("train_loss", "train_adv_acc", "train_members_fooled_all", "train_acc"):
        assert key in row and math.isfinite(row[key]), key
    after = trainer.model.state_dict()
    assert all(not torch.equal(after[k], before[k]) for k in before if k.endswith("weight"))


def test_tamoo_at_config_errors() -> None:
    from robustlab.training.objectives import create_objective
    from robustlab.training.objectives.base import ObjectiveConfig

    attack = {"name": "pgd", "norm": "linf", "eps": 0.1}
    with pytest.raises(ConfigError, match="tamoo-ens"):
        create_objective(ObjectiveConfig(name="tamoo-at", attack=attack))
    with pytest.raises(ConfigError, match="method"):
        create_objective(ObjectiveConfig(name="tamoo-at", attack={**attack, "name": "tamoo-ens"},
                                         params={"method": "pcgrad"}))


# ------------------------------------------------------------------------------------------ what sets TA-MOO apart
class Capped(nn.Module):
    """2-class member on 1x2x2 images: logits (0, min(w . (x - 0.5) - c, cap)); class 0 is true, fooled iff the
    second logit is > 0. With a cap, the member stops pulling once it is fooled by that margin."""

    num_classes = 2

    def __init__(self, w: list[float], c: float, cap: float = math.inf) -> None:
        super().__init__()
        self.register_buffer("w", torch.tensor(w))
        self.c, self.cap = c, cap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = ((x.flatten(1) - 0.5) * self.w).sum(dim=1) - self.c
        z = z.clamp(max=self.cap)
        return torch.stack([torch.zeros_like(z), z], dim=1)


def lopsided_members() -> list[nn.Module]:
    """Member A is easy (fooled by pushing pixel 1 or pixel 3 up) and pulls hard on pixel 1; member B is hard: it
    needs pixel 2 up and pixel 1 well below the clean value, against A's pull. Fooling both needs pixel 1 down and
    pixel 3 up: reachable with uniform weights only once A's pull saturates (cap), sooner when A's weight drops as
    soon as A is fooled (TA-MOO)."""
    return [Capped([0.3, 0.0, 0.6, 0.0], 0.015, cap=0.02), Capped([-0.1, 0.1, 0.0, 0.0], 0.0115)]


def lopsided_batch(n: int = 16) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    return 0.5 + 0.001 * (2 * torch.rand(n, 1, 2, 2, generator=gen) - 1)


def a_all(method: str, steps: int, members: list[nn.Module] | None = None, **options: object) -> float:
    members = lopsided_members() if members is None else members
    x = lopsided_batch()
    attack = EnsembleMOO(Ensemble(members), ThreatModel("linf", 0.1), method=method, steps=steps,
                         step_size=0.025, random_start=False, **options)
    return attack.success(attack(x, torch.zeros(len(x), dtype=torch.long)), torch.zeros(len(x), dtype=torch.long)).a_all


@pytest.mark.parametrize("steps", [4, 5, 6])
def test_ta_moo_fools_every_member_within_a_budget_where_uniform_and_moo_do_not(steps: int) -> None:
    assert a_all("tamoo", steps) == 100.0
    assert a_all("uniform", steps) == 0.0 and a_all("moo", steps) == 0.0  # lambda = 0: the regulariser does it
    assert a_all("tamoo", steps, lam=0.0) == 0.0


def test_uniform_reaches_the_joint_optimum_with_a_larger_budget() -> None:
    """The toy is fair: the joint optimum is reachable with uniform weights, just later (A's pull must saturate)."""
    assert a_all("uniform", 12) == 100.0 and a_all("tamoo", 12) == 100.0


def test_task_i_is_member_i() -> None:
    """Weights and per-task rates follow the members: reversing the ensemble reverses both."""
    x, y = lopsided_batch(), torch.zeros(16, dtype=torch.long)
    runs = []
    for members in (lopsided_members(), lopsided_members()[::-1]):
        attack = EnsembleMOO(Ensemble(members), ThreatModel("linf", 0.1), steps=2, step_size=0.025,
                             random_start=False)
        x_adv = attack(x, y)
        runs.append((x_adv, attack.last.weights, attack.success(x_adv, y).per_task))
    assert torch.equal(runs[0][0], runs[1][0])
    assert torch.equal(runs[0][1], runs[1][1].flip(1)) and runs[0][2] == runs[1][2][::-1]
    assert float(runs[0][1][:, 0].max()) < 0.2  # after A is fooled (step 1) its weight dropped


def linear_tasks(a: list[list[float]], achieved: list[bool]):
    """task_fn with F_i(delta) = a_i . delta (constant gradients) and a fixed achieved mask, for one row."""
    at = torch.tensor(a)
    mask = torch.tensor([achieved])

    def task_fn(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return delta.flatten(1) @ at.T, mask

    return task_fn


def moo_run(task_fn, steps: int, **options: object):
    from robustlab.attacks.moo import run_moo

    threat = ThreatModel("linf", 1.0)
    return run_moo(task_fn, torch.Size((1, 2)), lambda d: threat.project_delta(d), threat,
                   MOOSettings(steps=steps, step_size=0.1, **options))


def test_update_order_paper_solves_the_weights_before_the_step_and_code_after() -> None:
    """Algorithm 1: w_{t+1} from Q(delta_t), then delta_{t+1} = delta_t + eta sign(sum w_{t+1,i} grad f_i); the
    released code steps delta with w_t first. Gradients (1, 1) and (-0.9, 0.1): the uniform sum is (0.05, 0.55), the
    min-norm combination (w_1 = 1.62 / 4.42) is (-0.20, 0.10): pixel 1 moves the other way."""
    tasks = linear_tasks([[1.0, 1.0], [-0.9, 0.1]], [False, False])
    paper = moo_run(tasks, 1, weight_solver="exact", init="zero")
    code = moo_run(tasks, 1, weight_solver="exact", init="zero", order="code")
    w1 = 1.62 / 4.42
    for run in (paper, code):  # both end with the min-norm weights of Q(delta_0)
        assert run.weights[0].tolist() == pytest.approx([w1, 1 - w1], abs=1e-6)
    assert paper.delta[0].tolist() == pytest.approx([-0.1, 0.1])
    assert code.delta[0].tolist() == pytest.approx([0.1, 0.1])


def test_weights_start_uniform_once_and_are_warm_started() -> None:
    """alpha_0 = 1/m (uniform weights), set once: L outer steps of K inner steps on a constant Q are L * K inner
    steps from the uniform start (a restart would give K steps)."""
    tasks = linear_tasks([[1.0, 0.2], [0.1, 2.0]], [True, False])
    q = torch.tensor([[[1.04, 0.5], [0.5, 4.01]]])
    run = moo_run(tasks, 3, init="zero", inner_steps=4, w_lr=0.02)
    state = _WeightState(1, 2, MOOSettings(inner_steps=12, w_lr=0.02), torch.device("cpu"))
    assert state.w[0].tolist() == [0.5, 0.5]
    state.update(q, torch.tensor([[True, False]]), torch.zeros(1, 2))
    assert torch.allclose(run.weights, state.w, atol=1e-6)
    once = _WeightState(1, 2, MOOSettings(inner_steps=4, w_lr=0.02), torch.device("cpu"))
    once.update(q, torch.tensor([[True, False]]), torch.zeros(1, 2))
    assert not torch.allclose(run.weights, once.w, atol=1e-3)


class Flat(nn.Module):
    """A member whose logits ignore the input (zero gradient): an attack on it only shows its starting point."""

    num_classes = 3

    def __init__(self, bias: list[float]) -> None:
        super().__init__()
        self.register_buffer("bias", torch.tensor(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(x), -1) + 0 * x.flatten(1)[:, :1]


@pytest.mark.parametrize("method", ["tamoo", "moo", "uniform", "minmax"])
def test_every_method_starts_from_a_symmetric_uniform_delta_and_uniform_weights(method: str) -> None:
    """delta_0 ~ U(-eps, eps) (the text; the released TA-MOO code uses U(0, eps), option init="positive") and
    w_0 = 1/m for every method; a zero-gradient ensemble leaves both where they start."""
    eps = 0.1
    ens = Ensemble([Flat([1.0, 0.0, 0.0]), Flat([2.0, 0.0, 0.5]), Flat([0.5, 0.0, 0.0])])  # none fooled
    x = torch.full((16, 1, 8, 8), 0.5)
    attack = EnsembleMOO(ens, ThreatModel("linf", eps), method=method, steps=3, step_size=0.025)
    torch.manual_seed(11)
    delta = attack(x, torch.zeros(16, dtype=torch.long)) - x
    torch.manual_seed(11)
    assert torch.allclose(delta, (2 * torch.rand(x.shape) - 1) * eps, atol=1e-7)
    assert float(delta.min()) < -0.9 * eps and float(delta.max()) > 0.9 * eps
    expected = torch.full((16, 3), 1 / 3)
    if method == "minmax":  # minmax moves weight off the member with the highest loss (the worst case), by lr * f
        losses = torch.nn.functional.cross_entropy(ens.member_logits(x[:1])[:, 0], torch.zeros(3, dtype=torch.long),
                                                   reduction="none")
        w = torch.full((1, 3), 1 / 3)
        for _ in range(3):
            w = project_simplex(w - 0.025 * (losses[None] + 3.0 * (w - 1 / 3)))
        expected = w.expand(16, 3)
    assert torch.allclose(attack.last.weights, expected, atol=1e-6)


def test_minmax_weight_step_is_wang_et_al_s_apgda_update() -> None:
    """MinMax (Wang et al. 2021; the authors' minmax_ens and its port in the TA-MOO code): delta steps with w_t,
    then w_{t+1} = proj_simplex(w_t - lr (f(delta_{t+1}) + gamma (w_t - 1/m))) with the losses at the NEW delta,
    gamma = 3, lr = 1/beta = 0.025 (beta = 40, minmax_ens's default; the TA-MOO evaluation's moo_lr)."""
    members, x = toy_members(), toy_batch(4)
    y = torch.zeros(4, dtype=torch.long)
    threat, eta = ThreatModel("linf", 0.1), 0.025
    assert (MOOSettings().minmax_lr, MOOSettings().gamma) == (0.025, 3.0)
    attack = EnsembleMOO(Ensemble(members), threat, method="minmax", steps=3, step_size=eta, random_start=False)
    x_adv = attack(x, y)

    def losses(xa: torch.Tensor, grad: bool = False) -> torch.Tensor:
        return torch.stack([torch.nn.functional.cross_entropy(m(xa), y, reduction="none") for m in members], 1)

    w, xa = torch.full((4, 3), 1 / 3), x.clone()
    for _ in range(3):
        xr = xa.clone().requires_grad_(True)
        (g,) = torch.autograd.grad((losses(xr) * w).sum(), xr)
        xa = threat.project(xa + eta * g.sign(), x)
        with torch.no_grad():
            w = project_simplex(w - 0.025 * (losses(xa) + 3.0 * (w - 1 / 3)))
    assert torch.allclose(x_adv, xa, atol=1e-7)
    assert torch.allclose(attack.last.weights, w, atol=1e-6)
    assert not torch.allclose(w, torch.full((4, 3), 1 / 3), atol=1e-4)  # the weights moved


# ------------------------------------------------------------------------------------------ entropy regulariser
def entropy(w: torch.Tensor) -> float:
    return float(-(w * w.log()).sum())


def test_entropy_regulariser_balances_the_unachieved_weights() -> None:
    """App. E.1: the objective gets -coef * H(w over unachieved tasks) (the code's ``GNorm -= gamma * entropy``): the
    weights move towards uniform. The other sign would concentrate them."""
    q = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 9.0]]])
    none = torch.tensor([[False, False, False]])
    runs = {}
    for coef in (0.0, 2.0):
        state = _WeightState(1, 3, MOOSettings(method="moo", inner_steps=200, w_lr=0.05, entropy_coef=coef),
                             torch.device("cpu"))
        state.update(q, none, torch.zeros(1, 3))
        runs[coef] = state.w[0]
    assert entropy(runs[2.0]) > entropy(runs[0.0]) + 0.05
    # the same descent written out with the regulariser's sign
    alpha = torch.full((1, 3), 1 / 3)
    for _ in range(200):
        a = alpha.clone().requires_grad_(True)
        w = torch.softmax(a, 1)
        obj = torch.einsum("bi,bij,bj->b", w, q, w) + 2.0 * (w * w.log()).sum()
        (g,) = torch.autograd.grad(obj.sum(), a)
        alpha = alpha - 0.05 * g
    assert torch.allclose(runs[2.0], torch.softmax(alpha, 1)[0], atol=1e-6)


def test_eot_uses_the_entropy_regulariser_by_default() -> None:
    """App. E.1 says TA-MOO's EoT runs used the entropy regulariser; the coefficient is unstated, the code's is 20."""
    model, threat = cnn(), ThreatModel("linf", 0.1)
    assert TransformMOO(model, threat).settings.entropy_coef == 20.0
    assert TransformMOO(model, threat, method="moo").settings.entropy_coef == 0.0  # a TA-MOO regulariser
    assert EnsembleMOO(toy_ensemble(), threat).settings.entropy_coef == 0.0
    assert UniversalMOO(model, threat).settings.entropy_coef == 0.0
    x, y = torch.rand(4, 1, 6, 6), torch.arange(4)
    weights = []
    for options in ({}, {"entropy_coef": 0.0}):
        attack = TransformMOO(model, threat, steps=3, generator=torch.Generator().manual_seed(0), **options)
        torch.manual_seed(0)
        attack(x, y)
        weights.append(attack.last.weights)
    assert not torch.allclose(weights[0], weights[1], atol=1e-4)


def test_solvers_that_ignore_the_extra_regularisers_refuse_them() -> None:
    for extra in ({"entropy_coef": 1.0}, {"uniform_penalty": 1.0}):
        with pytest.raises(InputError, match="softmax-gd"):
            MOOSettings(weight_solver="exact", **extra)
