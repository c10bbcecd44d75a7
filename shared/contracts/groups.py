"""Topic `tkm.groups.v1`, keyed by the group's stream id. Member counts only: no member NIKs or
names.

Reasons (rejection, LPJ return, dissolution) and expos travel as codes, never as free text: an
officer's own words may name members, so the groups service keeps them inside. Version 1 of those
four events carried free text and is still on the retained topic: its models stay registered (at
the end of this module) and are upcast to the current version with the code "other", the text
dropped. Producers emit only the current classes. Policy: docs/contracts/COMPATIBILITY.md.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal, get_args

from pydantic import Field

from shared.contracts.common import (
    OTHER,
    contract_upcaster,
    CatalogueCode,
    Id,
    ProvinceCode,
    RegencyCode,
    Rupiah,
    Year,
)
from shared.envelope import Event, register
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
    return {**upcast, "reason_code": OTHER}


def _expo_text_to_codes(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 -> v2 of GroupShowcasedAtExpo: the expo's and the place's free text cannot be mapped to
    codes, so both are dropped; the expo becomes "other", the place unknown (None)."""
    upcast = {k: v for k, v in payload.items() if k not in ("expo", "place")}
    return {**upcast, "expo_code": OTHER, "regency_code": None}


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


contract_upcaster(GroupRejected.event_type, 1)(_reason_text_to_code)


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


contract_upcaster(AccountabilityReportReturned.event_type, 1)(_reason_text_to_code)


@register
class GroupShowcasedAtExpo(_Published):
    """The group showed its products at an expo from the groups service's catalogue."""

    event_type = "GroupShowcasedAtExpo"
    schema_version = 2
    group_id: Id
    expo_code: CatalogueCode = Field(
        description='a code from the expo catalogue (GET /expos of the groups service); '
                    '"other" for an expo recorded before version 2')
    regency_code: RegencyCode | None = Field(
        description="Kemendagri code of the regency/city where it was held; null for an expo "
                    "recorded before version 2")
    held_on: date


contract_upcaster(GroupShowcasedAtExpo.event_type, 1)(_expo_text_to_codes)


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


contract_upcaster(GroupDissolved.event_type, 1)(_reason_text_to_code)


# Superseded versions. Messages of these versions stay on the retained topic for ever, so their
# models stay registered (decodable, documented); the kernel upcasts them to the current version
# on read. Never construct them to publish.


class _Superseded(_Published):
    pass


@register
class GroupRejectedV1(_Superseded):
    """Superseded by GroupRejected v2: free-text reason."""

    event_type = "GroupRejected"
    schema_version = 1
    group_id: Id
    reason: str = Field(min_length=1, max_length=500)


@register
class AccountabilityReportReturnedV1(_Superseded):
    """Superseded by AccountabilityReportReturned v2: free-text reason."""

    event_type = "AccountabilityReportReturned"
    schema_version = 1
    group_id: Id
    report_id: Id
    reason: str = Field(min_length=1, max_length=500)


@register
class GroupDissolvedV1(_Superseded):
    """Superseded by GroupDissolved v2: free-text reason."""

    event_type = "GroupDissolved"
    schema_version = 1
    group_id: Id
    reason: str = Field(min_length=1, max_length=500)


@register
class GroupShowcasedAtExpoV1(_Superseded):
    """Superseded by GroupShowcasedAtExpo v2: free-text expo and place."""

    event_type = "GroupShowcasedAtExpo"
    schema_version = 1
    group_id: Id
    expo: str = Field(min_length=1, max_length=200)
    place: str = Field(min_length=1, max_length=200)
    held_on: date
