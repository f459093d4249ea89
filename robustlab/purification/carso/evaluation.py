"""Evaluating CARSO end to end: views of the same model with another aggregation (a smooth surrogate to attack, to
rule out gradient masking by ``peel``). An evaluation attack with ``surrogate: <aggregation>`` is crafted on such a
view and judged on the defended model (:func:`robustlab.evaluation.protocol.named_attacks`)."""

from __future__ import annotations

from torch import Tensor, nn

from robustlab.purification.carso.aggregation import check_aggregation
from robustlab.purification.carso.model import carso_of


class AggregationView(nn.Module):
    """The same CARSO model (weights shared, nothing copied) with ``aggregation`` in place of its own."""

    def __init__(self, model: nn.Module, aggregation: str) -> None:
        super().__init__()
        self.model = model
        self.aggregation = check_aggregation(aggregation)
        carso_of(model)  # raises unless this is a CARSO model

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the CARSO model on [0, 1] input, aggregated with this view's rule."""
        net, wrapper = carso_of(self.model)
        return net(wrapper.normalize(x) if wrapper is not None else x, aggregation=self.aggregation)
