"""APGD, APGD-T and AutoAttack: ball/box property, strength against PGD, the exact linear case, worst-case
ensembles, resumable state files and (when installed) agreement with the reference implementation."""

from __future__ import annotations

import math
from pathlib import Path

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from torch import nn

from robustlab.attacks import PGD, list_attacks
from robustlab.attacks.apgd import APGD, APGDDLR, APGDTargeted, checkpoint_lengths, targeted_dlr
from robustlab.attacks.autoattack import AutoAttack, _RunState
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel

ATTACKS = {"apgd-ce": APGD, "apgd-dlr": APGDDLR, "apgd-t": APGDTargeted}
LINF_EPS = 0.1


def _tiny_linear(seed: int = 0, classes: int = 5, shape: tuple[int, ...] = (1, 3, 3)) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), classes))


def _learnable_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy copies of 10 fixed random 1x8x8 prototype images: learnable in seconds, not trivially robust."""
    g = torch.Generator().manual_seed(seed)
    protos = 0.2 + 0.6 * torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(123))
    y = torch.randint(0, 10, (n,), generator=g)
    x = (protos[y] + 0.2 * torch.randn(n, 1, 8, 8, generator=g)).clamp(0, 1)
    return x, y


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small CNN fitted in a few seconds, and 160 held-out points."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 16, 10),
    )
    x, y = _learnable_data(512, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(3):
        for i in range(0, len(x), 128):
            opt.zero_grad()
            F.cross_entropy(model(x[i : i + 128]), y[i : i + 128]).backward()
            opt.step()
    model.eval()
    xt, yt = _learnable_data(160, seed=2)
    with torch.no_grad():
        acc = (model(xt).argmax(dim=1) == yt).float().mean()
    assert acc > 0.8, f"the test model failed to learn (accuracy {acc:.2f}); the strength tests would be meaningless"
    return model, xt, yt


# ---------------------------------------------------------------- APGD building blocks


def test_checkpoint_schedule_matches_reference() -> None:
    """p_0=0, p_1=0.22, then shrinking by 0.03 down to 0.06 of the budget."""
    assert checkpoint_lengths(100) == [22, 19, 16, 13, 10, 7, 6, 6, 6]
    assert checkpoint_lengths(10)[0] == 2 and min(checkpoint_lengths(10)) == 1
    assert checkpoint_lengths(1) == [1]


def test_targeted_dlr_formula() -> None:
    z = torch.tensor([[5.0, 3.0, 1.0, 0.0, -1.0]])
    pair = torch.tensor([[0, 2]])
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) = -(5 - 1) / (5 - 0.5)
    assert targeted_dlr(z, pair).item() == pytest.approx(-4.0 / 4.5)


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(sorted(ATTACKS)),
    norm=st.sampled_from(["linf", "l2"]),
    n=st.integers(1, 4),
    eps=st.floats(0.01, 0.6),
    binary=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_output_in_ball_and_box(name: str, norm: str, n: int, eps: float, binary: bool, seed: int) -> None:
    """Every attack returns points within eps of x (in the threat norm) and inside [0, 1], also at the box edges."""
    model = _tiny_linear(seed % 7)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 3, 3, generator=g)
    if binary:
        x = x.round()  # every pixel on the box boundary
    y = torch.randint(0, 5, (n,), generator=g)
    threat = ThreatModel(norm, eps)
    x_adv = ATTACKS[name](model, threat, steps=4)(x, y)
    dist = (x_adv - x).flatten(1).abs().amax(1) if norm == "linf" else (x_adv - x).flatten(1).norm(dim=1)
    assert bool((dist <= eps * (1 + 1e-5) + 1e-6).all())
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype


def test_bad_settings_are_refused() -> None:
    model = _tiny_linear()
    with pytest.raises(InputError, match="L1 schedule"):
        APGD(model, ThreatModel("linf", 0.1), use_largereps=True)
    with pytest.raises(InputError):
        APGD(model, ThreatModel("linf", 0.1), loss="cw")
    with pytest.raises(InputError):
        APGD(model, ThreatModel("linf", 0.1), steps=0)
    x, y = torch.rand(2, 1, 3, 3), torch.tensor([0, 1])
    with pytest.raises(InputError, match="targeted"):
        APGD(model, ThreatModel("linf", 0.1))(x, y, target=torch.tensor([1, 0]))
    with pytest.raises(InputError, match="4 classes"):
        APGDTargeted(_tiny_linear(classes=3), ThreatModel("linf", 0.1), steps=2)(x, y)


def test_seed_is_reproducible_and_leaves_global_rng_alone(trained) -> None:
    model, x, y = trained
    attack = APGD(model, ThreatModel("linf", LINF_EPS), steps=5, seed=7)
    state = torch.get_rng_state()
    a, b = attack(x[:16], y[:16]), attack(x[:16], y[:16])
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state)


# ---------------------------------------------------------------- strength


def test_apgd_reaches_higher_ce_than_pgd20(trained) -> None:
    """APGD-CE's best-loss points have a higher mean cross-entropy than PGD-20's at the same eps."""
    model, x, y = trained
    x, y = x[:80], y[:80]
    threat = ThreatModel("linf", LINF_EPS)
    torch.manual_seed(0)
    x_apgd = APGD(model, threat, steps=50, max_loss=True)(x, y)
    x_pgd = PGD(model, threat, steps=20)(x, y)
    with torch.no_grad():
        ce_apgd = F.cross_entropy(model(x_apgd), y).item()
        ce_pgd = F.cross_entropy(model(x_pgd), y).item()
        acc_apgd = (model(APGD(model, threat, steps=50)(x, y)).argmax(1) == y).float().mean().item()
        acc_pgd = (model(x_pgd).argmax(1) == y).float().mean().item()
    assert ce_apgd > ce_pgd, (ce_apgd, ce_pgd)
    assert acc_apgd <= acc_pgd + 1e-9, (acc_apgd, acc_pgd)


class _Bowl(nn.Module):
    """Two logits ``[0, -k ||x - c||^2]``: never fools, and the CE loss of class 0 peaks at ``c`` inside the ball."""

    def __init__(self, c: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("c", c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = -20.0 * (x - self.c).flatten(1).pow(2).sum(dim=1)
        return torch.stack([torch.zeros_like(z), z], dim=1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_step_size_adapts_to_interior_maximum(norm: str) -> None:
    """With the maximum strictly inside the ball a fixed 2*eps step keeps overshooting; the halving rule converges."""
    torch.manual_seed(5)
    c = 0.3 + 0.4 * torch.rand(1, 1, 4, 4)
    eps = 0.1 if norm == "linf" else 0.5
    offset = torch.rand(8, 1, 4, 4) * 2 - 1
    scale = offset.flatten(1).abs().amax(1) if norm == "linf" else offset.flatten(1).norm(dim=1)
    x = c + 0.5 * eps * offset / scale.view(-1, 1, 1, 1)  # c lies at half the radius from every x
    x_adv = APGD(_Bowl(c), ThreatModel(norm, eps), steps=100)(x, torch.zeros(8, dtype=torch.long))
    err = (x_adv - c).flatten(1).abs().amax(1) if norm == "linf" else (x_adv - c).flatten(1).norm(dim=1)
    assert float(err.max()) < 0.02 * eps, err


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_model_fooled_exactly_below_minimal_distance(norm: str) -> None:
    """For a 2-class linear model the minimal distance is |w.x + b| / ||w||_dual; APGD fools exactly those below eps."""
    torch.manual_seed(3)
    d = 16
    linear = nn.Linear(d, 2)
    model = nn.Sequential(nn.Flatten(), linear)
    x = 0.4 + 0.2 * torch.rand(300, 1, 4, 4)  # far from the box edges, so the box never binds
    with torch.no_grad():
        w = linear.weight[1] - linear.weight[0]
        margin = x.flatten(1) @ w + (linear.bias[1] - linear.bias[0])
        y = (margin > 0).long()
        dual = w.abs().sum() if norm == "linf" else w.norm()
        dist = margin.abs() / dual
    eps = float(dist.median())
    if norm == "l2":
        assert eps * float(w.abs().max() / w.norm()) < 0.4  # the optimal step stays inside the box
    else:
        assert eps < 0.4
    clear = (dist - eps).abs() > 0.02 * eps  # leave out points within 2% of the boundary of the ball
    x_adv = APGD(model, ThreatModel(norm, eps), steps=20)(x, y)
    with torch.no_grad():
        fooled = model(x_adv).argmax(dim=1) != y
    assert torch.equal(fooled[clear], (dist < eps)[clear])


# ---------------------------------------------------------------- AutoAttack

FAST = {"apgd-ce": {"steps": 10}, "apgd-dlr": {"steps": 10}, "apgd-t": {"steps": 10, "n_target_classes": 3}}


def _custom(model: nn.Module, names: list[str], **kw) -> AutoAttack:
    return AutoAttack(
        model, ThreatModel("linf", LINF_EPS), version="custom", attacks=names,
        attack_kwargs={n: FAST[n] for n in names}, **kw,
    )


def test_autoattack_worst_case_at_most_each_component(trained) -> None:
    model, x, y = trained
    x, y = x[:96], y[:96]
    names = ["apgd-ce", "apgd-dlr", "apgd-t"]
    res = _custom(model, names, batch_size=64).run(x, y)
    with torch.no_grad():
        assert torch.equal(res.clean, model(x).argmax(1) == y)
        adv_pred = model(res.x_adv).argmax(1)
    masks = [res.clean, *res.robust.values()]
    for before, after in zip(masks, masks[1:]):
        assert not bool((after & ~before).any())  # cumulative: robust after an attack implies robust before
    for name in names:
        alone = _custom(model, [name], batch_size=64).run(x, y)
        assert res.robust_accuracy <= alone.robust_accuracy, (name, res.robust_accuracy, alone.robust_accuracy)
    broken = res.clean & ~res.robust_mask
    assert bool(broken.any()) and bool(res.robust_mask.any())
    assert bool((adv_pred[broken] != y[broken]).all())
    assert torch.equal(res.x_adv[~broken], x[~broken])
    assert bool(ThreatModel("linf", LINF_EPS).contains(res.x_adv, x).all())
    assert res.robust_accuracy == pytest.approx(float(((adv_pred == y) & res.clean).float().mean()))
    assert res.to_dict()["broken_by"].count(None) == int(res.robust_mask.sum())


class _CrashError(Exception):
    pass


@pytest.mark.parametrize("crash_after", [1, 5])
def test_resume_gives_same_flags(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_after: int) -> None:
    """Interrupt after the k-th (attack, batch), rerun with the same state file: same flags, finished work skipped."""
    model, x, y = trained
    x, y = x[:64], y[:64]
    names = ["apgd-ce", "apgd-t"]
    torch.manual_seed(999)  # the global generator's state must not matter: each (attack, batch) has its own seed
    reference = _custom(model, names, batch_size=16).run(x, y)
    assert int(reference.clean.sum()) > 48  # so that crash_after=5 falls into the second attack

    state = tmp_path / "aa.safetensors"
    original = _RunState.record_batch
    calls = {"n": 0}

    def crashing(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == crash_after:
            raise _CrashError

    monkeypatch.setattr(_RunState, "record_batch", crashing)
    with pytest.raises(_CrashError):
        _custom(model, names, batch_size=16, state_file=state).run(x, y)
    monkeypatch.setattr(_RunState, "record_batch", original)
    batches = {"n": 0}
    original_batch = AutoAttack._attack_batch

    def counting(self, *args, **kwargs):
        batches["n"] += 1
        return original_batch(self, *args, **kwargs)

    monkeypatch.setattr(AutoAttack, "_attack_batch", counting)
    torch.manual_seed(1234)
    resumed = _custom(model, names, batch_size=16, state_file=state).run(x, y)
    total = sum(math.ceil(int(m.sum()) / 16) for m in [reference.clean, *list(reference.robust.values())[:-1]])
    assert resumed.resumed and batches["n"] == total - crash_after
    assert torch.equal(resumed.clean, reference.clean)
    for name in names:
        assert torch.equal(resumed.robust[name], reference.robust[name]), name
    assert torch.equal(resumed.x_adv, reference.x_adv)
    batches["n"] = 0
    again = _custom(model, names, batch_size=16, state_file=state).run(x, y)  # finished: nothing left to do
    assert batches["n"] == 0 and again.robust_accuracy == reference.robust_accuracy


def test_foreign_state_file_refused(trained, tmp_path: Path) -> None:
    model, x, y = trained
    x, y = x[:32], y[:32]
    state = tmp_path / "aa.safetensors"
    _custom(model, ["apgd-ce"], state_file=state).run(x, y)
    other = _tiny_linear(seed=1, classes=10, shape=(1, 8, 8))
    for kwargs in ({"model": other}, {"seed": 1}, {"x": x.flip(0)}):
        aa = _custom(kwargs.get("model", model), ["apgd-ce"], state_file=state, seed=kwargs.get("seed", 0))
        with pytest.raises(InputError, match="another AutoAttack run"):
            aa.run(kwargs.get("x", x), y)
    same_arch = type(model)(*[m for m in model])  # same architecture, different weights
    same_arch.load_state_dict({k: v + 0.01 for k, v in model.state_dict().items()})
    with pytest.raises(InputError, match="model"):
        _custom(same_arch, ["apgd-ce"], state_file=state).run(x, y)
    eps_changed = AutoAttack(model, ThreatModel("linf", 0.2), version="custom", attacks=["apgd-ce"], state_file=state)
    with pytest.raises(InputError, match="eps"):
        eps_changed.run(x, y)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a state file")
    with pytest.raises(InputError, match="not an AutoAttack state file"):
        _custom(model, ["apgd-ce"], state_file=junk).run(x, y)


def test_versions_build_reference_settings(trained) -> None:
    model = trained[0]
    threat = ThreatModel("linf", 8 / 255)
    built = AutoAttack(model, threat, version="rand").build_attacks()
    assert [n for n, _ in built] == ["apgd-ce", "apgd-dlr"]
    for (_, attack), loss in zip(built, ["ce", "dlr"]):
        assert isinstance(attack, APGD) and attack.eot_samples == 20 and attack.steps == 100
        assert attack.restarts == 1 and attack.loss_name == loss
    with pytest.raises(InputError, match="custom"):
        AutoAttack(model, threat, version="standard", attacks=["apgd-ce"])
    with pytest.raises(InputError, match="no-such-attack"):
        AutoAttack(model, threat, version="custom", attacks=["no-such-attack"]).run(torch.rand(2, 1, 8, 8),
                                                                                     torch.tensor([0, 1]))


def test_standard_version_builds_all_four(trained) -> None:
    missing = [n for n in ("fab-t", "square") if n not in list_attacks()]
    if missing:
        pytest.skip(f"attacks not registered yet: {', '.join(missing)}")
    model = trained[0]
    built = AutoAttack(model, ThreatModel("linf", 8 / 255), version="standard").build_attacks()
    assert [n for n, _ in built] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    apgd_ce, apgd_t = built[0][1], built[1][1]
    assert isinstance(apgd_ce, APGD) and apgd_ce.steps == 100 and apgd_ce.restarts == 1
    assert isinstance(apgd_t, APGDTargeted) and apgd_t.n_target_classes == 9 and apgd_t.steps == 100
    plus = AutoAttack(model, ThreatModel("linf", 8 / 255), version="plus").build_attacks()
    assert [n for n, _ in plus] == ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
    assert plus[0][1].restarts == 5 and plus[1][1].restarts == 5
    cheap = {"apgd-ce": {"steps": 5}, "apgd-t": {"steps": 5, "n_target_classes": 2},
             "fab-t": {"steps": 5, "n_target_classes": 2}, "square": {"queries": 20}}
    x, y = trained[1][:12], trained[2][:12]
    res = AutoAttack(model, ThreatModel("linf", LINF_EPS), version="standard", attack_kwargs=cheap).run(x, y)
    assert list(res.robust) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    accs = [res.clean_accuracy, *res.accuracy_after.values()]
    assert all(a >= b for a, b in zip(accs, accs[1:])) and res.robust_accuracy == accs[-1]


def test_agrees_with_reference_apgd_ce(trained) -> None:
    """Our APGD-CE (custom AutoAttack) and pyautoattack's, both at custom's 5 restarts, give robust accuracies
    within one point on 100 points."""
    pyautoattack = pytest.importorskip("pyautoattack")
    model, x, y = trained
    x, y = x[:100], y[:100]
    eps = 0.08
    aa = AutoAttack(model, ThreatModel("linf", eps), version="custom", attacks=["apgd-ce"], batch_size=100)
    assert aa.build_attacks()[0][1].restarts == 5
    ours = aa.run(x, y)
    ref = pyautoattack.AutoAttack(model, attacks=["apgd-ce"], device="cpu", eps=eps, norm="Linf", seed=0,
                                  version="custom")
    assert ref.apgd.n_restarts == 5 and ours.checks["warnings"] == []
    ref.verbose = False
    x_ref, _ = ref.run_standard_evaluation(x, y, batch_size=100)
    with torch.no_grad():
        ref_robust = int((model(x_ref).argmax(1) == y).sum())
    assert 5 < ref_robust < 95, "eps should leave both broken and robust points to compare"
    assert abs(int(ours.robust_mask.sum()) - ref_robust) <= 1, (int(ours.robust_mask.sum()), ref_robust)


def test_custom_uses_the_reference_restarts_and_square_schedule(trained) -> None:
    """custom: 5 restarts for apgd-ce, apgd-dlr and fab as the reference builds them; Square gets resc_schedule=False
    whenever its constructor takes it, and runs without it otherwise."""
    from robustlab.attacks.autoattack import _bind_settings
    from robustlab.attacks.base import Attack

    names = ["apgd-ce", "apgd-dlr", "fab", "apgd-t", "fab-t", "square"]
    missing = [n for n in names if n not in list_attacks()]
    if missing:
        pytest.skip(f"attacks not registered yet: {', '.join(missing)}")
    built = AutoAttack(trained[0], ThreatModel("linf", 8 / 255), version="custom", attacks=names).build_attacks()
    assert [a.restarts for _, a in built] == [5, 5, 5, 1, 1, 1]

    square = dict(built)["square"]
    assert square.queries == 5000 and square.resc_schedule is False  # the reference's Square inside AutoAttack

    class NoQueries(Attack):
        def __init__(self, model: nn.Module, threat: ThreatModel, *, steps: int = 10) -> None:
            super().__init__(model, threat)

    assert _bind_settings(NoQueries, "x", {"steps": 3, "restarts": 1}) == {"steps": 3}
    with pytest.raises(InputError, match="takes no 'queries' setting"):
        _bind_settings(NoQueries, "x", {"queries": 5000})


@pytest.mark.parametrize(("norm", "ref_norm", "eps"), [("l2", "L2", 0.3), ("l1", "L1", 1.0)])
def test_standard_agrees_with_reference_in_l2_and_l1(trained, norm: str, ref_norm: str, eps: float) -> None:
    """AutoAttack standard, the reference's full settings for the norm (L1: 5 APGD-CE restarts, 5 APGD-T targets,
    the large-eps schedule, FAB-T and Square in L1): robust accuracy within one point of pyautoattack's on 100
    points. Square gets 500 queries on both sides to keep the test short (its own cross-check is
    tests/test_square_reference.py)."""
    pyautoattack = pytest.importorskip("pyautoattack")
    model, x, y = trained
    x, y = x[:100], y[:100]
    aa = AutoAttack(model, ThreatModel(norm, eps), version="standard", batch_size=100,
                    attack_kwargs={"square": {"queries": 500}})
    built = dict(aa.build_attacks())
    if norm == "l1":
        assert built["apgd-ce"].restarts == 5 and built["apgd-ce"].use_largereps
        assert built["apgd-t"].n_target_classes == 5 and built["apgd-t"].use_largereps
    ours = aa.run(x, y)
    ref = pyautoattack.AutoAttack(model, device="cpu", eps=eps, norm=ref_norm, seed=0, version="standard")
    ref.verbose, ref.square.n_queries = False, 500
    x_ref, _ = ref.run_standard_evaluation(x, y, batch_size=100)
    with torch.no_grad():
        ref_robust = int((model(x_ref).argmax(1) == y).sum())
    assert 5 < ref_robust < 95, f"eps should leave both broken and robust points to compare, got {ref_robust}"
    print(f"{norm}: robust {int(ours.robust_mask.sum())} (ours) vs {ref_robust} (reference) of 100")
    assert abs(int(ours.robust_mask.sum()) - ref_robust) <= 1, (int(ours.robust_mask.sum()), ref_robust)
