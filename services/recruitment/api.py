"""HTTP API of the recruitment service. NIKs are only ever shown masked; agencies see no
personal data at all."""

import logging
import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from services.recruitment import handlers, views
from services.recruitment.commands import (
    BriefApplicant,
    IntakeItem,
    OpenRound,
    RecruitApplicant,
    RegisterApplicant,
    ResignTks,
    ScreenApplicant,
)
from services.recruitment.config import RecruitmentConfig
from shared.auth import Actor, Role, require
from shared.contracts.common import ProvinceCode, RegencyCode, Year
from shared.errors import DomainError, ForbiddenError, NotFoundError
from shared.paging import PageQuery
from shared.privacy import keyring_of
from shared.scope import province_scope
from shared.service import ServiceContext, context

Ctx = Annotated[ServiceContext, Depends(context)]
Admin = Annotated[Actor, Depends(require(Role.ADMIN))]
Officer = Annotated[Actor, Depends(require(Role.ADMIN, Role.PROVINCE))]
Reader = Annotated[Actor, Depends(require(Role.ADMIN, Role.PROVINCE, Role.AGENCY))]
Anyone = Annotated[Actor, Depends(require(Role.ADMIN, Role.PROVINCE, Role.AGENCY, Role.TKS))]
StageFilter = Annotated[int | None, Query(ge=1, le=3)]
TksStatus = Literal["active", "renewed", "released", "resigned"]
VacancyStatus = Literal["open", "filled"]
ApplicantStatus = Literal["registered", "screened", "rejected", "briefed", "recruited"]
audit = logging.getLogger("tkm.audit")


class RoundOut(BaseModel):
    round_id: str
    year: int
    stage: int
    status: str
    places: int


class RoundRow(BaseModel):
    round_id: str
    year: int
    stage: int
    status: str
    recruited: int
    opened_at: datetime
    closed_at: datetime | None


class RoundClosedOut(BaseModel):
    round_id: str
    status: str
    recruited: int


class ApplicantOut(BaseModel):
    applicant_id: str
    nik_masked: str
    year: int
    province_code: str
    status: str | None


class TksOut(BaseModel):
    tks_id: str
    round_id: str
    year: int
    stage: int
    province_code: str
    regency_code: str
    status: str | None
    contract_start: date | None
    contract_end: date | None
    remaining_quota: int | None = None
    vacancy_id: str | None = None


class ItemResult(BaseModel):
    index: int
    status: int = Field(description="201 when done; otherwise the error's status")
    applicant_id: str | None = None
    nik_masked: str | None = None
    tks_id: str | None = None
    regency_code: str | None = None
    contract_start: date | None = None
    contract_end: date | None = None
    error: dict[str, Any] | None = None


class BatchOut(BaseModel):
    done: int
    failed: int
    results: list[ItemResult]


class ApplicantBatch(BaseModel):
    items: list[RegisterApplicant] = Field(min_length=1)


class IntakeBatch(BaseModel):
    items: list[IntakeItem] = Field(min_length=1)


class QuotaFill(BaseModel):
    province_code: str
    regency_code: str | None
    places: int
    recruited: int
    remaining: int


class RoundFillOut(RoundRow):
    places: int
    filled: int
    quotas: list[QuotaFill]


class RosterRow(BaseModel):
    tks_id: str
    year: int
    round_id: str
    stage: int
    recruited_year: int
    province_code: str
    regency_code: str
    status: str
    contract_start: date
    contract_end: date
    evaluation_score: float | None
    ended_on: date | None
    end_reason: str | None
    nik_masked: str | None = Field(None, description="region only; not shown to agencies")
    full_name: str | None = Field(None, description="not shown to agencies")
    sex: str | None = None
    birth_date: date | str | None = Field(None, description="the ministry and the TKS itself "
                                                           "only; `[erased]` once erased")
    age: int | None = Field(None, description="in years; instead of the birth date")
    education: str | None = None
    phone: str | None = None
    email: str | None = None


class Page(BaseModel):
    total: int
    limit: int
    offset: int


class RosterPage(Page):
    items: list[RosterRow]


class TksRecordOut(BaseModel):
    tks_id: str
    contracts: list[RosterRow]


class Rejections(BaseModel):
    reason: str
    count: int


class FunnelOut(BaseModel):
    year: int
    province_code: str | None
    registered: int
    screened: int
    briefed: int
    recruited: int
    rejected: int
    rejections: list[Rejections]


class Totals(BaseModel):
    registered: int = Field(description="applicants registered for the year")
    screened: int
    briefed: int
    recruited: int
    rejected: int
    tks: int = Field(description="TKS with a contract in the year (first or renewed)")
    tks_active: int
    tks_renewed: int = Field(description="continued into the next year after evaluation")
    tks_released: int
    tks_resigned: int
    vacancies_open: int
    vacancies_filled: int


class ProvinceTotals(Totals):
    province_code: str


class StatsOut(BaseModel):
    year: int
    province_code: str | None = Field(description="the province asked for; null: national")
    national: Totals = Field(description="the sum of the provinces below")
    provinces: list[ProvinceTotals]


class VacancyRow(BaseModel):
    vacancy_id: str
    year: int
    province_code: str
    regency_code: str
    reason: str
    replaces_tks_id: str | None
    status: str
    filled_by_tks_id: str | None
    filled_in_round_id: str | None
    opened_at: datetime
    filled_at: datetime | None


class VacancyPage(Page):
    items: list[VacancyRow]


class ApplicantRow(BaseModel):
    applicant_id: str
    year: int
    nik_masked: str = Field(description="region only (first 6 digits)")
    nik: str | None = Field(None, description="the full NIK: ministry_admin with "
                                              "`?reveal=nik` only, and audited")
    full_name: str
    sex: str
    birth_date: date | str | None = Field(None, description="the ministry only; `[erased]` "
                                                           "once erased")
    age: int | None = Field(None, description="in years; null once erased")
    education: str
    province_code: str
    regency_code: str
    phone: str | None = Field(None, description="E.164; null when not given")
    email: str | None = Field(None, description="null when not given")
    status: str
    passed_screening: bool
    rejection_reason: str | None
    rejection_note: str | None
    briefing_stage: int | None
    briefing_city: str | None
    briefed_on: date | None
    registered_at: datetime


class ApplicantPage(Page):
    items: list[ApplicantRow]


def _personal(actor: Actor, row: dict[str, Any]) -> dict[str, Any]:
    """What a role sees of a person: a provincial officer the region-masked NIK, sex and age,
    not the birth date (beside the region and sex it narrows the NIK to its serial)."""
    if actor.role is Role.PROVINCE:
        row.pop("birth_date", None)
    return row


def _batch(results: list[dict[str, Any]]) -> BatchOut:
    done = sum(1 for r in results if r["status"] == 201)
    return BatchOut(done=done, failed=len(results) - done,
                    results=[ItemResult(**r) for r in results])


def make_router(config: RecruitmentConfig) -> APIRouter:
    router = APIRouter()
    limits = config.limits

    def check_batch_size(n: int) -> None:
        if n > limits.batch_max_items:
            raise DomainError(f"at most {limits.batch_max_items} items a call", field="items")

    @router.post("/rounds", status_code=201, response_model=RoundOut, tags=["rounds"])
    async def open_round(body: OpenRound, ctx: Ctx, actor: Admin) -> dict:
        """Open a recruitment round for a year and stage with quotas per province or regency."""
        return await handlers.open_round(ctx, body, actor)

    @router.get("/rounds", response_model=list[RoundRow], tags=["rounds"])
    async def list_rounds(ctx: Ctx, actor: Reader, year: Year | None = None,
                          stage: StageFilter = None) -> list[dict]:
        return await views.rounds(ctx.pool, year, stage)

    @router.get("/rounds/{round_id}", response_model=RoundFillOut, tags=["rounds"])
    async def quota_fill(round_id: uuid.UUID, ctx: Ctx, actor: Reader) -> dict:
        """The round with its quota fill (a provincial officer sees its province's quotas)."""
        fill = await views.round_fill(ctx.pool, str(round_id), province_scope(actor, None))
        if fill is None:
            raise NotFoundError("no such round", field="round_id")
        return fill

    @router.post("/rounds/{round_id}/close", response_model=RoundClosedOut, tags=["rounds"])
    async def close_round(round_id: uuid.UUID, ctx: Ctx, actor: Admin) -> dict:
        return await handlers.close_round(ctx, str(round_id), actor)

    @router.post("/rounds/{round_id}/recruitments", status_code=201, response_model=TksOut,
                 tags=["recruitment"])
    async def recruit(round_id: uuid.UUID, body: RecruitApplicant,
                      ctx: Ctx, actor: Officer) -> dict:
        """Recruit a briefed applicant into a regency; beyond the quota: 422 with
        `remaining_quota`. The TKS id is the applicant id."""
        return await handlers.recruit_applicant(ctx, str(round_id), body, actor)

    @router.post("/rounds/{round_id}/recruitments:batch", response_model=BatchOut,
                 tags=["recruitment"])
    async def intake(round_id: uuid.UUID, body: IntakeBatch,
                     ctx: Ctx, actor: Officer) -> BatchOut:
        """Register, pass, brief (in the round's stage) and recruit many applicants at once;
        results per item, a refused item changes nothing."""
        check_batch_size(len(body.items))
        return _batch(await handlers.intake(ctx, str(round_id), body.items, config, actor))

    @router.post("/applicants", status_code=201, response_model=ApplicantOut,
                 tags=["applicants"])
    async def register(body: RegisterApplicant, ctx: Ctx, actor: Officer) -> dict:
        """Register an applicant; the same NIK twice in a year is a 409 naming the applicant."""
        return await handlers.register_applicant(ctx, body, config, actor)

    @router.post("/applicants:batch", response_model=BatchOut, tags=["applicants"])
    async def register_many(body: ApplicantBatch, ctx: Ctx, actor: Officer) -> BatchOut:
        check_batch_size(len(body.items))
        return _batch(await handlers.register_applicants(ctx, body.items, config, actor))

    @router.get("/applicants", response_model=ApplicantPage, tags=["applicants"])
    async def list_applicants(page: PageQuery, ctx: Ctx, actor: Officer, year: Year,
                              province_code: ProvinceCode | None = None,
                              status: ApplicantStatus | None = None) -> dict:
        found = await views.applicants(ctx.pool, keyring_of(ctx), page=page, year=year,
                                       province_code=province_scope(actor, province_code),
                                       status=status)
        found["items"] = [_personal(actor, dict(r)) for r in found["items"]]
        return found

    @router.get("/applicants/{applicant_id}", response_model=ApplicantRow, tags=["applicants"])
    async def get_applicant(applicant_id: uuid.UUID, ctx: Ctx, actor: Officer,
                            reveal: Annotated[Literal["nik"] | None, Query(
                                description="`nik`: the full NIK (ministry_admin only; "
                                            "every such read is audited)")] = None) -> dict:
        if reveal and actor.role is not Role.ADMIN:
            raise ForbiddenError("only the ministry may reveal a NIK", field="reveal")
        row = await views.applicant(ctx.pool, keyring_of(ctx), str(applicant_id))
        if row is None:
            raise NotFoundError("no such applicant", field="applicant_id")
        actor.ensure_province(row["province_code"])
        if reveal:
            row["nik"] = await views.applicant_nik(ctx.pool, keyring_of(ctx), str(applicant_id))
            audit.warning("NIK revealed: actor=%s applicant=%s", actor.id, applicant_id)
        return _personal(actor, row)

    @router.post("/applicants/{applicant_id}/screening", response_model=ApplicantOut,
                 tags=["applicants"])
    async def screen(applicant_id: uuid.UUID, body: ScreenApplicant,
                     ctx: Ctx, actor: Officer) -> dict:
        return await handlers.screen_applicant(ctx, str(applicant_id), body, config, actor)

    @router.post("/applicants/{applicant_id}/briefing", response_model=ApplicantOut,
                 tags=["applicants"])
    async def brief(applicant_id: uuid.UUID, body: BriefApplicant,
                    ctx: Ctx, actor: Officer) -> dict:
        return await handlers.brief_applicant(ctx, str(applicant_id), body, actor)

    @router.get("/tks", response_model=RosterPage, response_model_exclude_unset=True,
                tags=["tks"])
    async def roster(page: PageQuery, ctx: Ctx, actor: Reader, year: Year | None = None,
                     stage: StageFilter = None,
                     province_code: ProvinceCode | None = None,
                     regency_code: RegencyCode | None = None,
                     status: TksStatus | None = None) -> dict:
        """TKS by contract year (one row per TKS and year). Agencies see no personal data."""
        found = await views.roster(ctx.pool, keyring_of(ctx),
                                   personal=actor.role is not Role.AGENCY,
                                   page=page, year=year, stage=stage,
                                   province_code=province_scope(actor, province_code,
                                                                regency_code),
                                   regency_code=regency_code, status=status)
        found["items"] = [_personal(actor, dict(r)) for r in found["items"]]
        return found

    @router.get("/tks/{tks_id}", response_model=TksRecordOut, response_model_exclude_unset=True,
                tags=["tks"])
    async def tks_record(tks_id: uuid.UUID, ctx: Ctx, actor: Anyone) -> dict:
        """A TKS with its contracts; a TKS may read its own record."""
        actor.ensure_tks(str(tks_id))
        contracts = await views.tks_contracts(ctx.pool, keyring_of(ctx), str(tks_id),
                                              personal=actor.role is not Role.AGENCY)
        if not contracts:
            raise NotFoundError("no such TKS", field="tks_id")
        if actor.role is Role.PROVINCE and contracts[0]["province_code"] != actor.province_code:
            raise ForbiddenError("this TKS serves in another province", field="tks_id")
        return {"tks_id": str(tks_id), "contracts": [_personal(actor, dict(c)) for c in contracts]}

    @router.post("/tks/{tks_id}/resignation", response_model=TksOut, tags=["tks"])
    async def resign(tks_id: uuid.UUID, body: ResignTks, ctx: Ctx, actor: Officer) -> dict:
        """The TKS leaves; by default a vacancy opens in its regency for the same year."""
        return await handlers.resign_tks(ctx, str(tks_id), body, actor)

    @router.get("/funnel", response_model=FunnelOut, tags=["queries"])
    async def funnel(ctx: Ctx, actor: Reader, year: Year,
                     province_code: ProvinceCode | None = None) -> dict:
        """Applicants of a year by how far they got (by domicile province)."""
        return await views.funnel(ctx.pool, year, province_scope(actor, province_code))

    @router.get("/stats", response_model=StatsOut, tags=["queries"])
    async def stats(ctx: Ctx, actor: Reader, year: Year,
                    province_code: ProvinceCode | None = None) -> dict:
        """A year's national totals and one row per province, in one call: applicants by how
        far they got (by domicile province), TKS contracted for the year by status (by the
        province served), vacancies of the year. A provincial officer sees its province."""
        return await views.stats(ctx.pool, year, province_scope(actor, province_code))

    @router.get("/vacancies", response_model=VacancyPage, tags=["queries"])
    async def vacancies(page: PageQuery, ctx: Ctx, actor: Reader, year: Year | None = None,
                        province_code: ProvinceCode | None = None,
                        regency_code: RegencyCode | None = None,
                        status: VacancyStatus | None = "open") -> dict:
        return await views.vacancies(ctx.pool, page=page, year=year,
                                     province_code=province_scope(actor, province_code),
                                     regency_code=regency_code, status=status)

    return router
