"""Topic `tkm.mentoring.v1`; the message key is the stream id (the group's mentoring stream;
PeriodClosed: the period's stream).

A report's unit of production is a code from `ProductionUnit`, never free text. Version 1 of
ReportFiled and ReportAmended carried the unit as typed; it is still on the retained topic, so its
models stay registered (at the end of this module) and are upcast to version 2: a unit typed
exactly as one of the codes keeps that code, anything else becomes "lainnya" and the text is
dropped. Policy: docs/contracts/COMPATIBILITY.md.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal, get_args

from pydantic import Field

from shared.contracts.common import (
    Id,
    Period,
    ProvinceCode,
    RegencyCode,
    Rupiah,
    contract_upcaster,
)
from shared.envelope import Event, register
from shared.topics import MENTORING

Support = Literal["partnership", "capital_access", "market_access"]
# units a TKM group's production is counted in; "layanan" counts services (repairs, make-up)
ProductionUnit = Literal["kg", "liter", "meter", "pcs", "unit", "paket", "porsi", "ekor",
                         "lembar", "layanan", "lainnya"]
PRODUCTION_UNITS: tuple[str, ...] = get_args(ProductionUnit)
OTHER_UNIT = "lainnya"


def _unit_text_to_code(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 -> v2 of the report events: the unit as typed becomes a code only when it is one
    (ignoring case and spaces); otherwise "lainnya". The typed text never travels on."""
    typed = payload.get("production_unit")
    # the same mapping as services/mentoring/migrations/002_production_unit_codes.sql
    typed = typed.strip(" \t\r\n").lower() if isinstance(typed, str) else ""
    return {**payload, "production_unit": typed if typed in PRODUCTION_UNITS else OTHER_UNIT}


class _Published(Event):
    topic = MENTORING


@register
class MentorAssigned(_Published):
    event_type = "MentorAssigned"
    group_id: Id
    tks_id: Id
    province_code: ProvinceCode
    regency_code: RegencyCode
    assigned_on: date


@register
class MentorUnassigned(_Published):
    event_type = "MentorUnassigned"
    group_id: Id
    tks_id: Id
    reason: Literal["tks_left", "reassigned", "group_dissolved", "other"]
    unassigned_on: date


class _ReportFigures(_Published):
    group_id: Id
    tks_id: Id
    period: Period
    revenue: Rupiah
    production_units: int = Field(ge=0)
    members_active: int = Field(ge=0)
    new_workers: int = Field(ge=0)
    support: tuple[Support, ...] = ()
    lpj_help: bool = False
    on_time: bool


class _Report(_ReportFigures):
    schema_version = 2
    production_unit: ProductionUnit = Field(description="what production_units counts")


@register
class ReportFiled(_Report):
    event_type = "ReportFiled"
    filed_on: date | None = Field(
        None, description="the day the report was filed, as sent (by default the day in the "
                          "group's time zone): `on_time` compares it with the deadline. Absent "
                          "from reports filed before 2026-12-02")


@register
class ReportAmended(_Report):
    event_type = "ReportAmended"


contract_upcaster(ReportFiled.event_type, 1)(_unit_text_to_code)
contract_upcaster(ReportAmended.event_type, 1)(_unit_text_to_code)


@register
class ReportOverdue(_Published):
    event_type = "ReportOverdue"
    group_id: Id
    tks_id: Id
    period: Period


@register
class PeriodClosed(_Published):
    event_type = "PeriodClosed"
    period: Period
    due: int = Field(ge=0)
    filed: int = Field(ge=0)
    overdue: int = Field(ge=0)


# Superseded versions. Messages of these versions stay on the retained topic for ever, so their
# models stay registered (decodable, documented); the kernel upcasts them to the current version
# on read. Never construct them to publish.


class _ReportV1(_ReportFigures):
    schema_version = 1
    production_unit: str = Field(min_length=1, max_length=40)


@register
class ReportFiledV1(_ReportV1):
    """Superseded by ReportFiled v2: free-text production unit."""

    event_type = "ReportFiled"


@register
class ReportAmendedV1(_ReportV1):
    """Superseded by ReportAmended v2: free-text production unit."""

    event_type = "ReportAmended"
