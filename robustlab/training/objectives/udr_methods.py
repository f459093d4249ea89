"""UDR twins of the adversarial-training methods (Bui 2023, Ch. 5, Sec. 3): the same outer loss, soft-ball inner max.

Each ``udr-X`` is objective ``X`` with its ``udr`` option on by default (``UDRParams()``, the thesis defaults), so
``udr-X`` with ``params: {udr: {...}}`` equals ``X`` with the same ``udr`` block, with one exception: ``udr-pgd``
keeps the clean term by default (``natural_weight`` 1), because UDR-PGD's risk is ``CE(h(x''), y') + beta
CE(h(x'), y')`` (Sec. 3, beta = 1), where ``pgd-at`` defaults to Madry's adversarial term alone. Kept apart from
:mod:`~robustlab.training.objectives.udr` because :mod:`~robustlab.training.objectives.adversarial` imports that one.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

from robustlab.training.objectives.awp import AWPParams
from robustlab.training.objectives.base import register_objective
from robustlab.training.objectives.mart import MART, MARTParams
from robustlab.training.objectives.pgd_at import PGDAT, PGDATParams
from robustlab.training.objectives.trades import TRADES, TRADESParams
from robustlab.training.objectives.udr import UDRParams


class UDRPGDATParams(PGDATParams):
    """PGD-AT's parameters with the soft ball on and the clean term of UDR-PGD's risk (``natural_weight`` 1 =
    ``CE(x) + beta CE(x')`` with beta = 1, the thesis's Eq. 5 twin; 0 = the WRN "*" rows)."""

    natural_weight: float = Field(default=1.0, ge=0)
    udr: UDRParams = Field(default_factory=UDRParams)


class UDRTRADESParams(TRADESParams):
    """TRADES' parameters with the soft ball on."""

    udr: UDRParams = Field(default_factory=UDRParams)


class UDRMARTParams(MARTParams):
    """MART's parameters with the soft ball on (form "original" by default: CE attack, BCE on x'; form "thesis" is
    the printed UDR-MART risk with the KL attack of footnote 2)."""

    udr: UDRParams = Field(default_factory=UDRParams)


class UDRAWPParams(UDRPGDATParams):
    """UDR-AWP-AT (spec §1.8, the released code): no clean term, AWP with gamma 0.01, the soft-ball CE attack."""

    natural_weight: float = Field(default=0.0, ge=0)
    awp: AWPParams | None = Field(default_factory=lambda: AWPParams(gamma=0.01))


@register_objective("udr-pgd")
class UDRPGD(PGDAT):
    """UDR-PGD: PGD-AT's loss (clean term on by default) on examples from the soft-ball CE attack with learned
    lambda."""

    Params: ClassVar[type[BaseModel]] = UDRPGDATParams
    params: UDRPGDATParams


@register_objective("udr-trades")
class UDRTRADES(TRADES):
    """UDR-TRADES: TRADES' loss on examples from the soft-ball KL attack with learned lambda."""

    Params: ClassVar[type[BaseModel]] = UDRTRADESParams
    params: UDRTRADESParams


@register_objective("udr-mart")
class UDRMART(MART):
    """UDR-MART: MART's loss on examples from the soft-ball CE attack (KL with form "thesis")."""

    Params: ClassVar[type[BaseModel]] = UDRMARTParams
    params: UDRMARTParams


@register_objective("udr-awp")
class UDRAWP(PGDAT):
    """UDR-AWP-AT: AWP-AT (PGD-AT, natural_weight 0, awp gamma 0.01) with the soft-ball attack (WRN setting)."""

    Params: ClassVar[type[BaseModel]] = UDRAWPParams
    params: UDRAWPParams
