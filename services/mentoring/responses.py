"""What the mentoring API answers: one model per shape, so the OpenAPI document tells clients
what they get. Extra fields are allowed (a field added by a view is passed on, never dropped)."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class Assigned(Out):
    group_id: str
    tks_id: str
    assigned_on: date
    previous_tks_id: str | None = None
    caseload: int | None = None


class Suggestions(Out):
    suggestions: list[dict[str, Any]] = Field(description="group, TKS and regency per proposal")
    unplaced: list[dict[str, Any]]


class Applied(Out):
    assigned: int
    skipped: list[dict[str, Any]]
    unplaced: list[dict[str, Any]]


class AssignBatchItem(Out):
    index: int
    group_id: str
    tks_id: str
    status: str = Field(description="assigned, refused, not_assigned or unknown")
    assigned_on: date | None = None
    previous_tks_id: str | None = None
    caseload: int | None = None
    error: dict[str, Any] | None = None


class AssignBatchResult(Out):
    assigned: int
    refused: int
    results: list[AssignBatchItem]


class UnassignedPage(Out):
    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int


class Filed(Out):
    group_id: str
    period: str
    tks_id: str
    filed_on: date = Field(description="the day filed, as sent (default: today in the group's "
                                       "time zone); on_time compares it with the deadline")
    on_time: bool
    deadline: date


class Amended(Out):
    group_id: str
    period: str
    tks_id: str
    amended: bool
    on_time: bool


class BatchItemResult(Out):
    index: int
    group_id: str
    period: str
    status: str = Field(description="filed, refused, not_written or unknown")
    filed_on: date | None = None
    on_time: bool | None = None
    error: dict[str, Any] | None = None


class BatchResult(Out):
    filed: int
    refused: int
    results: list[BatchItemResult]


class Closure(Out):
    period: str
    due: int
    filed: int
    overdue: int
    deadline: date


class PeriodStatus(Out):
    period: str
    deadline: date
    closed: bool


class OverdueList(Out):
    period: str
    overdue: list[dict[str, Any]]


class ReportCounts(Out):
    filed: int
    on_time: int
    overdue: int
    pending: int
    due: int


class TksListed(Out):
    tks_id: str
    province_code: str
    regency_code: str
    contract_year: int
    active: bool
    left_on: date | None = None
    caseload: int
    filed: int
    on_time: int
    overdue: int


class TksPage(Out):
    items: list[TksListed]
    total: int
    limit: int
    offset: int


class TksView(Out):
    tks_id: str
    province_code: str
    groups: list[dict[str, Any]]
    reports: ReportCounts
    overdue: list[dict[str, Any]]
    pending: list[dict[str, Any]]
    caseload_cap: int


class GroupView(Out):
    group_id: str
    province_code: str
    assignments: list[dict[str, Any]]
    reports: list[dict[str, Any]]
    overdue: list[dict[str, Any]]


class RegionSummary(Out):
    province_code: str | None
    regency_code: str | None
    year: int | None
    groups_funded: int
    groups_mentored: int
    tks_active: int
    compliance_rate: float | None
    filing_rate: float | None
    periods: list[dict[str, Any]]


class Totals(Out):
    groups_funded: int = Field(description="groups of the programme year funded, not dissolved")
    groups_mentored: int = Field(description="of those, with a mentor now")
    groups_unassigned: int = Field(description="of those, waiting for a mentor")
    tks_active: int = Field(description="TKS serving (contract not ended, not left)")
    tks_mentoring: int = Field(description="TKS who mentored a group in the year (or period)")
    filed: int = Field(description="monthly reports filed on the year's (or period's) months")
    on_time: int
    late: int = Field(description="filed after the deadline")
    overdue: int = Field(description="flagged unfiled when the month closed")
    due_closed: int = Field(description="reports due on closed months (filed + overdue)")
    compliance_rate: float | None = Field(description="on time / due, over closed months")
    filing_rate: float | None = Field(description="filed / due, over closed months")


class ProvinceTotals(Totals):
    province_code: str


class Stats(Out):
    year: int
    period: str | None
    province_code: str | None = Field(description="the province asked for; null: all")
    national: Totals = Field(description="the sum of the provinces below")
    provinces: list[ProvinceTotals]
