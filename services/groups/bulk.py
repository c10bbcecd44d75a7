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
routes make one request per item instead (`ask_in_turn`), each in its own transaction, every
item of one call sharing a `batch_id` that a checker grants with `POST /approvals/grant` or lists
with `GET /approvals?batch_id=`. A year whose rules want no checker carries the item out at once,
as its single call would.
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
    Book,
    _all_settled,
    _failure,
    _item,
    act_on_group,
    batch_turn,
    is_pending,
    summary,
    take_batch_lock,
)
from shared.aggregate import UnitOfWork
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
    with commit_watch() as watch, patient():
        try:
            async with batch_turn():
                return await ctx.command(
                    lambda uow: _decide(uow, actor, book, batch, status, act), actor)
        except DATABASE_UNAVAILABLE as exc:
            log.warning("bulk batch of %d items: database unavailable: %r", len(batch), exc)
            written = "unknown" if watch.reached_commit else "no"
            return [_unavailable(item.group_id, written) for item in batch]
        except Exception:  # rolled back: run its items one transaction each
            log.exception("bulk batch of %d items failed; its items run one by one", len(batch))
    results = []
    for item in batch:
        results.append(await _item(item.group_id, status, lambda item=item: _one(
            ctx, actor, book, item, act)))
    return results


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


# asks for one item of a four-eyes bulk command under the call's batch id: its answer, a pending
# request (202) or, when the year's rules want no checker, the single call's answer
Ask = Callable[[Any, uuid.UUID], Awaitable[dict[str, Any]]]


async def ask_in_turn(config: ProgrammeConfig, items: list[Any], done_status: int,
                      ask: Ask) -> dict[str, Any]:
    """`{"batch_id", "results"}`: every item asked for in its own transaction, in order, under
    one new batch id; per item `{"group_id", "status": 202, "result": {"state": "pending",
    "request_id", ...}}`, `done_status` with the single call's answer when carried out at once,
    or the error's status and body. A database that goes away part-way: 503 whose `results` say
    what was written (the items after it not tried)."""
    if len(items) > config.bulk.max_items:
        raise DomainError(f"at most {config.bulk.max_items} items a request", field="items")
    batch_id = uuid.uuid4()
    results: list[dict[str, Any]] = []
    for item in items:
        if results and results[-1]["status"] == 503:
            results.append(_unavailable(item.group_id, "no", tried=False))
            continue
        result = await _item(item.group_id, 202,
                             lambda item=item: ask(item, batch_id))  # type: ignore[misc]
        if result["status"] == 202 and not is_pending(result["result"]):
            result["status"] = done_status
        results.append(result)
    if any(r["status"] == 503 for r in results):
        raise ServiceUnavailableError(
            "the database became unavailable part-way; `results` tells what was written "
            "(retry the items not written)", batch_id=str(batch_id), results=results,
            written=sum(r["status"] < 300 for r in results))
    return {"batch_id": str(batch_id), "results": results}


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
