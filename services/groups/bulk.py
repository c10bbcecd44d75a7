"""Bulk commands applied set-based: many items over many groups in a few transactions.

Each item keeps the single call's rules and answer: the group is loaded, the caller's province
checked, the same aggregate method decides. What changes is the unit of work: up to
`GROUPS_PER_TRANSACTION` groups are locked and read in one statement, every item over them is
decided in the request's order (so two items of one group run one after the other, as two single
calls would), the events of the items that passed are appended in one statement, and the batch
commits once. Batches take turns (`handlers.batch_turn`, `take_batch_lock`): each writes the
tallies of many provinces, so two side by side could deadlock. A refused item records nothing
(the aggregate checks its rules before recording), so it changes nothing and hides nothing of
the others. A batch that fails for another reason (a fault of ours) rolls back and its items run
again one transaction each, so that fault stays with its item. A database that goes away
part-way gives the bulk 503 with a result per item.

Fundings and LPJ acceptances need four eyes (shared.approvals, docs/four-eyes.md): their bulk
routes make one request per item instead (`ask_in_batches`), many groups a transaction as above,
every item of one call sharing a `batch_id` that a checker grants with `POST /approvals/grant` or
lists with `GET /approvals?batch_id=`. A year whose rules want no checker carries the item out at
once, as its single call would.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from services.groups.config import GroupYearRules, ProgrammeConfig
from services.groups.domain import Group, stream_id
from services.groups.handlers import (
    GROUPS_PER_TRANSACTION,
    AskFor,
    Book,
    _all_settled,
    _failure,
    _item,
    act_on_group,
    ask_on_group,
    asking,
    batch_turn,
    ensure_ministry_funds,
    ensure_not_asked,
    is_pending,
    pending_asks,
    summary,
    take_batch_lock,
)
from shared.aggregate import UnitOfWork
from shared.approvals import FourEyes
from shared.auth import Actor
from shared.errors import DomainError, NotFoundError
from shared.idempotency import commit_watch
from shared.service import ServiceContext
from shared.shedding import DATABASE_UNAVAILABLE, ServiceUnavailableError, patient

log = logging.getLogger("tkm.groups")



# decides one item: (group, item, the rules of the group's programme year) -> its answer
Act = Callable[[Group, Any, GroupYearRules], dict[str, Any]]


class _PartlyRecorded(RuntimeError):
    """An aggregate method raised after recording: its group's pending events cannot be
    trusted, so the batch runs again item by item."""


async def apply_in_batches(ctx: ServiceContext, actor: Actor, config: ProgrammeConfig,
                           book: Book, items: list[Any], status: int,
                           act: Act) -> list[dict[str, Any]]:
    """A result per item, in the order of `items`: `{"group_id", "status", "result"}` when
    `act(group, item, rules)` passed (its answer as `result`), else the error's status and body."""
    if len(items) > config.bulk.max_items:
        raise DomainError(f"at most {config.bulk.max_items} items a request", field="items")
    batches, current, groups = [], [], set()
    for item in items:  # batches run one after another: a group's items keep their order
        if item.group_id not in groups and len(groups) == GROUPS_PER_TRANSACTION:
            batches.append(current)
            current, groups = [], set()
        current.append(item)
        groups.add(item.group_id)
    batches.append(current)
    results: list[dict[str, Any]] = []
    for batch in batches:
        if any(r["status"] == 503 for r in results):  # the database went away: stop there
            results.extend(_unavailable(item.group_id, "no", tried=False) for item in batch)
            continue
        results.extend(await _batch(ctx, actor, book, batch, status, act))
    return _all_settled(results)


async def _batch(ctx: ServiceContext, actor: Actor, book: Book, batch: list[Any], status: int,
                 act: Act) -> list[dict[str, Any]]:
    return await _in_one_transaction(
        ctx, actor, batch, "bulk batch",
        lambda uow: _decide(uow, actor, book, batch, status, act),
        lambda item: _item(item.group_id, status, lambda: _one(ctx, actor, book, item, act)))


async def _in_one_transaction(ctx: ServiceContext, actor: Actor, batch: list[Any], what: str,
                              decide: Callable[[UnitOfWork], Awaitable[list[dict[str, Any]]]],
                              each: Callable[[Any], Awaitable[dict[str, Any]]]
                              ) -> list[dict[str, Any]]:
    """A batch's items decided in one transaction (`decide`), taking turns with the other
    batches. The database gone: 503 per item, saying whether it may be written. Any other
    failure rolls the batch back and runs each item in a transaction of its own (`each`), so
    the fault stays with its item."""
    with commit_watch() as watch, patient():
        try:
            async with batch_turn():
                return await ctx.command(decide, actor)
        except DATABASE_UNAVAILABLE as exc:
            log.warning("%s of %d items: database unavailable: %r", what, len(batch), exc)
            written = "unknown" if watch.reached_commit else "no"
            return [_unavailable(item.group_id, written) for item in batch]
        except Exception:  # rolled back: run its items one transaction each
            log.exception("%s of %d items failed; its items run one by one", what, len(batch))
    return [await each(item) for item in batch]


async def _decide(uow: UnitOfWork, actor: Actor, book: Book, batch: list[Any], status: int,
                  act: Act) -> list[dict[str, Any]]:
    await take_batch_lock(uow)
    groups = await uow.load_many(Group, {stream_id(item.group_id) for item in batch})
    in_force = await book.resolver(uow.conn)  # each group decided by its own year's rules
    results = []
    for item in batch:
        group = groups.get(stream_id(item.group_id))
        recorded = len(group.pending) if group is not None else 0
        try:
            if group is None:
                raise NotFoundError("no such group", field="group_id", group_id=item.group_id)
            actor.ensure_province(group.province_code)
            results.append({"group_id": item.group_id, "status": status,
                            "result": act(group, item, in_force(group.year).rules)})
        except DomainError as exc:
            if group is not None and len(group.pending) != recorded:
                raise _PartlyRecorded(item.group_id) from exc
            results.append(_failure(item.group_id, exc))
    await uow.save_many(groups.values())
    return results


async def _one(ctx: ServiceContext, actor: Actor, book: Book, item: Any,
               act: Act) -> dict[str, Any]:
    _, result = await act_on_group(ctx, actor, item.group_id,
                                   lambda g, rules: act(g, item, rules), book)
    return result


def _unavailable(group_id: str, written: str, *, tried: bool = True) -> dict[str, Any]:
    if not tried:
        reason = "not tried: the database became unavailable before this item's turn"
    elif written == "unknown":
        reason = ("the database became unavailable while committing this item: it may or may "
                  "not be written")
    else:
        reason = "the database was unavailable: this item was not written"
    return {"group_id": group_id, "status": 503, "written": written,
            "error": {"status": 503, "field": None, "reason": reason}}


@dataclass(frozen=True)
class Target:
    """An item that names its group only (an approval)."""

    group_id: str


# ---- approval and funding ---------------------------------------------------------------------

def approved(group: Group, item: Any, rules: GroupYearRules) -> dict[str, Any]:
    """POST /groups/{id}/approval for one item."""
    group.approve()
    return summary(group)


# decides one item of a four-eyes bulk command on its loaded group: what it asks for, or the
# DomainError that refuses it (`handlers.funding_ask`, `handlers.lpj_ask`)
Prepare = Callable[[Group, Any, GroupYearRules], AskFor]

ASKS_PER_TRANSACTION = 100  # groups of a four-eyes bulk call asked for in one transaction


async def ask_in_batches(ctx: ServiceContext, actor: Actor, config: ProgrammeConfig,
                         book: Book, four_eyes: FourEyes, items: list[Any], done_status: int,
                         prepare: Prepare) -> dict[str, Any]:
    """`{"batch_id", "results"}`: every item asked for as its single call would (the same
    checks, in the same order, and the same answer), under one new batch id; per item
    `{"group_id", "status": 202, "result": {"state": "pending", "request_id", ...}}`,
    `done_status` with the single call's answer when carried out at once, or the error's
    status and body. Up to ASKS_PER_TRANSACTION groups share a transaction: locked and read
    at once, decided in memory, their requests written in a few statements; a group's second
    item starts the next transaction, so it is decided after the first one's request, as a
    second call would be. A transaction that fails for a reason of ours runs its items one
    transaction each. A database that goes away part-way: 503 whose `results` say what was
    written (the items after it not tried)."""
    if len(items) > config.bulk.max_items:
        raise DomainError(f"at most {config.bulk.max_items} items a request", field="items")
    batch_id = uuid.uuid4()
    batches: list[list[Any]] = [[]]
    for item in items:
        if len(batches[-1]) == ASKS_PER_TRANSACTION or any(
                i.group_id == item.group_id for i in batches[-1]):
            batches.append([])
        batches[-1].append(item)
    results: list[dict[str, Any]] = []
    for batch in batches:
        if any(r["status"] == 503 for r in results):  # the database went away: stop there
            results.extend(_unavailable(item.group_id, "no", tried=False) for item in batch)
            continue
        results.extend(await _ask_batch(ctx, actor, book, four_eyes, batch, done_status,
                                        prepare, batch_id))
    if any(r["status"] == 503 for r in results):
        raise ServiceUnavailableError(
            "the database became unavailable part-way; `results` tells what was written "
            "(retry the items not written)", batch_id=str(batch_id), results=results,
            written=sum(r["status"] < 300 for r in results))
    return {"batch_id": str(batch_id), "results": results}


async def _ask_batch(ctx: ServiceContext, actor: Actor, book: Book, four_eyes: FourEyes,
                     batch: list[Any], done_status: int, prepare: Prepare,
                     batch_id: uuid.UUID) -> list[dict[str, Any]]:
    async def one(item: Any) -> dict[str, Any]:
        result = await _item(item.group_id, 202, lambda: ask_on_group(
            ctx, actor, item.group_id, book, four_eyes,
            lambda group, rules: prepare(group, item, rules), batch_id))
        if result["status"] == 202 and not is_pending(result["result"]):
            result["status"] = done_status
        return result

    return await _in_one_transaction(
        ctx, actor, batch, "bulk asks",
        lambda uow: _ask(uow, actor, book, four_eyes, batch, done_status, prepare, batch_id),
        one)


async def _ask(uow: UnitOfWork, actor: Actor, book: Book, four_eyes: FourEyes,
               batch: list[Any], done_status: int, prepare: Prepare,
               batch_id: uuid.UUID) -> list[dict[str, Any]]:
    await take_batch_lock(uow)
    groups = await uow.load_many(Group, {stream_id(item.group_id) for item in batch})
    in_force = await book.resolver(uow.conn)
    pending = await pending_asks(uow.conn, list(groups))
    results: list[dict[str, Any] | None] = []
    asks: list[tuple[int, AskFor]] = []
    for item in batch:  # each group once: its method's event is dropped unless carried out
        group = groups.get(stream_id(item.group_id))
        try:
            if group is None:
                raise NotFoundError("no such group", field="group_id", group_id=item.group_id)
            actor.ensure_province(group.province_code)
            ask = prepare(group, item, in_force(group.year).rules)
            ensure_not_asked(ask, pending)
        except DomainError as exc:
            results.append(_failure(item.group_id, exc))
            continue
        asks.append((len(results), ask))
        results.append(None)
    made = await four_eyes.submit_many(uow, actor, [asking(ask) for _, ask in asks],
                                       batch_id=batch_id)
    carried: list[Group] = []
    for (index, ask), outcome in zip(asks, made, strict=True):
        group_id = ask.group.group_id
        try:
            if isinstance(outcome, DomainError):
                raise outcome
            if outcome is not None:
                results[index] = {"group_id": group_id, "status": 202,
                                  "result": {**outcome.out(), **ask.answer}}
                continue
            if ask.ministry_only:
                ensure_ministry_funds(actor)
        except DomainError as exc:
            results[index] = _failure(group_id, exc)
            continue
        results[index] = {"group_id": group_id, "status": done_status, "result": ask.done()}
        carried.append(ask.group)
    saved = {id(group) for group in carried}
    for group in groups.values():  # only what was carried out at once is saved
        if id(group) not in saved:
            group.pending.clear()
    await uow.save_many(carried)
    return [r for r in results if r is not None]


# ---- accountability reports (LPJ) -------------------------------------------------------------

def submitted(group: Group, item: Any, rules: GroupYearRules) -> dict[str, Any]:
    """POST /groups/{id}/lpj for one item (a fresh report id, as the single call)."""
    report_id = str(uuid.uuid4())
    event = group.submit_lpj(report_id, tools=item.tools, materials=item.materials,
                             other=item.other, evidence_count=item.evidence_count)
    return {"group_id": group.group_id, "report_id": report_id, "status": "submitted",
            "remaining_balance": event.remaining_balance}


def returned(group: Group, item: Any, rules: GroupYearRules) -> dict[str, Any]:
    group.return_lpj(item.report_id, item.reason_code, item.note)
    return {"group_id": group.group_id, "report_id": item.report_id, "status": "returned"}
