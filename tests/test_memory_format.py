"""Channels-last weights for an attack run: used only where the model gives the same logits, always restored;
AutoAttack uses them for its forward-only attacks only, with the same result as in the default layout."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustlab.attacks.autoattack import AutoAttack
from robustlab.attacks.memory_format import channels_last, channels_last_helps
from robustlab.core.threat import ThreatModel


class ConvNet(nn.Module):
    """A small conv net; ``flatten_by_view`` flattens with ``.view``, which fails on a channels-last activation."""

    def __init__(self, flatten_by_view: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.conv = nn.Conv2d(4, 4, 3)  # more than one input channel: the two layouts differ
        self.fc = nn.Linear(4 * 4 * 4, 3)
        self.flatten_by_view = flatten_by_view

        self.layouts: list[tuple[bool, bool]] = []  # per forward: (gradients on, weights channels-last)

    def forward(self, x: Tensor) -> Tensor:
        self.layouts.append((torch.is_grad_enabled(), not self.conv.weight.is_contiguous()))
        h = torch.relu(self.conv(torch.relu(self.conv1(x))))
        return self.fc(h.view(len(h), -1) if self.flatten_by_view else h.flatten(1))


def _batch(n: int = 16) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def test_weights_are_channels_last_inside_and_restored_after() -> None:
    model, (x, _) = ConvNet(), _batch()
    weight = model.conv.weight
    values = weight.detach().clone()
    assert channels_last_helps(model, x)
    with channels_last(model, x) as used:
        assert used
        assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert model.conv.weight is weight, "the Parameter object must be kept (an optimizer holds it)"
    assert weight.is_contiguous() and torch.equal(weight, values)


def test_a_model_that_fails_in_channels_last_is_left_as_it_is() -> None:
    model, (x, _) = ConvNet(flatten_by_view=True), _batch()
    with channels_last(model, x) as used:
        assert not used
        assert model.conv.weight.is_contiguous()
        model(x)  # still works inside
    assert model.conv.weight.is_contiguous()


def test_a_layout_the_user_chose_is_not_touched() -> None:
    model, (x, _) = ConvNet(), _batch()
    model.conv.weight.data = model.conv.weight.data.contiguous(memory_format=torch.channels_last)
    assert not channels_last_helps(model, x)
    with channels_last(model, x) as used:
        assert not used
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_autoattack_gives_the_same_result_in_both_layouts() -> None:
    model, (x, y) = ConvNet(), _batch(24)
    kwargs = {"version": "custom", "attacks": ["apgd-ce", "square"],
              "attack_kwargs": {"apgd-ce": {"steps": 10}, "square": {"queries": 50}}}
    threat = ThreatModel("linf", 0.1)
    default_layout = AutoAttack(model, threat, channels_last=False, **kwargs).run(x, y)  # type: ignore[arg-type]
    model.layouts.clear()
    last = AutoAttack(model, threat, channels_last=True, **kwargs).run(x, y)  # type: ignore[arg-type]
    assert model.conv.weight.is_contiguous()
    # only the forward-only attack (Square) ran channels-last; APGD's gradient passes kept the default layout
    assert any(cl for _, cl in model.layouts) and not any(grad and cl for grad, cl in model.layouts)
    assert torch.equal(default_layout.clean, last.clean)
    for name in ("apgd-ce", "square"):
        assert torch.equal(default_layout.robust[name], last.robust[name]), name
    torch.testing.assert_close(default_layout.x_adv, last.x_adv, atol=1e-5, rtol=0)
