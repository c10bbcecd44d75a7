"""Topic `tkm.groups.v1`, keyed by the group's stream id. Member counts only: no member NIKs or
names.

Reasons (rejection, LPJ return, dissolution) travel as codes from the lists below, never as free
text: an officer's own words may name members, so the groups service keeps them inside. Version 1
of those three events carried free text; it is upcast to version 2 with the code "other" and the
text dropped.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal, get_args

from pydantic import Field

from shared.contracts.common import Id, ProvinceCode, RegencyCode, Rupiah, Year
from shared.envelope import Event, register, upcaster
from shared.topics import GROUPS

GroupStage = Literal["pemula", "lanjutan", "pengembangan"]

RejectionReason = Literal["members_employed", "members_ineligible", "duplicate_proposal",
                          "documents_incomplete", "business_not_viable", "other"]
LpjReturnReason = Literal["evidence_missing", "spending_not_allowed", "figures_inconsistent",
                          "balance_unexplained", "other"]
DissolutionReason = Literal["members_left", "business_failed", "merged", "other"]
REJECTION_REASONS: tuple[str, ...] = get_args(RejectionReason)
LPJ_RETURN_REASONS: tuple[str, ...] = get_args(LpjReturnReason)
DISSOLUTION_REASONS: tuple[str, ...] = get_args(DissolutionReason)


def _reason_text_to_code(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 -> v2 of the reason events: the free text is dropped, the code is "other"."""
    upcast = {k: v for k, v in payload.items() if k != "reason"}
    return {**upcast, "reason_code": "other"}


class _Published(Event):
    topic = GROUPS


@register
class GroupRegistered(_Published):
    event_type = "GroupRegistered"
    group_id: Id
    year: Year
    stage: GroupStage
    province_code: ProvinceCode
    regency_code: RegencyCode
    business_type: Id
    member_count: int = Field(ge=1)


@register
class GroupMembersChanged(_Published):
    """The member list changed before funding: the new count (members themselves stay in the
    groups service)."""

    event_type = "GroupMembersChanged"
    group_id: Id
    member_count: int = Field(ge=1)


@register
class GroupApproved(_Published):
    event_type = "GroupApproved"
    group_id: Id


@register
class GroupRejected(_Published):
    """The proposal was rejected, for a reason code (no free text)."""

    event_type = "GroupRejected"
    schema_version = 2
    group_id: Id
    reason_code: RejectionReason


upcaster(GroupRejected.event_type, 1)(_reason_text_to_code)


@register
class GroupFunded(_Published):
    event_type = "GroupFunded"
    group_id: Id
    tranche: int = Field(ge=1, description="1 for the first disbursement to this group")
    amount: Rupiah
    disbursed_on: date
    budget_year: Year
    year: Year
    province_code: ProvinceCode
    regency_code: RegencyCode
    lpj_due_on: date


@register
class AccountabilityReportSubmitted(_Published):
    event_type = "AccountabilityReportSubmitted"
    group_id: Id
    report_id: Id
    tools: Rupiah
    materials: Rupiah
    other: Rupiah
    remaining_balance: Rupiah
    evidence_count: int = Field(ge=0)


@register
class AccountabilityReportAccepted(_Published):
    event_type = "AccountabilityReportAccepted"
    group_id: Id
    report_id: Id


@register
class AccountabilityReportReturned(_Published):
    """The LPJ went back to the group for a reason code (no free text)."""

    event_type = "AccountabilityReportReturned"
    schema_version = 2
    group_id: Id
    report_id: Id
    reason_code: LpjReturnReason


upcaster(AccountabilityReportReturned.event_type, 1)(_reason_text_to_code)


@register
class GroupShowcasedAtExpo(_Published):
    event_type = "GroupShowcasedAtExpo"
    group_id: Id
    expo: str = Field(min_length=1, max_length=200)
    place: str = Field(min_length=1, max_length=200)
    held_on: date


@register
class GroupAdvanced(_Published):
    event_type = "GroupAdvanced"
    group_id: Id
    from_stage: GroupStage
    to_stage: GroupStage


@register
class GroupDissolved(_Published):
    """The group was dissolved, for a reason code (no free text)."""

    event_type = "GroupDissolved"
    schema_version = 2
    group_id: Id
    reason_code: DissolutionReason


upcaster(GroupDissolved.event_type, 1)(_reason_text_to_code)
