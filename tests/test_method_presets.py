"""Preset rows against the method forms that produced their published numbers: MART's original form on the UDR
tables' primary rows, the printed Eq. 7 as a named variant without numbers, and the WRM rows' inner ascent."""

from __future__ import annotations

import pytest

from robustlab.presets import list_presets, load_preset
from robustlab.training.objectives import create_objective

# Table 1 (PGD-200 / AA) of the MART and UDR-MART rows, per family
MART_TABLE1 = {"udr-mnist": {"mart": (94.7, 90.6), "udr-mart": (96.0, 92.3)},
               "udr-cifar10": {"mart": (53.3, 48.2), "udr-mart": (54.1, 49.1)}}


@pytest.mark.parametrize("family", sorted(MART_TABLE1))
@pytest.mark.parametrize("row", ["mart", "udr-mart"])
def test_primary_mart_rows_are_the_original_form_with_the_published_numbers(family: str, row: str) -> None:
    p = load_preset(f"{family}-{row}", "paper")
    obj = create_objective(p.train.objective)
    assert obj.params.form == "original", p.name
    assert (p.published["pgd"], p.published["autoattack"]) == MART_TABLE1[family][row]


@pytest.mark.parametrize("family", sorted(MART_TABLE1))
@pytest.mark.parametrize("row", ["mart", "udr-mart"])
def test_printed_mart_rows_are_a_named_variant_without_published_numbers(family: str, row: str) -> None:
    primary = load_preset(f"{family}-{row}", "paper")
    p = load_preset(f"{family}-{row}-printed", "paper")
    assert create_objective(p.train.objective).params.form == "thesis"
    assert {k: v for k, v in p.published.items() if k != "source"} == {}
    assert "no published" in p.notes.lower()
    # the same row otherwise: beta, soft ball, budget
    same = {k: v for k, v in p.train.objective.params.items() if k != "form"}
    assert same == {k: v for k, v in primary.train.objective.params.items() if k != "form"}


def test_old_original_form_row_names_are_gone() -> None:
    names = set(list_presets())
    assert not {"udr-mnist-mart-original", "udr-mnist-udr-mart-original"} & names


@pytest.mark.parametrize("name", ["udr-mnist-wrm", "udr-cifar10-wrm"])
def test_wrm_rows_run_sinha_et_al_s_ascent(name: str) -> None:
    """The thesis's WRM gammas are Sinha et al.'s (eps_WRM = 0.5 / gamma): cost ||d||^2 and the initial step + 15."""
    obj = create_objective(load_preset(name, "paper").train.objective)
    assert obj.params.cost == "squared" and obj.params.steps == 16
