"""HTTP API of the year-end evaluation: open, preview, close, and the queries on results."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, Field

from services.evaluation import handlers, views
from services.evaluation.handlers import PolicyOf
from services.evaluation.config import Policy
from services.evaluation.scoring import Scored, evaluate_year, exclusion, histogram, score
from shared.aggregate import UnitOfWork
from shared.approvals import ApprovalRequested, Executor, FourEyes
from shared.auth import ANY_ROLE, Actor, Role, require
from shared.contracts.evaluation import Decision
from shared.errors import ConflictError, NotFoundError
from shared.inputs import REF_PATTERN
from shared.paging import PageQuery
from shared.scope import province_scope
from shared.service import ServiceContext, context

YearPath = Annotated[int, Path(ge=2000, le=2100, description="the programme year evaluated")]
ProvinceQuery = Annotated[str | None, Query(pattern=r"^\d{2}$", description="Kemendagri code")]
RegencyQuery = Annotated[str | None, Query(pattern=r"^\d{4}$", description="Kemendagri code")]
Admin = Annotated[Actor, Depends(require(Role.ADMIN))]
Reader = Annotated[Actor, Depends(require(Role.ADMIN, Role.PROVINCE, Role.AGENCY))]
Ctx = Annotated[ServiceContext, Depends(context)]


class IndicatorOut(BaseModel):
    name: str
    value: float
    weight: float
    contribution: float
    normalised: float | None = Field(None, description="value mapped into 0..1 with its cap")
    basis: dict[str, float | int | None] | None = Field(
        None, description="the counts the value comes from (provisional figures only)")


class Outcome(BaseModel):
    tks_id: str
    province_code: str
    regency_code: str
    score: float
    decision: Decision
    policy_version: str
    indicators: list[IndicatorOut]


class NotEvaluated(BaseModel):
    tks_id: str
    reason: str
    months_served: int
    province_code: str | None
    regency_code: str | None


class CycleSummary(BaseModel):
    year: int
    status: Literal["open", "closed"]
    policy_version: str
    policy: Policy | None
    opened_at: datetime
    closed_at: datetime | None
    evaluated: int | None
    continued: int | None
    replaced: int | None
    not_evaluated: dict[str, int]


class CloseRequested(BaseModel):
    state: Literal["pending"] = Field(description="waiting for a checker")
    request_id: str = Field(description="grant: POST /approvals/{request_id}/grant")
    command_type: str
    target: str
    year: int
    expires_at: datetime
    checker_roles: list[str]
    already_pending: bool = Field(description=(
        "true: a close of the year asked for earlier still waits for a checker; this is it "
        "(nothing new was recorded)"))


class CloseResult(BaseModel):
    summary: CycleSummary
    outcomes: list[Outcome]
    not_evaluated: list[NotEvaluated]


class PreviewItem(BaseModel):
    tks_id: str
    province_code: str | None
    regency_code: str | None
    months_served: int
    evaluable: bool
    reason: str | None = Field(None, description="why the TKS would not be evaluated")
    score: float
    decision: Decision | None
    indicators: list[IndicatorOut]


class Preview(BaseModel):
    year: int
    policy_version: str
    periods_closed: int = Field(description="monthly reporting periods of the year closed so far")
    evaluable: int
    would_continue: int
    would_replace: int
    not_evaluable: dict[str, int]
    total: int
    limit: int
    offset: int
    items: list[PreviewItem]


class ResultsPage(BaseModel):
    year: int
    total: int
    limit: int
    offset: int
    items: list[Outcome]


class Breakdown(BaseModel):
    year: int
    tks_id: str
    provisional: bool = Field(description="true until the year's evaluation is closed")
    evaluated: bool
    reason: str | None = None
    months_served: int | None = None
    province_code: str | None
    regency_code: str | None
    score: float | None
    decision: Decision | None
    policy_version: str
    indicators: list[IndicatorOut]


class Bucket(BaseModel):
    min_score: int
    max_score: int
    count: int


class Distribution(BaseModel):
    year: int
    bucket_width: int
    total: int
    buckets: list[Bucket]


class LateEvent(BaseModel):
    event_id: uuid.UUID
    topic: str
    event_type: str
    tks_id: str | None
    group_id: str | None
    occurred_at: datetime
    received_at: datetime


class LateEventsPage(BaseModel):
    year: int
    total: int
    limit: int
    offset: int
    items: list[LateEvent]


class StatTotals(BaseModel):
    evaluated: int
    continued: int
    replaced: int
    not_evaluated: int = Field(description="TKS with a contract in the year not evaluated "
                                           "(too few months, left the programme)")
    mean_score: float | None = Field(description="over the TKS evaluated")


class ProvinceStats(StatTotals):
    province_code: str = Field(description="the province served last in the year")


class Stats(BaseModel):
    year: int
    status: Literal["open", "closed"]
    provisional: bool = Field(description="true while the year is open: as the preview")
    policy_version: str
    province_code: str | None = Field(description="the province asked for; null: all")
    national: StatTotals = Field(description="the sum of the provinces below")
    provinces: list[ProvinceStats]


def _indicators(scored: Scored) -> list[IndicatorOut]:
    return [IndicatorOut(name=i.name, value=i.value, weight=i.weight,
                         contribution=i.contribution, normalised=i.normalised, basis=i.basis)
            for i in scored.indicators]


def _closed_indicators(indicators: list[dict[str, Any]]) -> list[IndicatorOut]:
    return [IndicatorOut(**i, normalised=round(i["contribution"] / (i["weight"] * 100), 4)
                         if i["weight"] else None) for i in indicators]


async def _open_policy(ctx: ServiceContext, year: int, policy_of: PolicyOf) -> Policy:
    """The policy an open year's close would use now: the year's rules in force."""
    row = await views.cycle(ctx.pool, year)
    if row is None:
        raise NotFoundError(f"no evaluation has been opened for {year}", field="year")
    if row["status"] == "closed":
        raise ConflictError(f"the {year} evaluation is closed: read its results instead",
                            field="year", results=f"/evaluations/{year}/results")
    return await policy_of(ctx.pool, year)


def close_json(result: dict[str, Any]) -> dict[str, Any]:
    """A close's result as the close answers it (JSON)."""
    return CloseResult.model_validate(result).model_dump(mode="json")


def _shape_closed(exc: ConflictError) -> None:
    if "result" in exc.details:  # the same shape and encoding as the first answer
        exc.details["result"] = close_json(exc.details["result"])


def close_year_executor(policy_of: PolicyOf) -> Executor:
    """What a checker's grant of a `close_year` request carries out, in the grant's
    transaction: the year's close; the grant's `result` is what the close answers."""

    async def carry_out(uow: UnitOfWork, request: ApprovalRequested,
                        checker: Actor) -> dict[str, Any]:
        try:
            return close_json(await handlers.close_year(uow, request.year, policy_of))
        except ConflictError as exc:  # closed meanwhile: the grant changes nothing
            _shape_closed(exc)
            raise

    return carry_out


def build_router(policy_of: PolicyOf, four_eyes: FourEyes) -> APIRouter:
    """`policy_of`: the policy of a programme year (its rules in force); `four_eyes`: the
    maker-checker flow the close goes through."""
    router = APIRouter(prefix="/evaluations", tags=["evaluation"])

    @router.post("/{year}/open", status_code=201, response_model=CycleSummary)
    async def open_evaluation(year: YearPath, ctx: Ctx, actor: Admin) -> dict[str, Any]:
        """Open the year's evaluation under the year's policy (`GET /rules/{year}`). A version
        adopted for the year before the close is the one the close uses."""
        return await handlers.open_evaluation(ctx, year, await policy_of(ctx.pool, year), actor)

    @router.get("/{year}", response_model=CycleSummary)
    async def get_cycle(year: YearPath, ctx: Ctx,
                        actor: Annotated[Actor, Depends(require(*ANY_ROLE))]) -> dict[str, Any]:
        return await views.cycle_summary(ctx.pool, year)

    @router.get("/{year}/preview", response_model=Preview)
    async def preview(year: YearPath, ctx: Ctx, actor: Reader,
                      page: PageQuery, province_code: ProvinceQuery = None,
                      regency_code: RegencyQuery = None) -> Preview:
        """Scores as they would be if the evaluation closed now."""
        adopted = await _open_policy(ctx, year, policy_of)
        province_code = province_scope(actor, province_code, regency_code)
        facts = [f for f in await views.tks_facts(ctx.pool, year)
                 if (province_code is None or f.province_code == province_code)
                 and (regency_code is None or f.regency_code == regency_code)]
        outcome = evaluate_year(facts, adopted)
        items = [PreviewItem(tks_id=s.facts.tks_id, province_code=s.facts.province_code,
                             regency_code=s.facts.regency_code,
                             months_served=s.facts.months_served, evaluable=True, score=s.score,
                             decision=s.decision, indicators=_indicators(s))
                 for s in outcome.evaluated]
        items.sort(key=lambda i: (-i.score, i.tks_id))
        not_evaluable: dict[str, int] = {}
        for f, reason in outcome.excluded:
            not_evaluable[reason] = not_evaluable.get(reason, 0) + 1
            scored = score(f, adopted)
            items.append(PreviewItem(tks_id=f.tks_id, province_code=f.province_code,
                                     regency_code=f.regency_code, months_served=f.months_served,
                                     evaluable=False, reason=reason, score=scored.score,
                                     decision=None, indicators=_indicators(scored)))
        continued = sum(1 for s in outcome.evaluated if s.decision == "continue")
        return Preview(year=year, policy_version=adopted.version,
                       periods_closed=await views.periods_closed(ctx.pool, year),
                       evaluable=len(outcome.evaluated), would_continue=continued,
                       would_replace=len(outcome.evaluated) - continued,
                       not_evaluable=not_evaluable, total=len(items), limit=page.limit,
                       offset=page.offset, items=items[page.offset:page.offset + page.limit])

    @router.post("/{year}/close", status_code=202, response_model=CloseRequested | CloseResult)
    async def close_evaluation(year: YearPath, ctx: Ctx, actor: Admin,
                               response: Response) -> dict[str, Any]:
        """Ask for the year's close (four eyes, docs/four-eyes.md): answers 202 with a pending
        request that another ministry admin grants (`POST /approvals/{request_id}/grant`, whose
        `result` is the close's: every evaluable TKS decided, the outcomes published). A close
        of the year already waiting is answered again (`already_pending`). Refused as the close
        would be, with nothing written: no evaluation opened (404), already closed (409, with
        the first result). A year whose adopted rules do not list `close_year` is closed at
        once: 200 with the result (CloseResult)."""
        try:
            status, answer = await handlers.request_close(ctx, year, actor, policy_of,
                                                          four_eyes)
        except ConflictError as exc:
            _shape_closed(exc)
            raise
        response.status_code = status
        return answer if status == 202 else close_json(answer)

    @router.get("/{year}/results", response_model=ResultsPage)
    async def results(year: YearPath, ctx: Ctx, actor: Reader,
                      page: PageQuery, province_code: ProvinceQuery = None,
                      regency_code: RegencyQuery = None,
                      decision: Decision | None = None) -> dict[str, Any]:
        await _closed(ctx, year)
        total, items = await views.results(
            ctx.pool, year, province_code=province_scope(actor, province_code),
            regency_code=regency_code, decision=decision, limit=page.limit, offset=page.offset)
        for item in items:
            item["indicators"] = _closed_indicators(item["indicators"])
        return {"year": year, **page.out(items, total)}

    @router.get("/{year}/tks/{tks_id}", response_model=Breakdown)
    async def breakdown(year: YearPath, tks_id: Annotated[str, Path(pattern=REF_PATTERN)],
                        ctx: Ctx,
                        actor: Annotated[Actor, Depends(require(*ANY_ROLE))]) -> Breakdown:
        """One TKS's indicators: final once the year is closed, provisional before."""
        actor.ensure_tks(tks_id)
        row = await views.cycle(ctx.pool, year)
        if row is not None and row["status"] == "closed":
            return await _final_breakdown(ctx, year, tks_id, actor)
        adopted = await policy_of(ctx.pool, year)  # what the close would use
        facts = (await views.tks_facts(ctx.pool, year, tks_id))[0]
        if actor.role is Role.PROVINCE:
            _visible_to(actor, facts.province_code)
        reason = exclusion(facts, adopted)
        scored = score(facts, adopted)
        return Breakdown(year=year, tks_id=tks_id, provisional=True, evaluated=reason is None,
                         reason=reason, months_served=facts.months_served,
                         province_code=facts.province_code, regency_code=facts.regency_code,
                         score=scored.score, decision=None if reason else scored.decision,
                         policy_version=adopted.version, indicators=_indicators(scored))

    @router.get("/{year}/distribution", response_model=Distribution)
    async def distribution(year: YearPath, ctx: Ctx, actor: Reader,
                           province_code: ProvinceQuery = None,
                           regency_code: RegencyQuery = None,
                           bucket_width: Annotated[int, Query(ge=1, le=100)] = 10) -> Distribution:
        """How the closed year's scores spread over buckets [min_score, max_score)."""
        await _closed(ctx, year)
        found = await views.scores(ctx.pool, year,
                                   province_scope(actor, province_code, regency_code),
                                   regency_code)
        return Distribution(year=year, bucket_width=bucket_width, total=len(found),
                            buckets=[Bucket(**b) for b in histogram(found, bucket_width)])

    @router.get("/{year}/late-events", response_model=LateEventsPage)
    async def late_events(year: YearPath, ctx: Ctx,
                          actor: Annotated[Actor, Depends(require(Role.ADMIN, Role.AGENCY))],
                          page: PageQuery) -> dict[str, Any]:
        """Events about the year that arrived after it closed: kept, not applied to results."""
        total, items = await views.late_events(ctx.pool, year, page.limit, page.offset)
        return {"year": year, **page.out(items, total)}

    @router.get("/{year}/stats", response_model=Stats)
    async def stats(year: YearPath, ctx: Ctx, actor: Reader,
                    province_code: ProvinceQuery = None) -> dict[str, Any]:
        """The year's national totals and one row per province, in one call: TKS evaluated,
        continued, replaced, not evaluated, mean score. Final once the year is closed;
        provisional (as the preview) while it is open. A provincial officer sees its
        province."""
        province_code = province_scope(actor, province_code)
        row = await views.cycle(ctx.pool, year)
        if row is None:
            raise NotFoundError(f"no evaluation has been opened for {year}", field="year")
        version = row["policy_version"]
        if row["status"] == "closed":
            rows = await views.stats(ctx.pool, year, province_code)
        else:
            adopted = await policy_of(ctx.pool, year)
            version = adopted.version
            facts = [f for f in await views.tks_facts(ctx.pool, year)
                     if province_code is None or f.province_code == province_code]
            rows = _provisional_stats(evaluate_year(facts, adopted))
        national = {k: sum(r[k] for r in rows) for k in _STAT_COUNTS}
        return {"year": year, "status": row["status"], "provisional": row["status"] != "closed",
                "policy_version": version, "province_code": province_code,
                "national": _mean(national), "provinces": [_mean(r) for r in rows]}

    return router


def _provisional_stats(outcome: Any) -> list[dict[str, Any]]:
    by: dict[str, dict[str, Any]] = {}

    def at(province_code: str | None) -> dict[str, Any]:
        key = province_code or ""  # a TKS nothing is known of is counted under ""
        return by.setdefault(key, {"province_code": key, "evaluated": 0, "continued": 0,
                                   "replaced": 0, "not_evaluated": 0, "score_sum": 0.0})

    for s in outcome.evaluated:
        row = at(s.facts.province_code)
        row["evaluated"] += 1
        row["continued" if s.decision == "continue" else "replaced"] += 1
        row["score_sum"] += s.score
    for f, _ in outcome.excluded:
        at(f.province_code)["not_evaluated"] += 1
    return [by[k] for k in sorted(by)]


_STAT_COUNTS = ("evaluated", "continued", "replaced", "not_evaluated", "score_sum")


def _mean(row: dict[str, Any]) -> dict[str, Any]:
    """The row with the mean score over the TKS evaluated instead of their sum."""
    out = {k: v for k, v in row.items() if k != "score_sum"}
    out["mean_score"] = round(row["score_sum"] / row["evaluated"], 2) if row["evaluated"] else None
    return out


def _visible_to(actor: Actor, province_code: str | None) -> None:
    if province_code is None:  # nothing known about the TKS: do not reveal even that
        raise NotFoundError("no such TKS in this province", field="tks_id")
    actor.ensure_province(province_code)


async def _closed(ctx: ServiceContext, year: int) -> None:
    row = await views.cycle(ctx.pool, year)
    if row is None or row["status"] != "closed":
        raise NotFoundError(f"the {year} evaluation has no results: it is "
                            f"{row['status'] if row else 'not opened'}", field="year",
                            current_status=row["status"] if row else None)


async def _final_breakdown(ctx: ServiceContext, year: int, tks_id: str,
                           actor: Actor) -> Breakdown:
    found = await views.result(ctx.pool, year, tks_id)
    if found is not None:
        if actor.role is Role.PROVINCE:
            _visible_to(actor, found["province_code"])
        return Breakdown(year=year, tks_id=tks_id, provisional=False, evaluated=True,
                         province_code=found["province_code"],
                         regency_code=found["regency_code"], score=found["score"],
                         decision=found["decision"], policy_version=found["policy_version"],
                         indicators=_closed_indicators(found["indicators"]))
    excluded = await views.exclusions(ctx.pool, year, tks_id=tks_id)
    if not excluded:
        raise NotFoundError(f"TKS {tks_id} was not part of the {year} evaluation",
                            field="tks_id")
    x = excluded[0]
    if actor.role is Role.PROVINCE:
        _visible_to(actor, x["province_code"])
    row = await views.cycle(ctx.pool, year)
    return Breakdown(year=year, tks_id=tks_id, provisional=False, evaluated=False,
                     reason=x["reason"], months_served=x["months_served"],
                     province_code=x["province_code"], regency_code=x["regency_code"],
                     score=None, decision=None, policy_version=row["policy_version"],
                     indicators=[])
