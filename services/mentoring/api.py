"""HTTP API of the mentoring service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from services.mentoring import handlers, views
from services.mentoring import responses as R
from services.mentoring.config import MentoringConfig, MentoringYearRules
from services.mentoring.domain import MonthlyReport, deadline_of
from shared.auth import Actor, Role, require
from shared.contracts.common import ProvinceCode, RegencyCode
from shared.errors import ConflictError, DomainError, ForbiddenError, NotFoundError
from shared.inputs import REF_PATTERN, Period, ProgrammeDate, Ref
from shared.paging import PageQuery
from shared.rules import RuleBook
from shared.scope import province_scope
from shared.service import ServiceContext, context

PERIOD = r"^\d{4}-(0[1-9]|1[0-2])$"
PeriodPath = Annotated[Period, Path(examples=["2023-05"])]
RefPath = Annotated[str, Path(pattern=REF_PATTERN)]
Ctx = Annotated[ServiceContext, Depends(context)]
# assignments in one POST /assignments/batch (as many as a year's groups of a large province)
MAX_ASSIGNMENTS = 5_000


class AssignMentorRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tks_id: Ref
    assigned_on: ProgrammeDate | None = Field(None,
                                              description="default today; never in the future")


class BatchAssignment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    group_id: Ref
    tks_id: Ref
    assigned_on: ProgrammeDate | None = Field(None,
                                              description="default today; never in the future")


class AssignBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assignments: list[BatchAssignment] = Field(min_length=1)


class ApplySuggestionsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    province_code: ProvinceCode | None = None
    regency_code: RegencyCode | None = None
    assigned_on: ProgrammeDate | None = Field(None, description="default today")
    on_funding_date: bool = Field(
        False, description="date each assignment on its group's funding day (loading history)")


class FileReportRequest(MonthlyReport):
    tks_id: Ref | None = Field(None, description="a TKS files as itself; ministry_admin names "
                                                 "one")
    filed_on: ProgrammeDate | None = Field(
        None, description="default today in the group's time zone (WIB/WITA/WIT); a TKS may "
                          "send only that date, ministry_admin any past date (loading history)")


class AmendReportRequest(MonthlyReport):
    period: Period | None = Field(None, description="taken from the path")
    tks_id: Ref | None = Field(None, description="only the TKS who filed the report may amend "
                                                 "it; ministry_admin may omit it")


class BatchReport(FileReportRequest):
    group_id: Ref


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reports: list[BatchReport] = Field(min_length=1)


def build_router(config: MentoringConfig, book: RuleBook[MentoringYearRules]) -> APIRouter:
    """`book`: the programme rules per year; a group is assigned under its year's policy."""
    router = APIRouter()
    assigners = require(Role.ADMIN, Role.PROVINCE)
    filers = require(Role.ADMIN, Role.TKS)
    aggregate_readers = require(Role.ADMIN, Role.PROVINCE, Role.AGENCY)

    @router.post("/groups/{group_id}/mentor",
                 response_model=R.Assigned, status_code=201, tags=["assignment"],
                 summary="Assign (or reassign) the TKS mentoring a funded group")
    async def assign(group_id: RefPath, body: AssignMentorRequest, ctx: Ctx,
                     actor: Actor = Depends(assigners)) -> dict:
        return await handlers.assign_mentor(ctx, config, book, group_id, body.tks_id,
                                            body.assigned_on, actor)

    @router.get("/assignments/suggestions",
                response_model=R.Suggestions, tags=["assignment"],
                summary="Balanced assignments for every unassigned group in scope")
    async def suggestions(ctx: Ctx, province_code: ProvinceCode | None = None,
                          regency_code: RegencyCode | None = None,
                          actor: Actor = Depends(assigners)) -> dict:
        province_code = province_scope(actor, province_code, regency_code)
        return await handlers.suggest(ctx, config, book, province_code, regency_code)

    @router.post("/assignments/suggestions/apply",
                 response_model=R.Applied, tags=["assignment"],
                 summary="Compute and carry out the suggested assignments in bulk")
    async def apply(body: ApplySuggestionsRequest, ctx: Ctx,
                    actor: Actor = Depends(assigners)) -> dict:
        province_code = province_scope(actor, body.province_code, body.regency_code)
        regency_code = body.regency_code
        return await handlers.apply_suggestions(ctx, config, book, province_code, regency_code,
                                                body.assigned_on, body.on_funding_date, actor)

    @router.post("/assignments/batch",
                 response_model=R.AssignBatchResult, tags=["assignment"],
                 summary="Assign (or reassign) the mentors of many groups; one result per item")
    async def assign_batch(body: AssignBatchRequest, ctx: Ctx,
                           actor: Actor = Depends(assigners)) -> dict:
        """Each item under the single route's rules (roles and province scope, the caseload
        cap and regency policy of the group's programme year, the TKS active, the date not in
        the future nor before the group's last mentor change, no double assignment), decided
        in input order as the same single calls one after the other would be (a group named
        twice is assigned, then reassigned). One transaction per `groups_per_transaction`
        items; a retry under the same Idempotency-Key applies nothing twice."""
        if len(body.assignments) > MAX_ASSIGNMENTS:
            raise DomainError(f"at most {MAX_ASSIGNMENTS} assignments in one batch",
                              field="assignments")
        items = [handlers.AssignItem(i, a.group_id, a.tks_id, a.assigned_on)
                 for i, a in enumerate(body.assignments)]
        results = await handlers.assign_mentors(ctx, config, book, items, actor)
        assigned = sum(r["status"] == "assigned" for r in results)
        return {"assigned": assigned, "refused": len(results) - assigned, "results": results}

    @router.get("/groups/unassigned",
                response_model=R.UnassignedPage, tags=["assignment"],
                summary="Funded groups without a mentor, waiting for (re)assignment")
    async def unassigned(page: PageQuery, ctx: Ctx, province_code: ProvinceCode | None = None,
                         regency_code: RegencyCode | None = None,
                         actor: Actor = Depends(assigners)) -> dict:
        province_code = province_scope(actor, province_code, regency_code)
        async with ctx.pool.acquire() as conn:
            return await views.unassigned_groups(conn, province_code, regency_code, page)

    @router.post("/groups/{group_id}/reports",
                 response_model=R.Filed, status_code=201, tags=["reports"],
                 summary="File the monthly report on a group")
    async def file(group_id: RefPath, body: FileReportRequest, ctx: Ctx,
                   actor: Actor = Depends(filers)) -> dict:
        return await handlers.file_report(
            ctx, config, group_id, body, handlers.author_of(actor, body.tks_id),
            body.filed_on, actor)

    @router.put("/groups/{group_id}/reports/{period}",
                response_model=R.Amended, tags=["reports"],
                summary="Amend a monthly report until its period closes")
    async def amend(group_id: RefPath, period: PeriodPath, body: AmendReportRequest, ctx: Ctx,
                    actor: Actor = Depends(filers)) -> dict:
        if body.period is not None and body.period != period:
            raise DomainError("the body's period differs from the path's", field="period")
        fields = body.model_dump(include=set(MonthlyReport.model_fields) - {"period"})
        report = MonthlyReport(**fields, period=period)
        return await handlers.amend_report(ctx, config, group_id, report,
                                           handlers.amender_of(actor, body.tks_id), actor)

    @router.post("/reports/batch",
                 response_model=R.BatchResult, tags=["reports"],
                 summary="File many monthly reports; one result per item")
    async def batch(body: BatchRequest, ctx: Ctx, actor: Actor = Depends(filers)) -> dict:
        if len(body.reports) > config.batch.max_reports:
            raise DomainError(f"at most {config.batch.max_reports} reports in one batch",
                              field="reports")
        items, refused, seen = [], [], set()
        for i, r in enumerate(body.reports):
            try:
                tks_id = handlers.author_of(actor, r.tks_id)
                if (r.group_id, r.period) in seen:
                    raise ConflictError("the batch holds this group and period twice",
                                        field="period")
                seen.add((r.group_id, r.period))
                items.append(handlers.BatchItem(i, r.group_id, tks_id, r.filed_on, r))
            except DomainError as exc:
                refused.append(handlers.refusal(i, r.group_id, r.period, exc))
        results = await handlers.file_reports(ctx, config, items, refused, actor)
        filed = sum(r["status"] == "filed" for r in results)
        return {"filed": filed, "refused": len(results) - filed, "results": results}

    @router.post("/periods/{period}/close",
                 response_model=R.Closure, tags=["periods"],
                 summary="Flag unfiled due reports overdue and close the month (idempotent)")
    async def close(period: PeriodPath, ctx: Ctx, force: bool = False,
                    actor: Actor = Depends(require(Role.ADMIN))) -> dict:
        return await handlers.close_period(ctx, config, period, force, actor)

    @router.get("/periods/{period}",
                response_model=R.PeriodStatus, tags=["periods"], summary="A month's deadline and closing")
    async def period_status(period: PeriodPath, ctx: Ctx,
                            actor: Actor = Depends(aggregate_readers)) -> dict:
        async with ctx.pool.acquire() as conn:
            closure = await views.period_view(conn, period)
        return {"period": period, "deadline": deadline_of(period, config.reporting.deadline_day),
                "closed": closure is not None, **(closure or {})}

    @router.get("/periods/{period}/overdue",
                response_model=R.OverdueList, tags=["periods"],
                summary="Reports flagged overdue when the month closed")
    async def overdue(period: PeriodPath, ctx: Ctx, province_code: ProvinceCode | None = None,
                      regency_code: RegencyCode | None = None,
                      actor: Actor = Depends(assigners)) -> dict:
        province_code = province_scope(actor, province_code, regency_code)
        async with ctx.pool.acquire() as conn:
            rows = await views.overdue_list(conn, period, province_code, regency_code)
        return {"period": period, "overdue": rows}

    @router.get("/tks",
                response_model=R.TksPage, tags=["queries"],
                summary="The TKS mentoring knows, each with its caseload and report counts")
    async def tks_listing(page: PageQuery, ctx: Ctx, province_code: ProvinceCode | None = None,
                          regency_code: RegencyCode | None = None,
                          actor: Actor = Depends(require(Role.ADMIN, Role.PROVINCE))) -> dict:
        """By TKS id: province, regency, contract year, active, caseload and the reports
        filed, on time and overdue (as `GET /tks/{tks_id}` counts them), a page at a time; a
        provincial officer sees its own province."""
        province_code = province_scope(actor, province_code, regency_code)
        async with ctx.pool.acquire() as conn:
            return await views.tks_list(conn, province_code, regency_code, page)

    @router.get("/tks/{tks_id}",
                response_model=R.TksView, tags=["queries"],
                summary="A TKS: its groups, caseload and reports filed, due and overdue")
    async def tks(tks_id: RefPath, ctx: Ctx,
                  actor: Actor = Depends(require(Role.ADMIN, Role.PROVINCE, Role.TKS))) -> dict:
        actor.ensure_tks(tks_id)
        async with ctx.pool.acquire() as conn:
            view = await views.tks_view(conn, tks_id, handlers.today())
        if view is None:
            raise NotFoundError("TKS unknown to mentoring", field="tks_id")
        actor.ensure_province(view["province_code"])
        rules = (await book.in_force(ctx.pool, view["contract_year"])).rules
        return {**view, "caseload_cap": rules.assignment.caseload_cap}

    @router.get("/groups/{group_id}",
                response_model=R.GroupView, tags=["queries"],
                summary="A group's mentors and its monthly series")
    async def group(group_id: RefPath, ctx: Ctx,
                    actor: Actor = Depends(require(Role.ADMIN, Role.PROVINCE, Role.TKS))) -> dict:
        async with ctx.pool.acquire() as conn:
            view = await views.group_view(conn, group_id)
        if view is None:
            raise NotFoundError("group unknown to mentoring", field="group_id")
        actor.ensure_province(view["province_code"])
        if actor.role is Role.TKS and all(a["tks_id"] != actor.tks_id
                                          for a in view["assignments"]):
            raise ForbiddenError("a TKS sees only the groups it mentors", field="group_id")
        return view

    @router.get("/stats",
                response_model=R.Stats, tags=["queries"],
                summary="A year's (or month's) national totals and one row per province")
    async def stats(ctx: Ctx, year: Annotated[int, Query(ge=2000, le=2100)],
                    period: Annotated[Period | None, Query()] = None,
                    province_code: ProvinceCode | None = None,
                    actor: Actor = Depends(aggregate_readers)) -> dict:
        """Groups of the programme year (funded, mentored, waiting), TKS serving and mentoring,
        monthly reports filed, on time, late and overdue, and compliance over closed months:
        nationally and per province, in one call. A provincial officer sees its province."""
        if period is not None and not period.startswith(f"{year:04d}-"):
            raise DomainError(f"period {period} is not in {year}", field="period")
        async with ctx.pool.acquire() as conn:
            return await views.stats(conn, year, period, province_scope(actor, province_code))

    @router.get("/regencies/{regency_code}/summary",
                response_model=R.RegionSummary, tags=["queries"],
                summary="Report compliance, revenue and workers of a regency/city")
    async def regency_summary(regency_code: Annotated[str, Path(pattern=r"^\d{4}$")], ctx: Ctx,
                              year: Annotated[int | None, Query(ge=2000, le=2100)] = None,
                              period: Annotated[Period | None, Query()] = None,
                              actor: Actor = Depends(aggregate_readers)) -> dict:
        actor.ensure_province(regency_code[:2])
        async with ctx.pool.acquire() as conn:
            return await views.region_summary(conn, regency_code=regency_code, year=year,
                                              period=period)

    @router.get("/provinces/{province_code}/summary",
                response_model=R.RegionSummary, tags=["queries"],
                summary="Report compliance, revenue and workers of a province")
    async def province_summary(province_code: Annotated[str, Path(pattern=r"^\d{2}$")],
                               ctx: Ctx,
                               year: Annotated[int | None, Query(ge=2000, le=2100)] = None,
                               period: Annotated[Period | None, Query()] = None,
                               actor: Actor = Depends(aggregate_readers)) -> dict:
        actor.ensure_province(province_code)
        async with ctx.pool.acquire() as conn:
            return await views.region_summary(conn, province_code=province_code, year=year,
                                              period=period)

    return router
