"""The L1 threat model: the exact projection onto the L1 ball intersected with the box, APGD-L1 (CE, DLR, targeted,
the large-eps schedule), FAB and FAB-T in L1 and (when installed) agreement with the reference implementation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks.apgd import APGD, APGDDLR, APGDTargeted, large_eps_schedule
from robustlab.attacks.fab import FAB, FABTargeted, project_hyperplane_box, project_hyperplane_box_l1
from robustlab.core.errors import InputError
from robustlab.core.threat import ThreatModel, project_l1_ball, project_l1_box


def _bisection(d: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Brute force for one vector: the KKT form ``sign(d) clip(|d| - lam, 0, room)`` with lam by 200 bisections."""
    a = d.abs()
    room = torch.where(d >= 0, 1 - x, x).clamp_min(0)

    def at(lam: float) -> torch.Tensor:
        return d.sign() * torch.minimum((a - lam).clamp_min(0), room)

    if at(0.0).abs().sum() <= eps:
        return at(0.0)
    lo, hi = 0.0, float(a.max()) + 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if at(mid).abs().sum() > eps else (lo, mid)
    return at(hi)


def _small_cases(count: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """Random 1-4 dim centres (a third with coordinates on the box faces 0 and 1), perturbations and radii."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for i in range(count):
        dim = int(torch.randint(1, 5, (), generator=g))
        x = torch.rand(dim, generator=g, dtype=torch.float64)
        if i % 3 == 0:
            on_face = torch.rand(dim, generator=g) < 0.5
            x = torch.where(on_face, torch.randint(0, 2, (dim,), generator=g).double(), x)
        d = torch.randn(dim, generator=g, dtype=torch.float64) * 3 * float(torch.rand((), generator=g))
        cases.append((d, x, 2 * float(torch.rand((), generator=g)) + 1e-3))
    return cases


def test_l1_box_projection_matches_brute_force() -> None:
    """On 600 small vectors (box faces included) the sort-based projection equals the bisection solution."""
    for d, x, eps in _small_cases(600, seed=0):
        ours = project_l1_box(d[None], x[None], eps)[0]
        torch.testing.assert_close(ours, _bisection(d, x, eps), atol=1e-9, rtol=0)
        assert ours.abs().sum() <= eps + 1e-9
        assert ((x + ours) >= 0).all() and ((x + ours) <= 1).all()


def test_l1_box_projection_of_sparse_rows_in_one_batch() -> None:
    """Rows of different sparsity in one batch (each solved on its live coordinates, padded to the densest row's
    count), with coordinates whose box room is zero, equal the bisection solution row by row."""
    g = torch.Generator().manual_seed(3)
    n, dim = 120, 40
    x = torch.rand(n, dim, generator=g, dtype=torch.float64)
    x = torch.where(torch.rand(n, dim, generator=g) < 0.3, torch.randint(0, 2, (n, dim), generator=g).double(), x)
    keep = torch.rand(n, dim, generator=g) < torch.linspace(0.02, 0.6, n, dtype=torch.float64)[:, None]
    d = torch.randn(n, dim, generator=g, dtype=torch.float64) * keep
    eps = 0.5 + 2 * torch.rand(n, generator=g, dtype=torch.float64)
    # the densest row: 30 live coordinates, all still nonzero at the solution (none may be left out)
    x[0], d[0], eps[0] = 0.5, torch.where(torch.arange(dim) < 30, 0.3, 0.0).double(), 0.25 * 30
    # more nonzero coordinates than that, 35 of them without room (d < 0 at x = 0): only the 5 others count
    x[1], d[1], eps[1] = torch.where(torch.arange(dim) < 35, 0.0, 0.5).double(), -5.0, 0.5
    d[1, 35:] = 0.2
    ours = project_l1_box(d, x, eps)
    for i in range(n):
        torch.testing.assert_close(ours[i], _bisection(d[i], x[i], float(eps[i])), atol=1e-9, rtol=0)
    assert ours.abs().sum(dim=1).le(eps + 1e-9).all()
    torch.testing.assert_close(project_l1_box(torch.zeros_like(d), x, eps), torch.zeros_like(d))


def test_l1_box_projection_beats_ball_then_clip() -> None:
    """Ball-then-box is feasible but never closer, and strictly farther when the box cuts: the old projection."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 3, 4, 4, generator=g, dtype=torch.float64)
    z = x + torch.randn(x.shape, generator=g, dtype=torch.float64)
    eps = 3.0
    exact = x + project_l1_box(z - x, x, eps)
    clipped = (x + project_l1_ball(z - x, eps)).clamp(0, 1)
    dist_exact = (exact - z).flatten(1).norm(dim=1)
    dist_clip = (clipped - z).flatten(1).norm(dim=1)
    assert (dist_exact <= dist_clip + 1e-9).all()
    assert (dist_exact < dist_clip - 1e-3).float().mean() > 0.5
    torch.testing.assert_close(ThreatModel("l1", eps).project(z, x), exact)


def test_l1_box_projection_agrees_with_reference() -> None:
    """On image-sized vectors the reference's L1_projection gives the same point."""
    reference = pytest.importorskip("pyautoattack.autopgd_base")
    g = torch.Generator().manual_seed(2)
    x = torch.rand(16, 3, 16, 16, generator=g)
    x[:, 0, :4] = 0.0  # box faces
    x[:, 1, :4] = 1.0
    d = torch.randn(x.shape, generator=g)
    for eps in (0.5, 5.0, 40.0):
        ref = d + reference.L1_projection(x, d, eps)
        torch.testing.assert_close(project_l1_box(d, x, eps), ref, atol=1e-4, rtol=0)


def test_l1_box_projection_keeps_points_inside() -> None:
    """A point already in the ball and the box is its own projection (per-sample radii too)."""
    x = torch.rand(4, 10, dtype=torch.float64)
    d = (torch.rand(4, 10, dtype=torch.float64) - 0.5) * 0.01
    d = torch.where(x + d < 0, -x, torch.where(x + d > 1, 1 - x, d))
    torch.testing.assert_close(project_l1_box(d, x, torch.full((4,), 1.0, dtype=torch.float64)), d)


def _learnable_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy copies of 10 fixed random 1x8x8 prototype images: learnable in seconds, not trivially robust."""
    g = torch.Generator().manual_seed(seed)
    protos = 0.2 + 0.6 * torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(123))
    y = torch.randint(0, 10, (n,), generator=g)
    return (protos[y] + 0.2 * torch.randn(n, 1, 8, 8, generator=g)).clamp(0, 1), y


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small CNN fitted in a few seconds, and 100 held-out points."""
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
    xt, yt = _learnable_data(100, seed=2)
    return model, xt, yt


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("cls", [APGD, APGDDLR, APGDTargeted])
@pytest.mark.parametrize("largereps", [False, True])
def test_apgd_l1_stays_in_ball_and_box(trained, cls, largereps) -> None:
    """Every variant returns points of the L1 ball and the box, and attacks (accuracy drops)."""
    model, x, y = trained
    x, y = x[:40], y[:40]
    threat = ThreatModel("l1", 1.5)
    kwargs = {"n_target_classes": 2} if cls is APGDTargeted else {}
    x_adv = cls(model, threat, steps=10, seed=0, use_largereps=largereps, **kwargs)(x, y)
    assert threat.contains(x_adv, x).all()
    assert (x_adv - x).abs().flatten(1).sum(1).max() <= 1.5 + 1e-4
    assert _accuracy(model, x_adv, y) < _accuracy(model, x, y) - 0.2


@pytest.mark.parametrize("largereps", [False, True])
def test_apgd_l1_agrees_with_reference(trained, largereps) -> None:
    """APGD-CE L1 and the reference's APGDAttack(norm='L1') give robust accuracies within 2 points on 100 points."""
    reference = pytest.importorskip("pyautoattack.autopgd_base")
    model, x, y = trained
    eps = 1.0
    ours = APGD(model, ThreatModel("l1", eps), steps=100, seed=0, use_largereps=largereps)(x, y)
    ref = reference.APGDAttack(model, norm="L1", eps=eps, n_iter=100, n_restarts=1, seed=0, device="cpu", loss="ce",
                               use_largereps=largereps).perturb(x, y)
    ours_acc, ref_acc = _accuracy(model, ours, y), _accuracy(model, ref, y)
    assert 0.1 < ref_acc < _accuracy(model, x, y) - 0.1, "eps should leave both broken and robust points"
    assert abs(ours_acc - ref_acc) <= 0.02 + 1e-9, (ours_acc, ref_acc)


def test_apgd_targeted_l1_agrees_with_reference(trained) -> None:
    """APGD-T L1 with the large-eps schedule (AutoAttack L1 standard's setting) against the reference's."""
    reference = pytest.importorskip("pyautoattack.autopgd_base")
    model, x, y = trained
    eps = 1.0
    ours = APGDTargeted(model, ThreatModel("l1", eps), steps=50, n_target_classes=3, seed=0, use_largereps=True)(x, y)
    ref = reference.APGDAttack_targeted(model, norm="L1", eps=eps, n_iter=50, n_restarts=1, seed=0, device="cpu",
                                        n_target_classes=3, use_largereps=True).perturb(x, y)
    ours_acc, ref_acc = _accuracy(model, ours, y), _accuracy(model, ref, y)
    assert abs(ours_acc - ref_acc) <= 0.02 + 1e-9, (ours_acc, ref_acc)


def test_large_eps_schedule_and_its_checks() -> None:
    """The reference's iteration split, and the option refused where it has no meaning."""
    assert large_eps_schedule(100) == [(3.0, 30), (2.0, 30), (1.0, 40)]
    assert large_eps_schedule(10) == [(3.0, 3), (2.0, 3), (1.0, 4)]
    assert sum(n for _, n in large_eps_schedule(37)) == 37
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(InputError, match="L1 schedule"):
        APGD(model, ThreatModel("linf", 0.1), use_largereps=True)
    with pytest.raises(InputError, match="steps >= 3"):
        APGD(model, ThreatModel("l1", 1.0), steps=2, use_largereps=True)


def test_l1_hyperplane_step_by_hand_and_against_reference() -> None:
    """The minimal-L1 step fills the largest |w| first; it equals the reference's projection_l1 (box faces and
    unreachable hyperplanes included)."""
    p = torch.tensor([[0.5, 0.5, 0.5]])
    d = project_hyperplane_box(p, torch.tensor([[3.0, -2.0, 1.0]]), torch.tensor([2.0]), "l1")
    torch.testing.assert_close(d, torch.tensor([[0.5, -0.25, 0.0]]))
    d = project_hyperplane_box(p, torch.tensor([[3.0, -2.0, 0.0]]), torch.tensor([-9.0]), "l1")  # unreachable
    torch.testing.assert_close(d, torch.tensor([[-0.5, 0.5, 0.0]]))
    reference = pytest.importorskip("pyautoattack.fab_projections")
    g = torch.Generator().manual_seed(3)
    for dim in (1, 3, 7, 200):
        t = torch.rand(300, dim, generator=g)
        t[:, : dim // 3] = torch.randint(0, 2, (300, dim // 3), generator=g).float()
        w = torch.randn(300, dim, generator=g)
        b = (w * t).sum(1) + torch.randn(300, generator=g) * 0.3 * dim**0.5
        ours = project_hyperplane_box(t, w, b - (w * t).sum(1), "l1")
        torch.testing.assert_close(ours, reference.projection_l1(t.clone(), w.clone(), b.clone()), atol=1e-5, rtol=0)
        assert ((t + ours) >= 0).all() and ((t + ours) <= 1).all()


def test_l1_hyperplane_step_from_the_largest_weights_equals_the_full_sort() -> None:
    """Rows closed by the few largest |w|, rows that need more (sorted whole) and unreachable rows in one batch: the
    step equals the one from sorting every row."""
    g = torch.Generator().manual_seed(4)
    t = torch.rand(90, 50, generator=g)
    w = torch.randn(90, 50, generator=g)
    gap = (w.abs() * 0.5).sum(1) * torch.linspace(0.01, 1.3, 90)  # from one coordinate's worth to out of reach
    c = torch.where(torch.rand(90, generator=g) < 0.5, gap, -gap)
    full = project_hyperplane_box_l1(t, w, c, top=50)
    for top in (1, 4, 16):
        moved = (project_hyperplane_box_l1(t, w, c, top=top) != 0).sum(1)
        assert (moved <= top).any() and (moved > top).any()
        torch.testing.assert_close(project_hyperplane_box_l1(t, w, c, top=top), full, atol=1e-6, rtol=0)


@pytest.mark.parametrize("cls", [FAB, FABTargeted])
def test_fab_l1_in_ball_and_agrees_with_reference(trained, cls) -> None:
    """FAB and FAB-T in L1 stay in the ball and box, and match the reference's robust accuracy within 2 points."""
    model, x, y = trained
    eps = 1.0
    threat = ThreatModel("l1", eps)
    kwargs = {"n_target_classes": 3} if cls is FABTargeted else {}
    ours = cls(model, threat, steps=50, seed=0, **kwargs)(x, y)
    assert threat.contains(ours, x).all()
    restarted = cls(model, threat, steps=5, restarts=2, seed=0, **kwargs)(x[:20], y[:20])
    assert threat.contains(restarted, x[:20]).all()
    fab_pt = pytest.importorskip("pyautoattack.fab_pt")
    ref = fab_pt.FABAttack_PT(model, norm="L1", n_iter=50, eps=eps, seed=0, device="cpu",
                              targeted=cls is FABTargeted, **kwargs).perturb(x, y)
    ours_acc, ref_acc = _accuracy(model, ours, y), _accuracy(model, ref, y)
    assert 0.1 < ref_acc < _accuracy(model, x, y) - 0.1, "eps should leave both broken and robust points"
    assert abs(ours_acc - ref_acc) <= 0.02 + 1e-9, (ours_acc, ref_acc)


def test_configs_refuse_an_attack_at_a_norm_it_lacks() -> None:
    """Every attack declares its norms; configs check them when read, naming the attack and its norms, so an
    evaluation never fails after other attacks ran. Direct construction refuses the same way."""
    from robustlab.attacks import get_attack_class, list_attacks
    from robustlab.attacks.config import AttackConfig
    from robustlab.attacks.rfgsm import RFGSM
    from robustlab.core.config import parse_config
    from robustlab.core.errors import ConfigError
    from robustlab.core.threat import NORMS
    from robustlab.evaluation.config import EvalConfig

    for name in list_attacks():
        norms = get_attack_class(name).norms
        assert norms and set(norms) <= set(NORMS), (name, norms)
    assert get_attack_class("rfgsm").norms == ("linf",) and get_attack_class("deepfool").norms == ("linf", "l2")
    for name in ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "pgd"):
        assert AttackConfig(name=name, norm="l1", eps=1.0).norm == "l1"
    attacks = [{"name": "pgd", "norm": "l1", "eps": 1.0}, {"name": "deepfool", "norm": "l1", "eps": 1.0}]
    with pytest.raises(ConfigError, match=r"'deepfool' supports the linf, l2 norm\(s\), not 'l1'"):
        parse_config({"attacks": attacks}, EvalConfig)
    with pytest.raises(ConfigError, match=r"'rfgsm' supports the linf norm\(s\), not 'l2'"):
        parse_config({"attacks": [{"name": "rfgsm", "norm": "l2", "eps": 0.5}]}, EvalConfig)
    custom = {"version": "custom", "norm": "l1", "eps": 1.0, "attacks": ["apgd-ce", "bb"]}
    with pytest.raises(ConfigError, match=r"'bb' supports the linf, l2 norm\(s\), not 'l1'"):
        parse_config({"autoattack": custom}, EvalConfig)
    custom["attacks"] = ["apgd-ce", "apgd-t", "fab-t"]
    assert parse_config({"autoattack": custom}, EvalConfig).autoattack.attacks == custom["attacks"]
    with pytest.raises(InputError, match="RFGSM supports the linf norm"):
        RFGSM(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), ThreatModel("l1", 1.0))
