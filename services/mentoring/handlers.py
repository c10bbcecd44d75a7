"""Command handlers (load, decide, save) and the policies applied to consumed events.

Closing a month must see every filing of that month, and no filing may slip in after it: every
writer of a group's stream first takes a shared advisory lock that a period close takes
exclusively. Writers take it before any stream lock, so the two never wait on each other in a
cycle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, timedelta

import asyncpg

from services.mentoring import projections, views
from services.mentoring.config import AssignmentRules, MentoringConfig, MentoringYearRules
from services.mentoring.domain import (
    FundedGroup,
    GroupMentoring,
    Mentor,
    MonthlyReport,
    PeriodLedger,
    Suggestion,
    deadline_of,
    period_of,
    suggest_assignments,
)
from shared.aggregate import UnitOfWork, lock_stream
from shared.auth import Actor, Role
from shared.consumer import batched
from shared.contracts.groups import GroupDissolved, GroupFunded
from shared.contracts.mentoring import PeriodClosed
from shared.contracts.recruitment import (
    TksContractRenewed,
    TksRecruited,
    TksReleased,
    TksResigned,
)
from shared.envelope import Envelope, utcnow
from shared.errors import DomainError, ForbiddenError, NotFoundError
from shared.idempotency import commit_watch
from shared.localtime import local_today
from shared.rules import RuleBook
from shared.service import ServiceContext
from shared.shedding import DATABASE_UNAVAILABLE, ServiceUnavailableError, patient

CLOSE_LOCK = "mentoring.period-close"
Rules = RuleBook[MentoringYearRules]
Db = asyncpg.Connection | asyncpg.Pool
SYSTEM = Actor("period-closer", Role.ADMIN)


def now() -> datetime:
    return utcnow()


def today() -> date:
    return now().date()


async def _hold_off_close(conn: asyncpg.Connection) -> None:
    await lock_stream(conn, CLOSE_LOCK, shared=True)


async def _mentoring_of(uow: UnitOfWork, group_ids: Iterable[str], *,
                        lock: bool = True) -> dict[str, GroupMentoring]:
    # a group never mentored yet starts a stream of its own
    streams = [GroupMentoring.stream(g) for g in group_ids]
    loaded = await uow.load_many(GroupMentoring, streams, lock=lock)
    return {s: loaded.get(s) or GroupMentoring(s) for s in streams}


def _group_or_404(groups: dict[str, FundedGroup], group_id: str) -> FundedGroup:
    group = groups.get(group_id)
    if group is None:
        raise NotFoundError("group unknown to mentoring: no GroupFunded seen for it",
                            field="group_id", group_id=group_id)
    return group


# ---- assignment -------------------------------------------------------------------------------

async def _assignment_rules(book: Rules, db: Db, year: int) -> AssignmentRules:
    """The assignment policy of a programme year (the rules in force for it)."""
    return (await book.in_force(db, year)).rules.assignment


async def assign_mentor(ctx: ServiceContext, config: MentoringConfig, book: Rules,
                        group_id: str, tks_id: str, assigned_on: date | None,
                        actor: Actor) -> dict:
    """Under the assignment policy of the group's programme year."""
    on = _not_future(assigned_on, "assigned_on")

    async def decide(uow: UnitOfWork) -> dict:
        await _hold_off_close(uow.conn)
        stream = GroupMentoring.stream(group_id)
        agg = await uow.load(GroupMentoring, stream) or GroupMentoring(stream)
        group = _group_or_404(await views.funded_groups(uow.conn, [group_id]), group_id)
        actor.ensure_province(group.province_code)
        mentor = (await views.mentors(uow.conn, [tks_id], lock=True)).get(tks_id)
        previous = agg.mentor
        agg.assign(group, mentor, on,
                   await _assignment_rules(book, uow.conn, group.programme_year))
        await uow.save(agg)
        return {"group_id": group_id, "tks_id": tks_id, "assigned_on": on,
                "previous_tks_id": previous.tks_id if previous else None,
                "caseload": mentor.caseload + 1 if mentor else None}

    return await ctx.command(decide, actor)


async def suggest(ctx: ServiceContext, config: MentoringConfig, book: Rules,
                  province_code: str | None, regency_code: str | None) -> dict:
    """Each group under the assignment policy of its programme year."""
    async with ctx.pool.acquire() as conn:
        groups = await views.unassigned_facts(conn, province_code, regency_code)
        mentors = await views.active_mentors(conn, {g.province_code for g in groups})
        in_force = await book.resolver(conn)
    suggestions, unplaced = suggest_assignments(
        groups, mentors, lambda g: in_force(g.programme_year).rules.assignment)
    return {"suggestions": [asdict(s) for s in suggestions],
            "unplaced": [asdict(u) for u in unplaced]}


async def apply_suggestions(ctx: ServiceContext, config: MentoringConfig, book: Rules,
                            province_code: str | None, regency_code: str | None,
                            assigned_on: date | None, on_funding_date: bool,
                            actor: Actor) -> dict:
    """Compute the suggestion, then carry it out one transaction per regency (and at most
    `groups_per_transaction` groups): each assignment is checked again under lock, so one
    overtaken by a concurrent change is reported as skipped, not forced."""
    on = _not_future(assigned_on, "assigned_on")
    plan = await suggest(ctx, config, book, province_code, regency_code)
    by_regency: dict[str, list[Suggestion]] = defaultdict(list)
    for s in plan["suggestions"]:
        by_regency[s["regency_code"]].append(Suggestion(**s))
    chunks = [items[i:i + config.batch.groups_per_transaction]
              for _, items in sorted(by_regency.items())
              for i in range(0, len(items), config.batch.groups_per_transaction)]
    assigned, skipped = 0, []
    for n, chunk in enumerate(chunks):
        with commit_watch() as watch, patient():
            try:
                done, refused = await ctx.command(
                    lambda uow, chunk=chunk: _assign_chunk(uow, book, chunk, on,
                                                           on_funding_date), actor)
            except DATABASE_UNAVAILABLE as exc:
                # what committed stays committed: say exactly which suggestions were not
                # carried out (or may not have been), instead of a 500 hiding the rest
                raise ServiceUnavailableError(
                    "the database became unavailable part-way; `assigned` were carried out, "
                    "`not_carried_out` were not (ask for new suggestions)",
                    assigned=assigned, skipped=skipped,
                    outcome_unknown=[asdict(s) for s in chunk] if watch.reached_commit else [],
                    not_carried_out=[asdict(s) for c in chunks[n + (1 if watch.reached_commit
                                                                     else 0):] for s in c],
                    unplaced=plan["unplaced"]) from exc
        assigned += done
        skipped.extend(refused)
    return {"assigned": assigned, "skipped": skipped, "unplaced": plan["unplaced"]}


async def _assign_chunk(uow: UnitOfWork, book: Rules, chunk: list[Suggestion],
                        on: date, on_funding_date: bool) -> tuple[int, list[dict]]:
    await _hold_off_close(uow.conn)
    in_force = await book.resolver(uow.conn)
    aggs = await _mentoring_of(uow, [s.group_id for s in chunk])
    groups = await views.funded_groups(uow.conn, [s.group_id for s in chunk])
    mentors = await views.mentors(uow.conn, [s.tks_id for s in chunk], lock=True)
    done, skipped = 0, []
    for s in chunk:
        agg = aggs[GroupMentoring.stream(s.group_id)]
        try:
            group = _group_or_404(groups, s.group_id)
            day = on
            if on_funding_date:
                day = max(group.funded_on, agg.last_change or group.funded_on)
            agg.assign(group, mentors.get(s.tks_id), day,
                       in_force(group.programme_year).rules.assignment)
        except DomainError as exc:
            skipped.append({"group_id": s.group_id, "tks_id": s.tks_id,
                            "error": exc.body()["error"]})
            continue
        mentors[s.tks_id] = replace(mentors[s.tks_id], caseload=mentors[s.tks_id].caseload + 1)
        done += 1
    await uow.save_many(aggs.values())
    return done, skipped


@dataclass(frozen=True)
class AssignItem:
    index: int
    group_id: str
    tks_id: str
    assigned_on: date | None  # None: today


async def assign_mentors(ctx: ServiceContext, config: MentoringConfig, book: Rules,
                         items: Sequence[AssignItem], actor: Actor) -> list[dict]:
    """Many explicit assignments, each under the same rules as `assign_mentor`: one transaction
    per chunk of consecutive items (at most `groups_per_transaction` groups), a result per
    item in input order. Chunks follow the input order and, within one, items are decided in
    it with caseloads kept as they go: the outcome is that of the same single calls one after
    the other. An item refused leaves the others untouched."""
    results: list[dict] = []
    chunks: list[list[AssignItem]] = []
    in_chunk: set[str] = set()
    for item in items:
        # a group named again starts a new transaction: the read models are projected once
        # per transaction, set-based, and one stint opened and closed in the same would be lost
        if (not chunks or len(chunks[-1]) == config.batch.groups_per_transaction
                or item.group_id in in_chunk):
            chunks.append([])
            in_chunk = set()
        chunks[-1].append(item)
        in_chunk.add(item.group_id)
    for n, chunk in enumerate(chunks):
        with commit_watch() as watch, patient():
            try:
                results.extend(await ctx.command(
                    lambda uow, chunk=chunk: _assign_items(uow, book, chunk, actor), actor))
            except DATABASE_UNAVAILABLE as exc:
                unknown = watch.reached_commit
                results.extend(_not_assigned(i, "unknown" if unknown else "not_assigned")
                               for i in chunk)
                results.extend(_not_assigned(i, "not_assigned") for c in chunks[n + 1:]
                               for i in c)
                results.sort(key=lambda r: r["index"])
                raise ServiceUnavailableError(
                    "the database became unavailable part-way; `results` tells which "
                    "assignments were carried out (send the others again)", results=results,
                    assigned=sum(r["status"] == "assigned" for r in results)) from exc
    return sorted(results, key=lambda r: r["index"])


def _not_assigned(item: AssignItem, status: str) -> dict:
    reason = ("the database became unavailable while committing this assignment: it may or "
              "may not be carried out" if status == "unknown" else
              "the database was unavailable: this assignment was not carried out")
    return {"index": item.index, "group_id": item.group_id, "tks_id": item.tks_id,
            "status": status, "error": {"status": 503, "field": None, "reason": reason}}


def assignment_refusal(index: int, group_id: str, tks_id: str, exc: DomainError) -> dict:
    return {"index": index, "group_id": group_id, "tks_id": tks_id, "status": "refused",
            "error": exc.body()["error"]}


async def _assign_items(uow: UnitOfWork, book: Rules, chunk: list[AssignItem],
                        actor: Actor) -> list[dict]:
    # the single route's order of locks: the close lock, the groups' streams, then the
    # mentors' rows (FOR UPDATE, id order) whose caseloads decide the cap
    await _hold_off_close(uow.conn)
    in_force = await book.resolver(uow.conn)
    aggs = await _mentoring_of(uow, [i.group_id for i in chunk])
    groups = await views.funded_groups(uow.conn, [i.group_id for i in chunk])
    mentors = await views.mentors(uow.conn, [i.tks_id for i in chunk], lock=True)
    results = []
    for item in chunk:
        agg = aggs[GroupMentoring.stream(item.group_id)]
        try:
            on = _not_future(item.assigned_on, "assigned_on")
            group = _group_or_404(groups, item.group_id)
            actor.ensure_province(group.province_code)
            mentor = mentors.get(item.tks_id)
            previous = agg.mentor
            agg.assign(group, mentor, on,
                       in_force(group.programme_year).rules.assignment)
        except DomainError as exc:
            results.append(assignment_refusal(item.index, item.group_id, item.tks_id, exc))
            continue
        assert mentor is not None
        mentors[item.tks_id] = replace(mentor, caseload=mentor.caseload + 1)
        if previous is not None and previous.tks_id in mentors:
            # a reassignment frees a place with the TKS it leaves, as the projection counts
            was = mentors[previous.tks_id]
            mentors[previous.tks_id] = replace(was, caseload=was.caseload - 1)
        results.append({"index": item.index, "group_id": item.group_id,
                        "tks_id": item.tks_id, "status": "assigned",
                        "assigned_on": on.isoformat(),
                        "previous_tks_id": previous.tks_id if previous else None,
                        "caseload": mentor.caseload + 1})
    await uow.save_many(aggs.values())
    return results


# ---- monthly reports --------------------------------------------------------------------------

def _not_future(day: date | None, field: str) -> date:
    now = today()
    if day is not None and day > now:
        raise DomainError(f"{field} {day} is in the future", field=field)
    return day or now


def author_of(actor: Actor, tks_id: str | None) -> str:
    """The TKS a report is filed as: a TKS files as itself, an administrator names one."""
    if actor.role is Role.TKS:
        actor.ensure_tks(tks_id or actor.tks_id or "")
        return actor.tks_id or ""
    if tks_id is None:
        raise DomainError("tks_id is required when filing for a TKS", field="tks_id")
    return tks_id


def amender_of(actor: Actor, tks_id: str | None) -> str | None:
    """The TKS amending a report: a TKS amends as itself; ministry_admin amends for the TKS who
    filed it, which it may name (None: whoever filed it)."""
    if actor.role is Role.TKS:
        return author_of(actor, tks_id)
    return tks_id


def filing_date(actor: Actor, filed_on: date | None, group: FundedGroup) -> date:
    """Today in the group's time zone (a TKS app may send it), or for ministry_admin loading
    history, the day the report was really filed."""
    local = local_today(group.regency_code, now())
    if filed_on is not None and filed_on != local and actor.role is not Role.ADMIN:
        raise ForbiddenError(f"only ministry_admin may record another filing date than today "
                             f"({local} in the group's time zone)", field="filed_on")
    if filed_on is not None and filed_on > local:
        raise DomainError(f"filed_on {filed_on} is in the future (today is {local} in the "
                          "group's time zone)", field="filed_on")
    return filed_on or local


def _contract(mentor: Mentor | None) -> tuple[date, date] | None:
    if mentor is None or mentor.contract_start is None or mentor.contract_end is None:
        return None
    return mentor.contract_start, mentor.contract_end


async def file_report(ctx: ServiceContext, config: MentoringConfig, group_id: str,
                      report: MonthlyReport, tks_id: str, filed_on: date | None,
                      actor: Actor) -> dict:
    async def decide(uow: UnitOfWork) -> dict:
        await _hold_off_close(uow.conn)
        stream = GroupMentoring.stream(group_id)
        agg = await uow.load(GroupMentoring, stream) or GroupMentoring(stream)
        group = _group_or_404(await views.funded_groups(uow.conn, [group_id]), group_id)
        filed = filing_date(actor, filed_on, group)
        closed = await views.closed_periods(uow.conn, [report.period])
        mentor = (await views.mentors(uow.conn, [tks_id])).get(tks_id)
        deadline = deadline_of(report.period, config.reporting.deadline_day)
        agg.file_report(group, tks_id, report, filed_on=filed, deadline=deadline,
                        period_closed=bool(closed), contract=_contract(mentor))
        await uow.save(agg)
        return {"group_id": group_id, "period": report.period, "tks_id": tks_id,
                "filed_on": filed, "on_time": agg.reports[report.period].on_time,
                "deadline": deadline}

    return await ctx.command(decide, actor)


async def amend_report(ctx: ServiceContext, config: MentoringConfig, group_id: str,
                       report: MonthlyReport, tks_id: str | None, actor: Actor) -> dict:
    async def decide(uow: UnitOfWork) -> dict:
        await _hold_off_close(uow.conn)
        stream = GroupMentoring.stream(group_id)
        # the report's content and problems are in the events, not in the light snapshot
        agg = (await uow.load(GroupMentoring, stream, from_snapshot=False)
               or GroupMentoring(stream))
        group = _group_or_404(await views.funded_groups(uow.conn, [group_id]), group_id)
        closed = await views.closed_periods(uow.conn, [report.period])
        changed = agg.amend_report(group, tks_id, report,
                                   today=local_today(group.regency_code, now()),
                                   period_closed=bool(closed))
        await uow.save(agg)
        on_file = agg.reports[report.period]
        return {"group_id": group_id, "period": report.period, "tks_id": on_file.tks_id,
                "amended": changed, "on_time": on_file.on_time}

    return await ctx.command(decide, actor)


@dataclass(frozen=True)
class BatchItem:
    index: int
    group_id: str
    tks_id: str
    filed_on: date | None  # None: today in the group's time zone
    report: MonthlyReport


async def file_reports(ctx: ServiceContext, config: MentoringConfig,
                       items: Sequence[BatchItem], refused: Sequence[dict],
                       actor: Actor) -> list[dict]:
    """File many reports: one transaction per chunk of groups, a result per item. An item
    refused by the rules leaves the others untouched."""
    results = list(refused)
    by_group: dict[str, list[BatchItem]] = defaultdict(list)
    for item in items:
        by_group[item.group_id].append(item)
    group_ids = sorted(by_group)
    step = config.batch.groups_per_transaction
    chunks = [[i for g in group_ids[start:start + step] for i in by_group[g]]
              for start in range(0, len(group_ids), step)]
    for n, chunk in enumerate(chunks):
        with commit_watch() as watch, patient():
            try:
                results.extend(await ctx.command(
                    lambda uow, chunk=chunk: _file_chunk(uow, config, chunk, actor), actor))
            except DATABASE_UNAVAILABLE as exc:
                # earlier chunks are committed: tell per item what was filed and what not
                unknown = watch.reached_commit
                results.extend(_unavailable(i, "unknown" if unknown else "not_filed")
                               for i in chunk)
                results.extend(_unavailable(i, "not_filed") for c in chunks[n + 1:] for i in c)
                results.sort(key=lambda r: r["index"])
                raise ServiceUnavailableError(
                    "the database became unavailable part-way; `results` tells which reports "
                    "were filed (send the others again)", results=results,
                    filed=sum(r["status"] == "filed" for r in results)) from exc
    return sorted(results, key=lambda r: r["index"])


def _unavailable(item: BatchItem, status: str) -> dict:
    reason = ("the database became unavailable while committing this report: it may or may "
              "not be filed" if status == "unknown" else
              "the database was unavailable: this report was not filed")
    return {"index": item.index, "group_id": item.group_id, "period": item.report.period,
            "status": status, "error": {"status": 503, "field": None, "reason": reason}}


async def _file_chunk(uow: UnitOfWork, config: MentoringConfig, chunk: list[BatchItem],
                      actor: Actor) -> list[dict]:
    await _hold_off_close(uow.conn)
    group_ids = {i.group_id for i in chunk}
    aggs = await _mentoring_of(uow, group_ids)
    groups = await views.funded_groups(uow.conn, group_ids)
    closed = await views.closed_periods(uow.conn, {i.report.period for i in chunk})
    mentors = await views.mentors(uow.conn, {i.tks_id for i in chunk})
    results = []
    for item in chunk:
        agg = aggs[GroupMentoring.stream(item.group_id)]
        period = item.report.period
        try:
            group = _group_or_404(groups, item.group_id)
            filed_on = filing_date(actor, item.filed_on, group)
            agg.file_report(group, item.tks_id, item.report, filed_on=filed_on,
                            deadline=deadline_of(period, config.reporting.deadline_day),
                            period_closed=period in closed,
                            contract=_contract(mentors.get(item.tks_id)))
        except DomainError as exc:
            results.append(refusal(item.index, item.group_id, period, exc))
            continue
        results.append({"index": item.index, "group_id": item.group_id, "period": period,
                        "status": "filed", "filed_on": filed_on.isoformat(),
                        "on_time": agg.reports[period].on_time})
    await uow.save_many(aggs.values())
    return results


def refusal(index: int, group_id: str, period: str, exc: DomainError) -> dict:
    return {"index": index, "group_id": group_id, "period": period, "status": "refused",
            "error": exc.body()["error"]}


# ---- period close -----------------------------------------------------------------------------

async def close_period(ctx: ServiceContext, config: MentoringConfig, period: str, force: bool,
                       actor: Actor) -> dict:
    """Flag every due, unfiled report of the month overdue and close it. Idempotent: closing a
    closed month returns the counts of the first close and writes nothing."""
    async def decide(uow: UnitOfWork) -> dict:
        await lock_stream(uow.conn, CLOSE_LOCK)
        stream = PeriodLedger.stream(period)
        ledger = await uow.load(PeriodLedger, stream) or PeriodLedger(stream)
        if ledger.closed is not None:
            return _closure(ledger.closed, config)
        due = await views.due_groups(uow.conn, period)
        overdue = ledger.close(due, today=today(), force=force,
                               deadline=deadline_of(period, config.reporting.deadline_day))
        # no filing can run meanwhile (the close lock), so these streams are not locked one by
        # one: thousands of locks would not fit the lock table
        aggs = await _mentoring_of(uow, [d.group_id for d in overdue], lock=False)
        for d in overdue:
            aggs[GroupMentoring.stream(d.group_id)].mark_overdue(d.tks_id, period)
        await uow.save_many([ledger, *aggs.values()])
        assert ledger.closed is not None
        return _closure(ledger.closed, config)

    return await ctx.command(decide, actor)


def _closure(event: PeriodClosed, config: MentoringConfig) -> dict:
    return {"period": event.period, "due": event.due, "filed": event.filed,
            "overdue": event.overdue,
            "deadline": deadline_of(event.period, config.reporting.deadline_day)}


async def close_due_periods(ctx: ServiceContext, config: MentoringConfig, on: date) -> list[dict]:
    """Close the months whose deadline passed within the configured window."""
    window = timedelta(days=config.period_close.window_days)
    periods, day = [], on - window - timedelta(days=62)
    while day <= on:
        period = period_of(day)
        deadline = deadline_of(period, config.reporting.deadline_day)
        if on - window <= deadline < on and period not in periods:
            periods.append(period)
        day += timedelta(days=28)
    async with ctx.pool.acquire() as conn:
        closed = await views.closed_periods(conn, periods)
    return [await close_period(ctx, config, p, False, SYSTEM) for p in periods
            if p not in closed]


# ---- policies on consumed events --------------------------------------------------------------

def _with_projector(uow: UnitOfWork) -> UnitOfWork:
    # the kernel's consumer opens its unit of work without the service's projector
    if uow.projector is None:
        uow.projector = projections.project
    return uow


@batched
async def on_tks_contracted(uow: UnitOfWork,
                            items: list[tuple[Envelope, TksRecruited | TksContractRenewed]]
                            ) -> None:
    # a renewal may be the first we hear of a TKS (recruited before this service existed)
    await projections.record_tks_many(uow.conn, [e for _, e in items])


async def on_tks_left(uow: UnitOfWork, envelope: Envelope,
                      event: TksReleased | TksResigned) -> None:
    """Its groups lose their mentor (tks_left) and wait for reassignment. A TKS never seen is
    ignored: it mentors nothing here."""
    _with_projector(uow)
    await _hold_off_close(uow.conn)
    await _unassign_groups_of(uow, event.tks_id, event.effective_date)
    if await projections.record_tks_left(uow.conn, event.tks_id, event.effective_date):
        # an assignment to this TKS that committed meanwhile is caught by a second pass; none
        # can follow, the TKS's row now being locked by this transaction and inactive
        await _unassign_groups_of(uow, event.tks_id, event.effective_date)


async def _unassign_groups_of(uow: UnitOfWork, tks_id: str, on: date) -> None:
    rows = await uow.conn.fetch("SELECT group_id FROM mentored_groups WHERE tks_id = $1", tks_id)
    if not rows:
        return
    aggs = await _mentoring_of(uow, [r["group_id"] for r in rows])
    for agg in aggs.values():
        agg.unassign("tks_left", on, only_tks=tks_id)
    await uow.save_many(aggs.values())


@batched
async def on_group_funded(uow: UnitOfWork, items: list[tuple[Envelope, GroupFunded]]) -> None:
    await projections.record_funding_many(uow.conn, [e for _, e in items])


async def on_group_dissolved(uow: UnitOfWork, envelope: Envelope, event: GroupDissolved) -> None:
    """A dissolved group needs no mentor. A group never funded is none of mentoring's business."""
    on = envelope.occurred_at.date()
    _with_projector(uow)
    await _hold_off_close(uow.conn)
    # the stream lock first, as commands take it before they touch the group's row
    agg = await uow.load(GroupMentoring, GroupMentoring.stream(event.group_id))
    if not await projections.record_dissolution(uow.conn, event.group_id, on):
        return
    if agg is not None and agg.unassign("group_dissolved", on):
        await uow.save(agg)


HANDLERS = {
    TksRecruited.event_type: on_tks_contracted,
    TksContractRenewed.event_type: on_tks_contracted,
    TksReleased.event_type: on_tks_left,
    TksResigned.event_type: on_tks_left,
    GroupFunded.event_type: on_group_funded,
    GroupDissolved.event_type: on_group_dissolved,
}
