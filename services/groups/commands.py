"""Commands of the groups service (also the HTTP request bodies)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.groups import DissolutionReason, LpjReturnReason, RejectionReason
from shared.inputs import Count, ProgrammeDate, Ref, Rupiah, Text, Whole, Year

# Upper bounds, so an absurd number is a 422 rather than an overflow deeper down: rupiah far above
# any programme budget yet well inside bigint; counts inside a Postgres integer.
MAX_RUPIAH = 10**15
MAX_COUNT = 2**31 - 1
MAX_NOTE = 500
RupiahIn = Rupiah
Note = Annotated[Text(MAX_NOTE, multiline=True) | None, Field(
    description="the officer's own words: kept inside the groups "
    "service, shown only to the ministry and the group's provincial officer, never published")]


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemberIn(_Command):
    nik: Text(32) = Field(description="16-digit NIK; the birth date is read from it",
                          examples=["3201014506990001"])
    name: Text(200)
    phone: Text(32) | None = Field(None, examples=["081234567890"])


class RegisterGroup(_Command):
    year: Year
    stage: Text(32) = Field("pemula", examples=["pemula"])
    regency_code: Text(16) = Field(description="Kemendagri code, 4 digits", examples=["3201"])
    business_type: Text(64) = Field(description="a code from GET /business-types",
                                    examples=["tailoring"])
    name: Text(200) = Field(examples=["KUB Maju Bersama"])
    external_ref: Text(64) | None = Field(None,
                                          description="the regional office's own reference")
    members: list[MemberIn] = Field(max_length=200)
    registered_on: ProgrammeDate | None = Field(
        None, description="ministry_admin only: the date a past year's group was registered "
        "(not after today in the regency); ages are measured on the day the year's rules say. "
        "Default: today in the regency. Recorded with who gave it.")


class ChangeMembers(_Command):
    members: list[MemberIn] = Field(max_length=200, description="the whole new member list")


class RejectGroup(_Command):
    reason_code: RejectionReason
    note: Note = None


class FundGroup(_Command):
    tranche: Whole(ge=1) = Field(1, description="1 for the first disbursement to the group")
    amount: Whole(ge=1, le=MAX_RUPIAH, description="whole rupiah") = Field(
        examples=[20_000_000])
    disbursed_on: ProgrammeDate
    budget_year: Year


class FundItem(FundGroup):
    group_id: Ref


class ApproveGroups(_Command):
    group_ids: list[Ref] = Field(min_length=1)


class FundGroups(_Command):
    items: list[FundItem] = Field(min_length=1)


class SubmitLpj(_Command):
    tools: RupiahIn = Field(description="rupiah spent on tools (alat)")
    materials: RupiahIn = Field(description="rupiah spent on materials (bahan)")
    other: RupiahIn = Field(0, description="rupiah spent on anything else")
    evidence_count: Count = Field(description="receipts, photos and other evidence")


class ReturnLpj(_Command):
    reason_code: LpjReturnReason
    note: Note = None


class LpjSubmission(SubmitLpj):
    group_id: Ref


class LpjReview(_Command):
    group_id: Ref
    report_id: Ref


class LpjReturn(ReturnLpj):
    group_id: Ref
    report_id: Ref


class SubmitLpjs(_Command):
    items: list[LpjSubmission] = Field(min_length=1)


class AcceptLpjs(_Command):
    items: list[LpjReview] = Field(min_length=1)


class ReturnLpjs(_Command):
    items: list[LpjReturn] = Field(min_length=1)


class RecordBimtek(_Command):
    subject: Text(200) = Field(examples=["Bimtek kelembagaan"])
    held_on: ProgrammeDate


class RecordProductEvidence(_Command):
    product: Text(200)
    evidence_count: Whole(ge=1)
    recorded_on: ProgrammeDate


class RecordExpo(_Command):
    """Codes only, so nothing typed reaches the published GroupShowcasedAtExpo."""

    expo_code: Text(64) = Field(description="a code from GET /expos",
                                examples=["gelar_produk_tkm_bali"])
    regency_code: Text(16) | None = Field(
        None, description="Kemendagri code of the regency/city where it was held; default: "
        "the expo's own place in the catalogue", examples=["5171"])
    held_on: ProgrammeDate


class DissolveGroup(_Command):
    reason_code: DissolutionReason
    note: Note = None
