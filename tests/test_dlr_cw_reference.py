"""DLR losses against AutoAttack's (pyautoattack 0.2.0) at exact ties, and CW-L2's original budget with early abort."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

from robustlab.attacks import create_attack, get_attack_class
from robustlab.attacks.apgd import targeted_dlr
from robustlab.attacks.cw import CWL2, CWL2Fast
from robustlab.attacks.losses import dlr
from robustlab.core.threat import ThreatModel

pyautoattack = pytest.importorskip("pyautoattack")
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted  # noqa: E402

# true logit tied with the best other one (y the lower or the higher index, on top or not), and a plain case
TIES = [
    ([1.0, 3.0, 3.0, 0.0], 1),
    ([1.0, 3.0, 3.0, 0.0], 2),
    ([3.0, 3.0, 1.0, 0.0, 2.0], 0),
    ([3.0, 3.0, 1.0, 0.0, 2.0], 1),
    ([0.5, 2.0, 2.0, 2.0, -1.0], 2),
    ([0.2, 1.5, -0.3, 0.9], 3),
]


def _value_and_grad(fn, logits: list[float], *args: Tensor) -> tuple[Tensor, Tensor]:
    z = torch.tensor([logits], requires_grad=True)
    out = fn(z, *args)
    out.sum().backward()
    return out.detach(), z.grad


@pytest.mark.parametrize(("logits", "y"), TIES)
def test_dlr_at_ties_has_the_reference_gradient(logits: list[float], y: int) -> None:
    """The best other class comes from the sort's order, so a tie at the top still pulls z_y and z_k apart."""
    label = torch.tensor([y])
    ours, g_ours = _value_and_grad(dlr, logits, label)
    ref, g_ref = _value_and_grad(lambda z, t: APGDAttack.dlr_loss(None, z, t), logits, label)
    assert torch.equal(ours, ref)
    assert torch.equal(g_ours, g_ref)
    assert float(g_ours.abs().sum()) > 0, "DLR lost its gradient at a tie"


@pytest.mark.parametrize(("logits", "y"), TIES)
def test_targeted_dlr_at_ties_matches_reference(logits: list[float], y: int) -> None:
    target = torch.tensor([(y + 1) % len(logits)])
    label = torch.tensor([y])
    ours, g_ours = _value_and_grad(targeted_dlr, logits, torch.stack((label, target), 1))
    holder = SimpleNamespace(y_target=target)
    ref, g_ref = _value_and_grad(lambda z, t: APGDAttack_targeted.dlr_loss_targeted(holder, z, t), logits, label)
    assert torch.allclose(ours, ref, rtol=1e-6, atol=0)
    assert torch.allclose(g_ours, g_ref, rtol=1e-6, atol=1e-7)


class _Counting(nn.Module):
    """A fixed linear classifier that counts its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.lin = nn.Linear(16, 4)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(4, 16, generator=gen))
            self.lin.bias.zero_()
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return self.lin(x.flatten(1))


def test_cw_l2_defaults_to_the_original_budget_with_early_abort() -> None:
    threat = ThreatModel("l2", 0.5)
    full, fast = CWL2(nn.Flatten(), threat), create_attack("cw-l2-fast", nn.Flatten(), threat)
    assert (full.steps, full.abort_early, full.binary_search_steps) == (10000, True, 9)
    assert isinstance(fast, CWL2Fast) and fast.steps == 1000 and fast.abort_early
    assert get_attack_class("cw-l2-fast") is CWL2Fast
    model = _Counting()
    x = 0.4 + 0.2 * torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    model.calls = 0
    x_adv, ok = CWL2(model, threat, binary_search_steps=1, initial_const=100.0).minimal_perturbation(x, y)
    assert bool(ok.all())
    assert 1000 < model.calls < 10000, "the run must use more than the fast budget and still abort early"
