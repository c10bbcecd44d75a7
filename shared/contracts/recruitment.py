"""Topic `tkm.recruitment.v1`; the message key is the stream id: `tks-<id>`, `round-<id>`,
`vacancy-<id>`."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.common import Id, ProvinceCode, RegencyCode, Year
from shared.envelope import Event, register
from shared.topics import RECRUITMENT


class _Published(Event):
    topic = RECRUITMENT


class Quota(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")
    province_code: ProvinceCode
    regency_code: RegencyCode | None = None
    places: int = Field(ge=1)


@register
class RecruitmentRoundOpened(_Published):
    event_type = "RecruitmentRoundOpened"
    round_id: Id
    year: Year
    stage: int = Field(ge=1, le=3, description="briefing stage (tahap) I, II or III")
    quotas: tuple[Quota, ...]


@register
class RecruitmentRoundClosed(_Published):
    event_type = "RecruitmentRoundClosed"
    round_id: Id
    year: Year
    stage: int = Field(ge=1, le=3)
    recruited: int = Field(ge=0)


@register
class TksRecruited(_Published):
    event_type = "TksRecruited"
    tks_id: Id
    round_id: Id
    year: Year
    stage: int = Field(ge=1, le=3)
    province_code: ProvinceCode
    regency_code: RegencyCode
    contract_start: date
    contract_end: date


@register
class TksContractRenewed(_Published):
    event_type = "TksContractRenewed"
    tks_id: Id
    year: Year = Field(description="the year of the new contract")
    province_code: ProvinceCode
    regency_code: RegencyCode
    contract_start: date
    contract_end: date
    evaluation_score: float | None = None


@register
class TksReleased(_Published):
    event_type = "TksReleased"
    tks_id: Id
    year: Year
    province_code: ProvinceCode
    regency_code: RegencyCode
    reason: Literal["evaluation", "contract_ended", "misconduct", "other"]
    effective_date: date


@register
class TksResigned(_Published):
    event_type = "TksResigned"
    tks_id: Id
    year: Year
    province_code: ProvinceCode
    regency_code: RegencyCode
    effective_date: date


@register
class VacancyOpened(_Published):
    event_type = "VacancyOpened"
    vacancy_id: Id
    year: Year = Field(description="the year the vacancy is to be filled")
    province_code: ProvinceCode
    regency_code: RegencyCode
    replaces_tks_id: Id | None = None
    reason: Literal["replacement", "resignation", "new_place"]
