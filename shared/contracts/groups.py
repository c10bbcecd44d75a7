"""Topic `tkm.groups.v1`, keyed by the group's stream id. Member counts only: no member NIKs or
names."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field

from shared.contracts.common import Id, ProvinceCode, RegencyCode, Rupiah, Year
from shared.envelope import Event, register
from shared.topics import GROUPS

GroupStage = Literal["pemula", "lanjutan", "pengembangan"]


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
    event_type = "GroupRejected"
    group_id: Id
    reason: str = Field(min_length=1, max_length=500)


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
    event_type = "AccountabilityReportReturned"
    group_id: Id
    report_id: Id
    reason: str = Field(min_length=1, max_length=500)


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
    event_type = "GroupDissolved"
    group_id: Id
    reason: str = Field(min_length=1, max_length=500)
