"""Commands (also the HTTP request bodies). Shapes only: the rules are in domain.py."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contracts.common import ProvinceCode, RegencyCode, Year

Stage = Literal[1, 2, 3]


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuotaPlaces(_Command):
    province_code: ProvinceCode
    regency_code: RegencyCode | None = Field(None, description="omit for the whole province")
    places: int = Field(ge=1, le=100_000)


class OpenRound(_Command):
    year: Year
    stage: Stage = Field(description="briefing stage (tahap) I, II or III")
    quotas: list[QuotaPlaces] = Field(min_length=1, max_length=2000)
    round_id: uuid.UUID | None = Field(None, description="given by the caller to make retries "
                                                         "safe; a new id when omitted")


class RegisterApplicant(_Command):
    year: Year = Field(description="the programme year applied for")
    nik: str = Field(max_length=32, description="16-digit NIK; shown masked afterwards")
    full_name: str = Field(min_length=1, max_length=200)
    sex: Literal["F", "M"]
    birth_date: date
    education: str = Field(min_length=1, max_length=10, examples=["S1"])
    domicile_regency_code: RegencyCode
    phone: str = Field(min_length=3, max_length=30, examples=["0812-3456-7890"])
    email: str = Field(min_length=3, max_length=254, json_schema_extra={"format": "email"})


class ScreenApplicant(_Command):
    passed: bool
    reason: str | None = Field(None, description="required when not passed (a configured code)")
    note: str | None = Field(None, max_length=500)


class BriefApplicant(_Command):
    stage: Stage
    city: str = Field(min_length=1, max_length=100)
    briefed_on: date


class RecruitApplicant(_Command):
    applicant_id: uuid.UUID
    regency_code: RegencyCode
    contract_start: date | None = Field(None, description="default: the briefing date")
    contract_end: date | None = Field(None, description="default: 31 December of the year")
    vacancy_id: uuid.UUID | None = Field(None, description="an open vacancy this fills")


class Briefing(_Command):
    city: str = Field(min_length=1, max_length=100)
    briefed_on: date


class IntakeItem(_Command):
    """Recruit in one step: either a new applicant (registered, passed and briefed in the
    round's stage here) or an existing one by id (briefed here if `briefing` is given)."""

    applicant: RegisterApplicant | None = None
    applicant_id: uuid.UUID | None = None
    briefing: Briefing | None = None
    regency_code: RegencyCode
    contract_start: date | None = None
    contract_end: date | None = None
    vacancy_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _one_applicant(self) -> IntakeItem:
        if (self.applicant is None) == (self.applicant_id is None):
            raise ValueError("give either applicant or applicant_id")
        if self.applicant is not None and self.briefing is None:
            raise ValueError("a new applicant needs its briefing")
        return self


class ResignTks(_Command):
    effective_date: date
    open_vacancy: bool = Field(True, description="open a vacancy in the same regency and year")
