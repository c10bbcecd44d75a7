"""Command handlers: load the group, let it decide, save, in one transaction per group."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
import weakref
from dataclasses import dataclass
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, timedelta
from typing import Any, BinaryIO

import asyncpg

from services.groups import privacy, views
from services.groups.commands import (
    ChangeMembers,
    FundGroup,
    MemberIn,
    RegisterGroup,
    SubmitLpj,
)
from services.groups.config import (
    ACCEPT_LPJ,
    CHANGE_TRANCHE,
    FUND,
    GroupYearRules,
    ProgrammeConfig,
)
from services.groups.csv_import import (
    Context,
    GroupDraft,
    ParsedFile,
    RowError,
    parse_groups_csv,
)
from services.groups.domain import (
    Group,
    GroupHeader,
    Person,
    group_header,
    member_from_input,
    stream_id,
)
from services.groups.projections import MembershipTakenError
from shared.aggregate import UnitOfWork, lock_stream
from shared.approvals import (
    PENDING,
    ApprovalRequested,
    Asking,
    Carried,
    FourEyes,
    Undecided,
)
from shared.auth import Actor, Role
from shared.contracts.groups import GroupFunded
from shared.envelope import utcnow
from shared.errors import (
    ConflictError,
    DomainError,
    ForbiddenError,
    NotFoundError,
    RuleViolationError,
)
from shared.idempotency import commit_watch
from shared.limits import MAX_REPORTED_ERRORS
from shared.pii import Keyring
from shared.privacy import keyring_of
from shared.localtime import local_today
from shared.rules import RuleBook
from shared.service import ServiceContext
from shared.shedding import DATABASE_UNAVAILABLE, ServiceUnavailableError, patient

log = logging.getLogger("tkm.groups")
# groups written in one transaction by a bulk request: each holds a slot of the server's lock
# table until commit
GROUPS_PER_TRANSACTION = 250
# bulk batches take turns: each writes the shared tallies (people reached, funding by province)
# of many provinces, so two side by side could deadlock on those rows
BATCH_LOCK = "groups.bulk-batch"
_batch_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = \
    weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def batch_turn() -> AsyncIterator[None]:
    """This process's turn for a bulk batch transaction: one at a time, so the batches waiting
    for theirs hold no pooled connection. Inside the transaction, `take_batch_lock` makes the
    batches of every instance take turns."""
    lock = _batch_turns.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock:
        yield


async def take_batch_lock(uow: UnitOfWork) -> None:
    await lock_stream(uow.conn, BATCH_LOCK)


class GroupExistsError(ConflictError):
    pass


Book = RuleBook[GroupYearRules]


def today() -> date:
    return utcnow().date()


def ensure_may_backdate(actor: Actor, field: str = "registered_on") -> None:
    """Only the ministry's admin gives a registration date. Raises ForbiddenError (403)."""
    if actor.role is not Role.ADMIN:
        raise ForbiddenError("only the ministry (ministry_admin) registers a group with a past "
                             "registered_on", field=field)


def registration_date(given: date | None, actor: Actor, regency_code: str,
                      field: str = "registered_on") -> tuple[date, bool]:
    """The registration date and whether it was given (backdated): today in the regency, or a
    date the ministry's admin gives for a past year loaded as it happened. Raises
    ForbiddenError (403) when anyone else gives one, RuleViolationError (422) for a date after
    today in the regency."""
    local = local_today(regency_code)
    if given is None:
        return local, False
    ensure_may_backdate(actor, field)
    if given > local:
        raise RuleViolationError(f"registered_on {given.isoformat()} is after today in the "
                                 f"regency ({local.isoformat()})", field=field)
    return given, True


def latest_local_date() -> date:
    """Today in WIT (UTC+9, no daylight saving), Indonesia's easternmost time zone: the latest
    date an officer anywhere in the country may call today."""
    return (utcnow() + timedelta(hours=9)).date()


def _members(members: list[MemberIn], on: date, keyring: Keyring) -> list[Person]:
    """The members typed, checked in plaintext (never echoing a NIK) and hashed."""
    out = []
    for i, m in enumerate(members):
        try:
            out.append(member_from_input(m.nik, m.name, m.phone, on, keyring.nik_hash))
        except DomainError as exc:
            raise DomainError(exc.reason, field=f"members[{i}].{exc.field}", member=i) from None
    return out


def _point_at_member(exc: MembershipTakenError | privacy.MemberErasedError,
                     members: list[Person]) -> DomainError:
    key = exc.nik_hash if isinstance(exc, privacy.MemberErasedError) else exc.nik
    i = next(i for i, m in enumerate(members) if m.nik_hash == key)
    return ConflictError(exc.reason, field=f"members[{i}].nik", member=i, **exc.details)


async def _register(uow: UnitOfWork, keyring: Keyring, header: GroupHeader,
                    members: list[Person], external_ref: str | None, rules: GroupYearRules,
                    on: date, backdated: bool = False) -> Group:
    if await uow.load(Group, stream_id(header.group_id)) is not None:
        raise GroupExistsError(
            f"group '{header.name}' is already registered in regency {header.regency_code} "
            f"for {header.year}", field="name", group_id=header.group_id)
    seal = await privacy.sealer(uow.conn, keyring, members)
    group = Group.register(header, members, seal=seal, external_ref=external_ref, rules=rules,
                           registered_on=on, backdated=backdated)
    await uow.save(group)
    return group


async def register_group(ctx: ServiceContext, cmd: RegisterGroup, actor: Actor,
                         config: ProgrammeConfig, book: Book) -> dict[str, Any]:
    if cmd.registered_on is not None:
        ensure_may_backdate(actor)  # 403 before anything else
    rules = (await book.in_force(ctx.pool, cmd.year)).rules  # the group's year's, not today's
    header = group_header(cmd.year, cmd.stage, cmd.regency_code, cmd.business_type, cmd.name,
                          config, rules)
    actor.ensure_province(header.province_code)
    on, backdated = registration_date(cmd.registered_on, actor, header.regency_code)
    keyring = keyring_of(ctx)
    members = _members(cmd.members, on, keyring)

    async def decide(uow: UnitOfWork) -> Group:
        return await _register(uow, keyring, header, members, cmd.external_ref, rules, on,
                               backdated)

    try:
        group = await ctx.command(decide, actor)
    except MembershipTakenError as exc:
        raise _point_at_member(exc.told_to(actor), members) from None
    except privacy.MemberErasedError as exc:
        raise _point_at_member(exc, members) from None
    return summary(group)


def summary(group: Group) -> dict[str, Any]:
    return {"group_id": group.group_id, "status": group.status, "stage": group.stage,
            "year": group.year, "province_code": group.province_code,
            "regency_code": group.regency_code, "member_count": group.member_count,
            "tranches": group.tranches, "funded_total": group.funded_total}


async def act_on_group(ctx: ServiceContext, actor: Actor, group_id: str,
                       act: Callable[..., Any], book: Book | None = None) -> tuple[Group, Any]:
    """Load the group, check the caller may act in its province, run `act`, save. With
    `book`, `act(group, rules)` is given the rules of the group's programme year (from the
    book's cache: no statement in steady state)."""

    async def decide(uow: UnitOfWork) -> tuple[Group, Any]:
        group = await uow.load(Group, stream_id(group_id))
        if group is None:
            raise NotFoundError("no such group", field="group_id", group_id=group_id)
        actor.ensure_province(group.province_code)
        if book is None:
            outcome = act(group)
        else:
            outcome = act(group, (await book.in_force(uow.conn, group.year)).rules)
        await uow.save(group)
        return group, outcome

    return await ctx.command(decide, actor)


async def change_members(ctx: ServiceContext, group_id: str, cmd: ChangeMembers, actor: Actor,
                         book: Book) -> dict[str, Any]:
    keyring = keyring_of(ctx)
    members = _members(cmd.members, today(), keyring)

    async def decide(uow: UnitOfWork) -> Group:
        # the roster is in the events, not in the light snapshot
        group = await uow.load(Group, stream_id(group_id), from_snapshot=False)
        if group is None:
            raise NotFoundError("no such group", field="group_id", group_id=group_id)
        actor.ensure_province(group.province_code)
        rules = (await book.in_force(uow.conn, group.year)).rules
        # the keys of the persons this change adds (one statement; none when nobody joins)
        joining = [m for m in members if m.nik_hash not in group.members
                   and m.nik not in group.members]
        seal = await privacy.sealer(uow.conn, keyring, joining)
        group.change_members(members, seal=seal, rules=rules,
                             today=local_today(group.regency_code))
        await uow.save(group)
        return group

    try:
        group = await ctx.command(decide, actor)
    except MembershipTakenError as exc:
        raise _point_at_member(exc.told_to(actor), members) from None
    except privacy.MemberErasedError as exc:
        raise _point_at_member(exc, members) from None
    return summary(group)


def funding_command(tranche: int) -> str:
    """The four-eyes command type of a funding: `fund` for a group's first tranche,
    `change_tranche` for a later one (the amount and date of each tranche are its own)."""
    return FUND if tranche == 1 else CHANGE_TRANCHE


def ensure_ministry_funds(actor: Actor) -> None:
    """A funding carried out at once (the year's rules want no checker for it) is the
    ministry's, as before four eyes."""
    if actor.role is not Role.ADMIN:
        raise ForbiddenError("funding a group alone is the ministry's (ministry_admin); the "
                             "year's rules do not let a provincial officer ask for it",
                             field="Authorization")


async def _target(uow: UnitOfWork, actor: Actor, group_id: str) -> Group:
    group = await uow.load(Group, stream_id(group_id))
    if group is None:
        raise NotFoundError("no such group", field="group_id", group_id=group_id)
    actor.ensure_province(group.province_code)
    return group


@dataclass
class AskFor:
    """What a four-eyes command on a group asks for, decided on the loaded group in memory
    (the command's method has recorded its event: saved only when carried out at once)."""

    group: Group
    command_type: str
    key: str  # one pending request per group and `key`'s value (the tranche, the report)
    value: Any
    guards: tuple[str, ...]  # the command types that value is unique among
    payload: dict[str, Any]
    amount: int
    answer: dict[str, Any]  # what the pending answer carries beside the request
    done: Callable[[], dict[str, Any]]  # the answer when carried out at once
    ministry_only: bool = False  # carried out at once by the ministry alone


def funding_ask(group: Group, cmd: Any, rules: GroupYearRules) -> AskFor:
    """A funding (FundGroup or a bulk item) checked as it would be carried out now; raises
    the DomainError that refuses it (not approved, tranche funded, over the ceiling, ...)."""
    event = group.fund(tranche=cmd.tranche, amount=cmd.amount, disbursed_on=cmd.disbursed_on,
                       budget_year=cmd.budget_year, rules=rules, today=latest_local_date())
    return AskFor(group, funding_command(cmd.tranche), "tranche", cmd.tranche,
                  (FUND, CHANGE_TRANCHE), funding_payload(cmd), cmd.amount,
                  {"group_id": group.group_id}, lambda: funded(group, event, rules),
                  ministry_only=True)


def lpj_ask(group: Group, report_id: str) -> AskFor:
    """An LPJ's acceptance checked now; raises unless the report awaits review."""
    group.accept_lpj(report_id)
    return AskFor(group, ACCEPT_LPJ, "report_id", report_id, (ACCEPT_LPJ,),
                  {"report_id": report_id}, group.reports[report_id].spent,
                  {"group_id": group.group_id, "report_id": report_id},
                  lambda: lpj_accepted(group.group_id, report_id))


async def pending_asks(conn: asyncpg.Connection, targets: list[str]
                       ) -> dict[tuple[str, str, str], uuid.UUID]:
    """The pending requests on these groups: (target, command type, the JSON of the value
    of its key) -> request id, in one query."""
    rows = await conn.fetch(
        "SELECT request_id, target, command_type, payload::text AS payload "
        "FROM approval_requests WHERE state = 'pending' AND target = ANY($1::text[])", targets)
    found: dict[tuple[str, str, str], uuid.UUID] = {}
    for row in rows:
        for key, value in json.loads(row["payload"]).items():
            found.setdefault((row["target"], row["command_type"], f"{key}={json.dumps(value)}"),
                             row["request_id"])
    return found


def ensure_not_asked(ask: AskFor, pending: dict[tuple[str, str, str], uuid.UUID]) -> None:
    """One pending request per group and tranche (or LPJ report): a second maker asking for
    the same is told which request awaits a checker (409), rather than queueing a duplicate.
    Race-free: the group's stream lock (taken when it was loaded) orders the makers, and the
    request's row is written in the maker's transaction."""
    value = f"{ask.key}={json.dumps(ask.value)}"
    for command_type in ask.guards:
        request_id = pending.get((ask.group.stream_id, command_type, value))
        if request_id is not None:
            raise ConflictError(f"a request for this {ask.key.replace('_', ' ')} already "
                                "awaits a checker (GET /approvals/{request_id})", field=ask.key,
                                request_id=str(request_id))


def funding_payload(cmd: Any) -> dict[str, Any]:
    """What a funding request carries out when granted (no personal data)."""
    return {"tranche": cmd.tranche, "amount": cmd.amount,
            "disbursed_on": cmd.disbursed_on.isoformat(), "budget_year": cmd.budget_year}


async def ask_on_group(ctx: ServiceContext, actor: Actor, group_id: str, book: Book,
                       four_eyes: FourEyes, decide: Callable[[Group, GroupYearRules], AskFor],
                       batch_id: uuid.UUID | None = None) -> dict[str, Any]:
    """One four-eyes command on a group in its own transaction: a pending request
    (`{"state": "pending", ...}`) or, when the year's rules want no checker for it, carried
    out at once. A command that could never be carried out is refused now and writes nothing."""

    async def run(uow: UnitOfWork) -> dict[str, Any]:
        group = await _target(uow, actor, group_id)
        ask = decide(group, (await book.in_force(uow.conn, group.year)).rules)
        ensure_not_asked(ask, await pending_asks(uow.conn, [group.stream_id]))
        [made] = await four_eyes.submit_many(uow, actor, [asking(ask)], batch_id=batch_id)
        if isinstance(made, DomainError):
            raise made
        if made is not None:
            return {**made.out(), **ask.answer}
        if ask.ministry_only:
            ensure_ministry_funds(actor)
        await uow.save(group)
        return ask.done()

    return await ctx.command(run, actor)


def asking(ask: AskFor) -> Asking:
    group = ask.group
    return Asking(command_type=ask.command_type, target=group.stream_id, payload=ask.payload,
                  province_code=group.province_code, year=group.year, amount=ask.amount)


async def fund_group(ctx: ServiceContext, group_id: str, cmd: FundGroup, actor: Actor,
                     book: Book, four_eyes: FourEyes,
                     batch_id: uuid.UUID | None = None) -> dict[str, Any]:
    """Ask for a funding (four eyes) or, when the year's rules want no checker for it, carry
    it out at once (the ministry only)."""
    return await ask_on_group(ctx, actor, group_id, book, four_eyes,
                              lambda group, rules: funding_ask(group, cmd, rules), batch_id)


async def accept_lpj(ctx: ServiceContext, group_id: str, report_id: str, actor: Actor,
                     book: Book, four_eyes: FourEyes,
                     batch_id: uuid.UUID | None = None) -> dict[str, Any]:
    """Ask for an LPJ's acceptance (four eyes) or, when the year's rules want no checker for
    it, accept it at once. A report that is not awaiting review is refused now."""
    return await ask_on_group(ctx, actor, group_id, book, four_eyes,
                              lambda group, _: lpj_ask(group, report_id), batch_id)


def lpj_accepted(group_id: str, report_id: str) -> dict[str, Any]:
    return {"group_id": group_id, "report_id": report_id, "status": "accepted"}


def is_pending(answer: dict[str, Any]) -> bool:
    """A command's answer that is a four-eyes request awaiting a checker (HTTP 202)."""
    return answer.get("state") == PENDING and "request_id" in answer


def four_eyes_of(book: Book) -> FourEyes:
    """The groups service's four eyes on money (shared.approvals): the rules of each group's
    year (`GroupYearRules.four_eyes`) and what a checker's grant carries out."""

    async def carry_out(uow: UnitOfWork, request: ApprovalRequested,
                        checker: Actor) -> dict[str, Any]:
        group = await _granted_target(uow, request)
        answer = _carried_out_on(group, request, (await book.in_force(uow.conn, group.year)).rules,
                                 latest_local_date())
        await uow.save(group)
        return answer

    async def carry_out_many(uow: UnitOfWork, requests: list[ApprovalRequested],
                             checker: Actor) -> tuple[list[Carried | DomainError], list[Group]]:
        """What `carry_out` does, for a checker's list: the groups locked and read at once,
        each request decided in order on its group in memory (by the rules of the group's
        year), their events saved by the kernel in one statement."""
        groups = await uow.load_many(Group, {r.target for r in requests})
        in_force = await book.resolver(uow.conn)
        today = latest_local_date()
        outcomes: list[Carried | DomainError] = []
        for request in requests:
            group = groups.get(request.target)
            if group is None:  # pragma: no cover - a request is made on a loaded group
                outcomes.append(NotFoundError("the request's group no longer exists",
                                              field="request_id"))
                continue
            recorded = len(group.pending)
            try:
                answer = _carried_out_on(group, request, in_force(group.year).rules, today)
            except DomainError as exc:
                if len(group.pending) != recorded:
                    raise Undecided(request.target) from exc
                outcomes.append(exc)
                continue
            outcomes.append(Carried(answer, group.pending[recorded:]))
        return outcomes, list(groups.values())

    return FourEyes(book, lambda rules: rules.four_eyes, {
        FUND: carry_out, CHANGE_TRANCHE: carry_out, ACCEPT_LPJ: carry_out},
        carry_out_many=carry_out_many)


def _carried_out_on(group: Group, request: ApprovalRequested, rules: GroupYearRules,
                    today: date) -> dict[str, Any]:
    """A granted funding or LPJ acceptance decided on its loaded group (by the rules of the
    group's year): the single call's answer; raises the DomainError that refuses it."""
    p = request.payload
    if request.command_type == ACCEPT_LPJ:
        group.accept_lpj(p["report_id"])
        return lpj_accepted(group.group_id, p["report_id"])
    event = group.fund(tranche=p["tranche"], amount=p["amount"],
                       disbursed_on=date.fromisoformat(p["disbursed_on"]),
                       budget_year=p["budget_year"], rules=rules, today=today)
    return funded(group, event, rules)


async def _granted_target(uow: UnitOfWork, request: ApprovalRequested) -> Group:
    group = await uow.load(Group, request.target)
    if group is None:  # pragma: no cover - a request is made on a loaded group
        raise NotFoundError("the request's group no longer exists", field="request_id")
    return group


def funded(group: Group, event: GroupFunded, rules: GroupYearRules) -> dict[str, Any]:
    """What a funding answers: the group, the tranche and its planned split (the split of the
    group's year)."""
    split = rules.funding
    return {**summary(group), "tranche": event.tranche, "amount": event.amount,
            "lpj_due_on": event.lpj_due_on.isoformat(),
            "planned_tools": event.amount * split.tools_percent // 100,
            "planned_materials": event.amount - event.amount * split.tools_percent // 100}


async def submit_lpj(ctx: ServiceContext, group_id: str, cmd: SubmitLpj,
                     actor: Actor) -> dict[str, Any]:
    report_id = str(uuid.uuid4())
    _, event = await act_on_group(ctx, actor, group_id, lambda g: g.submit_lpj(
        report_id, tools=cmd.tools, materials=cmd.materials, other=cmd.other,
        evidence_count=cmd.evidence_count))
    return {"group_id": group_id, "report_id": report_id, "status": "submitted",
            "remaining_balance": event.remaining_balance}


def _failure(group_id: str, exc: DomainError) -> dict[str, Any]:
    return {"group_id": group_id, "status": exc.status, "error": exc.body()["error"]}


async def _item(group_id: str, status: int,
                run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """One item of a bulk request, in its own transaction: its result, or exactly what
    became of it when it failed (never an exception that would hide the other items)."""
    with commit_watch() as watch, patient():
        try:
            return {"group_id": group_id, "status": status, "result": await run()}
        except DomainError as exc:
            return _failure(group_id, exc)
        except DATABASE_UNAVAILABLE as exc:
            log.warning("bulk item %s: database unavailable: %r", group_id, exc)
            written = "unknown" if watch.reached_commit else "no"
            reason = ("the database became unavailable while committing this item: it may "
                      "or may not be written" if watch.reached_commit else
                      "the database was unavailable: this item was not written")
            return {"group_id": group_id, "status": 503, "written": written,
                    "error": {"status": 503, "field": None, "reason": reason}}
        except Exception:  # a bug of ours: this item's transaction rolled back
            log.exception("bulk item %s failed", group_id)
            return {"group_id": group_id, "status": 500, "written": "no",
                    "error": {"status": 500, "field": None,
                              "reason": "internal error: this item was not written"}}


def _all_settled(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results, unless the database went away part-way: then a 503 carrying them."""
    if any(r["status"] == 503 for r in results):
        raise ServiceUnavailableError(
            "the database became unavailable part-way; `results` tells what was written "
            "(retry the items not written)", results=results,
            written=sum(r["status"] < 300 for r in results))
    return results


async def import_groups_csv(ctx: ServiceContext, raw: bytes | BinaryIO, actor: Actor,
                            config: ProgrammeConfig, book: Book) -> dict[str, Any]:
    # the rules of each group's own year, as in force now (read once for the file)
    resolve = await book.resolver(ctx.pool)
    keyring = keyring_of(ctx)
    parsed = await asyncio.to_thread(parse_groups_csv, raw, Context(
        config, resolve, may_backdate=actor.role is Role.ADMIN, nik_hash=keyring.nik_hash))
    ready = [g for g in parsed.groups if not g.errors and g.header is not None]
    known = await views.existing_group_ids(ctx.pool, [g.header.group_id for g in ready])
    gate = asyncio.Semaphore(config.bulk.concurrency)

    async def register(draft: GroupDraft) -> str:
        header = draft.header
        # another province's group is refused (403 below) whether or not it exists
        if header.group_id in known and actor.province_code in (None, header.province_code):
            return "already_registered"
        with commit_watch() as watch, patient():
            try:
                actor.ensure_province(header.province_code)
                async with gate:
                    await ctx.command(lambda uow: _register(
                        uow, keyring, header, draft.members, draft.external_ref, draft.rules,
                        draft.registered_on, draft.backdated), actor)
            except GroupExistsError:
                return "already_registered"
            except MembershipTakenError as exc:
                draft.fail(draft.row_of(exc.nik), "member_nik", exc.told_to(actor).reason)
            except privacy.MemberErasedError as exc:
                draft.fail(draft.row_of(exc.nik_hash), "member_nik", exc.reason)
            except DomainError as exc:
                draft.fail(draft.first_row, exc.field or "group_name", exc.reason)
            except DATABASE_UNAVAILABLE as exc:
                log.warning("CSV import of %s: database unavailable: %r", draft.name, exc)
                return "unknown" if watch.reached_commit else "not_written"
            except Exception:  # a bug of ours: this group's transaction rolled back
                log.exception("CSV import of %s failed", draft.name)
                draft.fail(draft.first_row, "group_name",
                           "internal error: this group was not registered")
        return "refused" if draft.errors else "registered"

    async def register_batch(batch: list[GroupDraft]) -> list[str]:
        """The batch's groups in one transaction; if any fails for another reason than its own
        rules (a member already in another group, a fault of ours), one by one as above."""
        with commit_watch() as watch, patient():
            try:
                async with batch_turn():
                    outcomes, refusals = await ctx.command(
                        lambda uow: _register_many(uow, keyring, batch, actor), actor)
            except DATABASE_UNAVAILABLE as exc:
                log.warning("CSV import of %d groups: database unavailable: %r", len(batch), exc)
                return ["unknown" if watch.reached_commit else "not_written"] * len(batch)
            except Exception as exc:  # noqa: BLE001 - rolled back: each group on its own
                log.info("CSV import batch of %d groups rolled back (%r): one by one",
                         len(batch), exc)
                return list(await asyncio.gather(*(register(g) for g in batch)))
        for draft, refusal in zip(batch, refusals, strict=True):
            if isinstance(refusal, privacy.MemberErasedError):
                draft.fail(draft.row_of(refusal.nik_hash), "member_nik", refusal.reason)
            elif refusal is not None:
                draft.fail(draft.first_row, refusal.field or "group_name", refusal.reason)
        return outcomes

    # groups registered set-based, up to GROUPS_PER_TRANSACTION a transaction, batches in turn
    batches = [ready[i:i + GROUPS_PER_TRANSACTION]
               for i in range(0, len(ready), GROUPS_PER_TRANSACTION)]
    said = [o for batch in await asyncio.gather(*(register_batch(b) for b in batches))
            for o in batch]
    outcomes = dict(zip((id(g) for g in ready), said, strict=True))
    report = _import_report(parsed, outcomes)
    if report["not_written"] or report["unknown"]:
        raise ServiceUnavailableError(
            "the database became unavailable part-way; `results` tells which groups were "
            "registered (send the others again)", **report)
    return report


async def _register_many(uow: UnitOfWork, keyring: Keyring, drafts: list[GroupDraft],
                         actor: Actor,
                         ) -> tuple[list[str], list[DomainError | None]]:
    """`_register` for many groups, set-based: an outcome per draft (registered,
    already_registered, refused) and the error of each refused one. The membership rule is
    checked as the events are saved: a person taken raises MembershipTakenError (all rolled
    back). The members' data keys are fetched (created for newcomers) once for the batch."""
    await take_batch_lock(uow)
    existing = await uow.load_many(Group, [stream_id(d.header.group_id) for d in drafts])
    seal = await privacy.sealer(uow.conn, keyring, [
        m for d in drafts if stream_id(d.header.group_id) not in existing for m in d.members])
    outcomes: list[str] = []
    refusals: list[DomainError | None] = []
    new: dict[str, Group] = {}
    for draft in drafts:
        header, refusal = draft.header, None
        try:
            actor.ensure_province(header.province_code)
            if stream_id(header.group_id) in existing or header.group_id in new:
                outcomes.append("already_registered")
                refusals.append(None)
                continue
            new[header.group_id] = Group.register(header, draft.members, seal=seal,
                                                  external_ref=draft.external_ref,
                                                  rules=draft.rules,
                                                  registered_on=draft.registered_on,
                                                  backdated=draft.backdated)
        except DomainError as exc:
            refusal = exc
        outcomes.append("refused" if refusal else "registered")
        refusals.append(refusal)
    await uow.save_many(new.values())
    return outcomes, refusals


def _import_report(parsed: ParsedFile, outcomes: dict[int, str]) -> dict[str, Any]:
    results, errors = [], list(parsed.errors)
    for draft in parsed.groups:
        status = outcomes.get(id(draft), "refused")
        errors.extend(draft.errors)
        results.append({"group_id": draft.header.group_id if draft.header else None,
                        "group_name": draft.name, "first_row": draft.first_row,
                        "member_rows": draft.row_count, "status": status})
    counts = {s: sum(1 for r in results if r["status"] == s)
              for s in ("registered", "already_registered", "refused", "not_written",
                        "unknown")}
    errors.sort(key=lambda e: (e.row, e.field))
    return {"rows": parsed.rows, "groups": len(results), **counts,
            "errors": [_row_error(e) for e in errors[:MAX_REPORTED_ERRORS]],
            "errors_total": len(errors), "results": results}


def _row_error(e: RowError) -> dict[str, Any]:
    return {"row": e.row, "field": e.field, "reason": e.reason, "group_name": e.group_name}
