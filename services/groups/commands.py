"""Commands of the groups service (also the HTTP request bodies)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.common import Id
from shared.contracts.groups import DissolutionReason, LpjReturnReason, RejectionReason

# Upper bounds, so an absurd number is a 422 rather than an overflow deeper down: rupiah far above
# any programme budget yet well inside bigint; counts inside a Postgres integer.
MAX_RUPIAH = 10**15
MAX_COUNT = 2**31 - 1
MAX_NOTE = 500
RupiahIn = Annotated[int, Field(ge=0, le=MAX_RUPIAH, description="whole rupiah")]
Note = Annotated[str | None, Field(
    max_length=MAX_NOTE, description="the officer's own words: kept inside the groups "
    "service, shown only to the ministry and the group's provincial officer, never published")]


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemberIn(_Command):
    nik: str = Field(description="16-digit NIK; the birth date is read from it",
                     examples=["3201014506990001"])
    name: str = Field(max_length=200)
    phone: str | None = Field(None, max_length=32, examples=["081234567890"])


class RegisterGroup(_Command):
    year: int = Field(ge=2000, le=2100, examples=[2023])
    stage: str = Field("pemula", examples=["pemula"])
    regency_code: str = Field(description="Kemendagri code, 4 digits", examples=["3201"])
    business_type: str = Field(description="a code from GET /business-types",
                               examples=["tailoring"])
    name: str = Field(max_length=200, examples=["KUB Maju Bersama"])
    external_ref: str | None = Field(None, max_length=64,
                                     description="the regional office's own reference")
    members: list[MemberIn] = Field(max_length=200)


class ChangeMembers(_Command):
    members: list[MemberIn] = Field(max_length=200, description="the whole new member list")


class RejectGroup(_Command):
    reason_code: RejectionReason
    note: Note = None


class FundGroup(_Command):
    tranche: int = Field(1, ge=1, le=MAX_COUNT,
                         description="1 for the first disbursement to the group")
    amount: int = Field(gt=0, le=MAX_RUPIAH, description="whole rupiah", examples=[20_000_000])
    disbursed_on: date
    budget_year: int = Field(ge=2000, le=2100, examples=[2023])


class FundItem(FundGroup):
    group_id: Id


class ApproveGroups(_Command):
    group_ids: list[Id] = Field(min_length=1)


class FundGroups(_Command):
    items: list[FundItem] = Field(min_length=1)


class SubmitLpj(_Command):
    tools: RupiahIn = Field(description="rupiah spent on tools (alat)")
    materials: RupiahIn = Field(description="rupiah spent on materials (bahan)")
    other: RupiahIn = Field(0, description="rupiah spent on anything else")
    evidence_count: int = Field(ge=0, le=MAX_COUNT,
                                description="receipts, photos and other evidence")


class ReturnLpj(_Command):
    reason_code: LpjReturnReason
    note: Note = None


class RecordBimtek(_Command):
    subject: str = Field(min_length=1, max_length=200, examples=["Bimtek kelembagaan"])
    held_on: date


class RecordProductEvidence(_Command):
    product: str = Field(min_length=1, max_length=200)
    evidence_count: int = Field(ge=1, le=MAX_COUNT)
    recorded_on: date


class RecordExpo(_Command):
    expo: str = Field(min_length=1, max_length=200)
    place: str = Field(min_length=1, max_length=200)
    held_on: date


class DissolveGroup(_Command):
    reason_code: DissolutionReason
    note: Note = None
