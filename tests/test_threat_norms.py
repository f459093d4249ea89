"""Norm names: ``canonical_norm`` maps every accepted spelling to one of linf, l2, l1, and ThreatModel uses it."""

from __future__ import annotations

import pytest

from robustlab.core.errors import InputError
from robustlab.core.threat import NORMS, ThreatModel, canonical_norm


@pytest.mark.parametrize(("given", "expected"), [("linf", "linf"), ("Inf", "linf"), ("L_INF", "linf"), ("li", "linf"),
                                                 ("l2", "l2"), ("2", "l2"), ("L1", "l1"), ("1", "l1")])
def test_aliases_map_to_the_canonical_name(given: str, expected: str) -> None:
    assert canonical_norm(given) == expected
    assert ThreatModel(given, 0.1).norm == expected  # type: ignore[arg-type]  # a user's string, as the CLI passes


@pytest.mark.parametrize("given", ["l3", "", "linf2", "max"])
def test_unknown_norms_name_the_valid_ones(given: str) -> None:
    for make in (lambda: canonical_norm(given), lambda: ThreatModel(given, 0.1)):  # type: ignore[arg-type]
        with pytest.raises(InputError, match=f"unknown norm {given!r}; valid norms: " + ", ".join(NORMS)):
            make()
