"""Topic `tkm.mentoring.v1`; the message key is the stream id (the group's mentoring stream;
PeriodClosed: the period's stream)."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field

from shared.contracts.common import Id, Period, ProvinceCode, RegencyCode, Rupiah
from shared.envelope import Event, register
from shared.topics import MENTORING

Support = Literal["partnership", "capital_access", "market_access"]


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


class _Report(_Published):
    group_id: Id
    tks_id: Id
    period: Period
    revenue: Rupiah
    production_units: int = Field(ge=0)
    production_unit: str = Field(min_length=1, max_length=40)
    members_active: int = Field(ge=0)
    new_workers: int = Field(ge=0)
    support: tuple[Support, ...] = ()
    lpj_help: bool = False
    on_time: bool


@register
class ReportFiled(_Report):
    event_type = "ReportFiled"


@register
class ReportAmended(_Report):
    event_type = "ReportAmended"


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
