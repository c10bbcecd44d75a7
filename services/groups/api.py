"""HTTP API of the groups service."""

from __future__ import annotations

import tempfile
import logging
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from services.groups import bulk, handlers, views
from services.groups import responses as R
from services.groups.commands import (
    AcceptLpjs,
    ApproveGroups,
    ChangeMembers,
    DissolveGroup,
    FundGroup,
    FundGroups,
    RecordBimtek,
    RecordExpo,
    RecordProductEvidence,
    RegisterGroup,
    RejectGroup,
    ReturnLpj,
    ReturnLpjs,
    SubmitLpj,
    SubmitLpjs,
)
from services.groups.config import Expo, GroupYearRules, ProgrammeConfig
from services.groups.csv_import import CSV_LAYOUT
from shared.approvals import FourEyes
from shared.auth import ANY_ROLE, Actor, Role, require
from shared.errors import DomainError, ForbiddenError, NotFoundError
from shared.inputs import REF_PATTERN
from shared.paging import PAGE_MAX, PageQuery
from shared.rules import RuleBook
from shared.scope import province_scope
from shared.service import ServiceContext, context

Writer = Annotated[Actor, Depends(require(Role.ADMIN, Role.PROVINCE))]
Reader = Annotated[Actor, Depends(require(*ANY_ROLE))]
Stage = Literal["pemula", "lanjutan", "pengembangan"]
Status = Literal["registered", "approved", "rejected", "funded", "dissolved"]
GroupId = Annotated[str, Path(pattern=REF_PATTERN)]
ReportId = Annotated[str, Path(pattern=REF_PATTERN)]
ProvinceQ = Annotated[str | None, Query(pattern=r"^\d{2}$", description="Kemendagri code")]
RegencyQ = Annotated[str | None, Query(pattern=r"^\d{4}$", description="Kemendagri code")]
YearQ = Annotated[int | None, Query(ge=2000, le=2100)]
# deprecated aliases of limit/offset (shared.paging), accepted for one release
PageQ = Annotated[int | None, Query(ge=1, le=100_000, deprecated=True,
                                    description="deprecated: use offset")]
PageSizeQ = Annotated[int | None, Query(ge=1, le=PAGE_MAX, deprecated=True,
                                        description="deprecated: use limit")]
Ctx = Annotated[ServiceContext, Depends(context)]
audit = logging.getLogger("tkm.audit")


class UnsupportedMediaError(DomainError):
    status = 415


def _sees_notes(actor: Actor) -> bool:
    """Member data and officers' notes (free text that may name members) are for the ministry
    and provincial officers, who read only their own province; never for agencies or TKS."""
    return actor.role in (Role.ADMIN, Role.PROVINCE)


def _answer(response: Response, answer: dict[str, Any], done: int) -> dict[str, Any]:
    """A four-eyes command's answer: 202 (the documented status) when it became a request
    awaiting a checker, `done` when the year's rules let it be carried out at once."""
    if not handlers.is_pending(answer):
        response.status_code = done
    return answer


def build_router(config: ProgrammeConfig, book: RuleBook[GroupYearRules],
                 four_eyes: FourEyes | None = None) -> APIRouter:
    """The groups API; `book`: the programme rules per year every command applies (the rules
    of the group's year, never today's); `four_eyes`: the maker-checker flow of the money
    commands (default: `handlers.four_eyes_of(book)`; its router is mounted apart)."""
    four_eyes = four_eyes or handlers.four_eyes_of(book)
    router = APIRouter()

    @router.get("/business-types", response_model=list[R.BusinessType], tags=["catalogue"])
    async def business_types(actor: Reader) -> list[dict[str, str]]:
        """The catalogue of business types (configuration data)."""
        return [b.model_dump() for b in config.business_types]

    @router.get("/expos", tags=["catalogue"])
    async def expos(actor: Reader) -> list[Expo]:
        """The catalogue of expos (configuration data): record an expo by its code."""
        return list(config.expos)

    @router.post("/groups", response_model=R.GroupSummary, status_code=201, tags=["registration"])
    async def register(body: RegisterGroup, ctx: Ctx,
                       actor: Writer) -> dict[str, Any]:
        """Register a TKM group with its members. The group id is derived from (year, regency,
        name): the same group registered twice is a 409. A person already in another active
        group that year is a 409 naming that group."""
        return await handlers.register_group(ctx, body, actor, config, book)

    @router.post("/groups/imports",
                 response_model=R.ImportReport, tags=["registration"], description=(
        "Bulk registration from a regional labour office's CSV file. Answers 200 with a "
        "per-row error report and a result per group (registered, already_registered, "
        "refused).\n\n" + CSV_LAYOUT),
        openapi_extra={"requestBody": {"required": True, "content": {
            "text/csv": {"schema": {"type": "string"}}}}})
    async def import_csv(request: Request, ctx: Ctx,
                         actor: Writer) -> dict[str, Any]:
        if request.headers.get("content-type", "").startswith("multipart/"):
            raise UnsupportedMediaError("send the file itself as the body, Content-Type "
                                        "text/csv", field="Content-Type")
        # spooled to disk past 1 MiB and parsed in a worker thread: a large file neither sits
        # whole in memory nor stalls the event loop (its size is capped by shared.limits)
        with tempfile.SpooledTemporaryFile(max_size=1024 * 1024) as file:
            async for chunk in request.stream():
                file.write(chunk)
            file.seek(0)
            return await handlers.import_groups_csv(ctx, file, actor, config, book)

    @router.get("/groups", response_model=R.GroupPage, response_model_exclude_unset=True,
                tags=["queries"])
    async def list_groups(ctx: Ctx, actor: Reader, paging: PageQuery, year: YearQ = None,
                          stage: Stage | None = None, province_code: ProvinceQ = None,
                          regency_code: RegencyQ = None,
                          business_type: Annotated[str | None, Query(pattern=REF_PATTERN)] = None,
                          status: Status | None = None,
                          page: PageQ = None, page_size: PageSizeQ = None) -> dict[str, Any]:
        """Groups by year, stage, province, regency, business type, status (no member data).
        `status_reason_code` for everyone; the officer's `status_note` only for the ministry
        and provincial officers."""
        where = views.GroupFilter(year, stage,
                                  province_scope(actor, province_code, regency_code), regency_code,
                                  business_type, status)
        return await views.list_groups(ctx.pool, where, views.Page.of(paging, page, page_size),
                                       with_notes=_sees_notes(actor))

    @router.get("/groups/{group_id}", response_model=R.GroupDetail, response_model_exclude_unset=True,
                tags=["queries"])
    async def group_detail(group_id: GroupId, ctx: Ctx, actor: Reader,
                           reveal: Annotated[Literal["nik"] | None, Query(
                               description="`nik`: members' full NIKs (ministry_admin only; "
                                           "every such read is audited)")] = None,
                           ) -> dict[str, Any]:
        """One group. Members (NIK masked to the region) and officers' notes only for the
        ministry and the group's provincial officer."""
        if reveal and actor.role is not Role.ADMIN:
            raise ForbiddenError("only the ministry may reveal a NIK", field="reveal")
        group = await views.group_detail(ctx.pool, group_id, _sees_notes(actor),
                                         reveal_nik=bool(reveal), keyring=ctx.keyring)
        if group is None:
            raise NotFoundError("no such group", field="group_id")
        if actor.role is Role.PROVINCE:
            actor.ensure_province(group["province_code"])
        if reveal:
            audit.warning("NIK revealed: actor=%s group=%s members=%d", actor.id, group_id,
                          len(group.get("members") or []))
        return group

    @router.put("/groups/{group_id}/members", response_model=R.GroupSummary, tags=["registration"])
    async def change_members(group_id: GroupId, body: ChangeMembers, ctx: Ctx,
                             actor: Writer) -> dict[str, Any]:
        """Replace the member list (allowed until the group is funded)."""
        return await handlers.change_members(ctx, group_id, body, actor, book)

    @router.post("/groups/{group_id}/approval", response_model=R.GroupSummary, tags=["approval"])
    async def approve(group_id: GroupId, ctx: Ctx,
                      actor: Writer) -> dict[str, Any]:
        group, _ = await handlers.act_on_group(ctx, actor, group_id, lambda g: g.approve())
        return handlers.summary(group)

    @router.post("/groups/{group_id}/rejection", response_model=R.GroupSummary, tags=["approval"])
    async def reject(group_id: GroupId, body: RejectGroup, ctx: Ctx,
                     actor: Writer) -> dict[str, Any]:
        group, _ = await handlers.act_on_group(ctx, actor, group_id,
                                               lambda g: g.reject(body.reason_code, body.note))
        return handlers.summary(group)

    @router.post("/groups/approvals", response_model=R.BulkOutcome, tags=["approval"])
    async def approve_many(body: ApproveGroups, ctx: Ctx,
                           actor: Writer) -> dict[str, Any]:
        """Approve many groups; one result per id (status 200, or the error's status)."""
        return {"results": await bulk.apply_in_batches(
            ctx, actor, config, book, [bulk.Target(g) for g in body.group_ids], 200,
            bulk.approved)}

    @router.post("/groups/{group_id}/funding", response_model=R.PendingRequest | R.Funded,
                 status_code=202, tags=["funding"])
    async def fund(group_id: GroupId, body: FundGroup, ctx: Ctx, actor: Writer,
                   response: Response) -> dict[str, Any]:
        """Ask for a tranche to an approved group. The year's rules (GET /rules/{year},
        `four_eyes`) decide: with four eyes (the shipped rules, every amount) the answer is
        202 `{"state": "pending", "request_id", ...}` and nothing is paid until another person
        with a checking role grants it (`POST /approvals/{request_id}/grant`, whose `result` is
        the funding below); tranche 1 is `fund`, a later tranche `change_tranche`. Without, the
        ministry funds at once (201). A funding that could never be carried out is refused now
        (the same tranche twice or already asked for: 409; over the ceiling of the group's
        year, not approved: 422) and writes nothing."""
        return _answer(response, await handlers.fund_group(ctx, group_id, body, actor, book,
                                                           four_eyes), 201)

    @router.post("/groups/fundings", response_model=R.BulkOutcome, tags=["funding"])
    async def fund_many(body: FundGroups, ctx: Ctx, actor: Writer) -> dict[str, Any]:
        """Ask for many fundings, each as `POST /groups/{group_id}/funding` would (same rules,
        same answer), up to 100 groups a transaction: `batch_id` (shared by every item's
        request: `POST /approvals/grant`, `GET /approvals?batch_id=`) and one result per item,
        in order (status 202 with the pending request, 201 when carried out at once, or the
        error's status)."""
        return await bulk.ask_in_batches(
            ctx, actor, config, book, four_eyes, body.items, 201,
            lambda group, item, rules: handlers.funding_ask(group, item, rules))

    @router.post("/groups/{group_id}/lpj",
                 response_model=R.LpjSubmitted, status_code=201, tags=["accountability"])
    async def submit_lpj(group_id: GroupId, body: SubmitLpj, ctx: Ctx,
                         actor: Writer) -> dict[str, Any]:
        """Submit the accountability report (LPJ): spending to date by category. Spending
        beyond the funds received is refused."""
        return await handlers.submit_lpj(ctx, group_id, body, actor)

    @router.post("/groups/{group_id}/lpj/{report_id}/acceptance",
                 response_model=R.PendingRequest | R.LpjReviewed, status_code=202,
                 tags=["accountability"])
    async def accept_lpj(group_id: GroupId, report_id: ReportId, ctx: Ctx, actor: Writer,
                         response: Response) -> dict[str, Any]:
        """Ask for a submitted LPJ's acceptance: with four eyes (`accept_lpj` in the year's
        rules) 202 pending until another officer of the province or the ministry grants it
        (`POST /approvals/{request_id}/grant`); without, accepted at once (200). A report not
        awaiting review is refused now (409) and nothing is written."""
        return _answer(response, await handlers.accept_lpj(ctx, group_id, report_id, actor,
                                                           book, four_eyes), 200)

    @router.post("/groups/{group_id}/lpj/{report_id}/return",
                 response_model=R.LpjReviewed, tags=["accountability"])
    async def return_lpj(group_id: GroupId, report_id: ReportId, body: ReturnLpj, ctx: Ctx,
                         actor: Writer) -> dict[str, Any]:
        await handlers.act_on_group(ctx, actor, group_id,
                                    lambda g: g.return_lpj(report_id, body.reason_code,
                                                           body.note))
        return {"group_id": group_id, "report_id": report_id, "status": "returned"}

    @router.post("/lpj/submissions", response_model=R.BulkOutcome, tags=["accountability"])
    async def submit_many_lpj(body: SubmitLpjs, ctx: Ctx, actor: Writer) -> dict[str, Any]:
        """Submit many LPJs, each as `POST /groups/{group_id}/lpj` would (same rules, same
        answer as `result`); one result per item, in order (status 201, or the error's status).
        Items of one group are decided one after the other. At most `bulk.max_items` items."""
        return {"results": await bulk.apply_in_batches(ctx, actor, config, book, body.items,
                                                       201, bulk.submitted)}

    @router.post("/lpj/returns", response_model=R.BulkOutcome, tags=["accountability"])
    async def return_many_lpj(body: ReturnLpjs, ctx: Ctx, actor: Writer) -> dict[str, Any]:
        """Return many submitted LPJs to their groups, each as
        `POST /groups/{group_id}/lpj/{report_id}/return` would; one result per item (status
        200, or the error's status)."""
        return {"results": await bulk.apply_in_batches(ctx, actor, config, book, body.items,
                                                       200, bulk.returned)}

    @router.post("/lpj/acceptances", response_model=R.BulkOutcome, tags=["accountability"])
    async def accept_many_lpj(body: AcceptLpjs, ctx: Ctx, actor: Writer) -> dict[str, Any]:
        """Ask for many LPJ acceptances, each as
        `POST /groups/{group_id}/lpj/{report_id}/acceptance` would, up to 100 groups a
        transaction: `batch_id` and one result per item (status 202 pending, 200 when accepted
        at once, or the error's status)."""
        return await bulk.ask_in_batches(
            ctx, actor, config, book, four_eyes, body.items, 200,
            lambda group, item, rules: handlers.lpj_ask(group, item.report_id))

    @router.post("/groups/{group_id}/bimtek",
                 response_model=R.GroupSummary, status_code=201, tags=["empowerment"])
    async def bimtek(group_id: GroupId, body: RecordBimtek, ctx: Ctx,
                     actor: Writer) -> dict[str, Any]:
        """Record institutional technical guidance (Bimtek kelembagaan) attended."""
        group, _ = await handlers.act_on_group(
            ctx, actor, group_id, lambda g: g.attend_bimtek(body.subject, body.held_on))
        return handlers.summary(group)

    @router.post("/groups/{group_id}/product-evidence",
                 response_model=R.GroupSummary, status_code=201, tags=["empowerment"])
    async def product(group_id: GroupId, body: RecordProductEvidence, ctx: Ctx,
                      actor: Writer) -> dict[str, Any]:
        group, _ = await handlers.act_on_group(ctx, actor, group_id, lambda g: g.record_product(
            body.product, body.evidence_count, body.recorded_on))
        return handlers.summary(group)

    @router.post("/groups/{group_id}/expos",
                 response_model=R.GroupSummary, status_code=201, tags=["empowerment"])
    async def expo(group_id: GroupId, body: RecordExpo, ctx: Ctx,
                   actor: Writer) -> dict[str, Any]:
        group, _ = await handlers.act_on_group(
            ctx, actor, group_id,
            lambda g: g.showcase(body.expo_code, body.regency_code, body.held_on, config))
        return handlers.summary(group)

    @router.post("/groups/{group_id}/advancement", response_model=R.Advanced, tags=["empowerment"])
    async def advance(group_id: GroupId, ctx: Ctx,
                      actor: Writer) -> dict[str, Any]:
        """Move the group to the next stage (pemula -> lanjutan -> pengembangan) once it has
        done what the rules of its programme year require at its stage."""
        group, event = await handlers.act_on_group(ctx, actor, group_id,
                                                   lambda g, rules: g.advance(rules), book)
        return {**handlers.summary(group), "from_stage": event.from_stage}

    @router.post("/groups/{group_id}/dissolution",
                 response_model=R.GroupSummary, tags=["empowerment"])
    async def dissolve(group_id: GroupId, body: DissolveGroup, ctx: Ctx,
                       actor: Writer) -> dict[str, Any]:
        group, _ = await handlers.act_on_group(ctx, actor, group_id,
                                               lambda g: g.dissolve(body.reason_code, body.note))
        return handlers.summary(group)

    @router.get("/reports/people-reached", response_model=list[R.PeopleReached], tags=["queries"])
    async def people_reached(ctx: Ctx, actor: Reader, year: YearQ = None,
                             province_code: ProvinceQ = None) -> list[dict[str, Any]]:
        """Members of active registered groups and of funded groups, by year and province."""
        return await views.people_reached(ctx.pool, year, province_scope(actor, province_code))

    @router.get("/reports/funding", response_model=list[R.FundingRow], tags=["queries"])
    async def funding(ctx: Ctx, actor: Reader, budget_year: YearQ = None,
                      province_code: ProvinceQ = None) -> list[dict[str, Any]]:
        """Funds disbursed and accounted for (accepted LPJ spending), by budget year and
        province."""
        return await views.funding_by_province(ctx.pool, budget_year,
                                               province_scope(actor, province_code))

    @router.get("/lpj/outstanding", response_model=R.GroupPage, response_model_exclude_unset=True,
                tags=["accountability"])
    async def lpj_outstanding(ctx: Ctx, actor: Reader, paging: PageQuery, year: YearQ = None,
                              province_code: ProvinceQ = None,
                              page: PageQ = None, page_size: PageSizeQ = None) -> dict[str, Any]:
        """Funded groups whose funds are not yet accounted for by an accepted LPJ."""
        where = views.GroupFilter(year=year, province_code=province_scope(actor, province_code))
        return await views.lpj_outstanding(ctx.pool, where,
                                           views.Page.of(paging, page, page_size), None)

    @router.get("/lpj/overdue", response_model=R.GroupPage, response_model_exclude_unset=True,
                tags=["accountability"])
    async def lpj_overdue(ctx: Ctx, actor: Reader, paging: PageQuery, as_of: date | None = None,
                          year: YearQ = None,
                          province_code: ProvinceQ = None,
                          page: PageQ = None, page_size: PageSizeQ = None) -> dict[str, Any]:
        """Outstanding LPJs past their due date on `as_of` (default: today in each group's
        own time zone, WIB/WITA/WIT), excluding reports that await review."""
        where = views.GroupFilter(year=year, province_code=province_scope(actor, province_code))
        return await views.lpj_outstanding(ctx.pool, where,
                                           views.Page.of(paging, page, page_size),
                                           as_of or views.local_days())

    return router
