"""Commands (also the HTTP request bodies). Shapes only: the rules are in domain.py."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contracts.common import ProvinceCode, RegencyCode
from shared.inputs import ProgrammeDate, Text, Whole, Year

Stage = Whole(ge=1, le=3)  # strict: 1.0 and true are not a stage
# a person applying was born in the last century or this one, and not in the future
BirthDate = Annotated[date, Field(ge=date(1900, 1, 1))]


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuotaPlaces(_Command):
    province_code: ProvinceCode
    regency_code: RegencyCode | None = Field(None, description="omit for the whole province")
    places: Whole(ge=1, le=100_000)


class OpenRound(_Command):
    year: Year
    stage: Stage = Field(description="briefing stage (tahap) I, II or III")
    quotas: list[QuotaPlaces] = Field(min_length=1, max_length=2000)
    round_id: uuid.UUID | None = Field(None, description="given by the caller to make retries "
                                                         "safe; a new id when omitted")


class RegisterApplicant(_Command):
    year: Year = Field(description="the programme year applied for")
    nik: Text(32) = Field(description="16-digit NIK; shown masked afterwards")
    full_name: Text(200)
    sex: Literal["F", "M"]
    birth_date: BirthDate
    education: Text(10) = Field(examples=["S1"])
    domicile_regency_code: RegencyCode
    phone: Text(30) | None = Field(None, min_length=3, examples=["0812-3456-7890"],
                                   description="optional unless the programme requires it; "
                                               "checked and normalised (E.164) when given")
    email: Text(254) | None = Field(None, min_length=3, json_schema_extra={"format": "email"},
                                    description="optional unless the programme requires it; "
                                                "checked when given")


class ScreenApplicant(_Command):
    passed: bool
    reason: Text(64) | None = Field(None, description="required when not passed (a configured "
                                                      "code)")
    note: Text(500, multiline=True) | None = None


class BriefApplicant(_Command):
    stage: Stage
    city: Text(100)
    briefed_on: ProgrammeDate


class RecruitApplicant(_Command):
    applicant_id: uuid.UUID
    regency_code: RegencyCode
    contract_start: ProgrammeDate | None = Field(None, description="default: the briefing date")
    contract_end: ProgrammeDate | None = Field(None,
                                               description="default: 31 December of the year")
    vacancy_id: uuid.UUID | None = Field(None, description="an open vacancy this fills")


class Briefing(_Command):
    city: Text(100)
    briefed_on: ProgrammeDate


class IntakeItem(_Command):
    """Recruit in one step: either a new applicant (registered, passed and briefed in the
    round's stage here) or an existing one by id (briefed here if `briefing` is given)."""

    applicant: RegisterApplicant | None = None
    applicant_id: uuid.UUID | None = None
    briefing: Briefing | None = None
    regency_code: RegencyCode
    contract_start: ProgrammeDate | None = None
    contract_end: ProgrammeDate | None = None
    vacancy_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _one_applicant(self) -> IntakeItem:
        if (self.applicant is None) == (self.applicant_id is None):
            raise ValueError("give either applicant or applicant_id")
        if self.applicant is not None and self.briefing is None:
            raise ValueError("a new applicant needs its briefing")
        return self


class ResignTks(_Command):
    effective_date: ProgrammeDate
    open_vacancy: bool = Field(True, description="open a vacancy in the same regency and year")
