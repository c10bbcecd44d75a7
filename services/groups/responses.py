"""What the groups API answers: one model per shape, so the OpenAPI document tells clients what
they get. Extra fields are allowed (a field added by a view is passed on, never dropped)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class BusinessType(Out):
    code: str
    name: str | None = None


class GroupSummary(Out):
    group_id: str
    status: str
    stage: str
    year: int
    province_code: str
    regency_code: str
    member_count: int
    tranches: int
    funded_total: int


class Advanced(GroupSummary):
    from_stage: str


class Funded(GroupSummary):
    tranche: int
    amount: int
    lpj_due_on: str
    planned_tools: int
    planned_materials: int


class PendingRequest(Out):
    """A money command awaiting a checker (four eyes, shared.approvals): answered 202; a
    checker grants it with `POST /approvals/{request_id}/grant`, whose `result` is then what
    the command answers when carried out."""

    state: Literal["pending"]
    request_id: str
    command_type: str = Field(description="fund, change_tranche or accept_lpj")
    target: str = Field(description="the stream the command acts on: group-<group_id>")
    expires_at: str = Field(description="UTC; a request not decided by then expires")
    checker_roles: list[str] = Field(description="who may grant or reject it (not its maker)")
    group_id: str
    report_id: str | None = None


class LpjSubmitted(Out):
    group_id: str
    report_id: str
    status: str
    remaining_balance: int


class LpjReviewed(Out):
    group_id: str
    report_id: str
    status: str = Field(description="accepted or returned")


class GroupRow(Out):
    group_id: str
    name: str
    external_ref: str | None = None
    year: int
    stage: str
    province_code: str
    regency_code: str
    business_type: str
    status: str
    status_reason_code: str | None = None
    status_note: str | None = Field(None, description="ministry and provincial officers only")
    member_count: int
    tranches: int
    funded_total: int
    accounted_total: int
    remaining_balance: int
    last_budget_year: int | None = None
    last_disbursed_on: str | None = None
    lpj_status: str
    lpj_due_on: str | None = None
    bimtek_count: int
    product_evidence_count: int
    expo_count: int
    registered_on: str | None = Field(None, description="the registration date: the day it was "
                                      "registered, or the past date the ministry gave")
    registration_backdated: bool = Field(False, description="registered_on was given by the "
                                         "ministry (a past year loaded as it happened)")
    recorded_at: str = Field(description="when the registration was recorded (UTC)")
    registered_at: str = Field(description="deprecated: the same as recorded_at")
    updated_at: str


class GroupPage(Out):
    """shared.paging: walk with offset += limit until offset >= total."""

    items: list[GroupRow]
    total: int
    limit: int
    offset: int
    page: int | None = Field(None, description="deprecated: only when page was sent")
    page_size: int | None = Field(None, description="deprecated: only when page_size was sent")


class Member(Out):
    nik: str = Field(description="region only (first 6 digits); the full NIK only with "
                                 "`?reveal=nik` (ministry_admin, audited)")
    name: str
    phone: str | None = None


class LpjReport(Out):
    report_id: str
    tools: int
    materials: int
    other: int
    remaining_balance: int
    evidence_count: int
    status: str
    reason_code: str | None = None
    note: str | None = None
    submitted_at: str
    reviewed_at: str | None = None


class Activity(Out):
    kind: str
    held_on: str
    evidence_count: int | None = None


class GroupDetail(GroupRow):
    lpj_reports: list[LpjReport]
    activities: list[Activity]
    members: list[Member] | None = Field(None, description="ministry and the group's "
                                                           "provincial officer only")


class ItemOutcome(Out):
    group_id: str | None = None
    status: int | str = Field(description="the item's HTTP status: 200/201 done, else its error's")
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    written: str | None = None


class BulkOutcome(Out):
    batch_id: str | None = Field(None, description=(
        "four-eyes bulk commands (fundings, LPJ acceptances): the batch every item's request "
        "belongs to (`GET /approvals?batch_id=`, `POST /approvals/grant`)"))
    results: list[ItemOutcome]


class RowError(Out):
    row: int
    field: str | None = None
    reason: str
    group_name: str | None = None


class ImportedGroup(Out):
    group_id: str | None = None
    group_name: str | None = None
    first_row: int | None = None
    member_rows: int | None = None
    status: str


class ImportReport(Out):
    rows: int
    groups: int
    registered: int
    already_registered: int
    refused: int
    errors: list[RowError]
    errors_total: int
    results: list[ImportedGroup]


class PeopleReached(Out):
    year: int
    province_code: str
    groups_registered: int
    members_registered: int
    groups_funded: int
    members_funded: int


class FundingRow(Out):
    budget_year: int
    province_code: str
    groups_funded: int
    tranches: int
    amount_disbursed: int
    amount_accounted: int
