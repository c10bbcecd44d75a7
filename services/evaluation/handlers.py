"""Command handlers: open and close a year's evaluation (load, decide, save); the close is
asked for by one ministry admin and carried out when another grants it (four eyes)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from services.evaluation import views
from services.evaluation.config import CLOSE_YEAR, Policy
from services.evaluation.domain import EvaluationCycle, TksEvaluations, cycle_stream, tks_stream
from services.evaluation.scoring import evaluate_year
from shared.aggregate import UnitOfWork
from shared.approvals import FourEyes, Pending
from shared.auth import Actor
from shared.errors import ConflictError, NotFoundError
from shared.service import ServiceContext

# the policy of a programme year (its rules in force, or an operator's override)
PolicyOf = Callable[[asyncpg.Connection | asyncpg.Pool, int], Awaitable[Policy]]


async def open_evaluation(ctx: ServiceContext, year: int, policy: Policy,
                          actor: Actor) -> dict[str, Any]:
    async def decide(uow: UnitOfWork) -> dict[str, Any]:
        stream = cycle_stream(year)
        cycle = await uow.load(EvaluationCycle, stream) or EvaluationCycle(stream)
        cycle.open(year, policy)
        await uow.save(cycle)
        return await views.cycle_summary(uow.conn, year)
    return await ctx.command(decide, actor)


async def request_close(ctx: ServiceContext, year: int, actor: Actor, policy_of: PolicyOf,
                        four_eyes: FourEyes) -> tuple[int, dict[str, Any]]:
    """The maker's close: refused as the close itself would refuse it (no cycle: 404; closed:
    409 with the first result), nothing written then. When the year's rules want four eyes for
    `close_year` (the shipped ones do), records a pending request and answers (202, its
    summary); a close of the year already waiting for a checker is answered instead (202,
    `already_pending`, nothing written: one year closes once, so one request suffices, and a
    client retrying after a lost answer grants that one). Otherwise closes at once and answers
    (200, the result)."""
    async def decide(uow: UnitOfWork) -> tuple[int, dict[str, Any]]:
        stream = cycle_stream(year)
        await _closable(uow, year)  # takes the cycle's lock: makers of one year queue here
        waiting = await uow.conn.fetchrow(
            "SELECT request_id, command_type, target, expires_at, checker_roles "
            "FROM approval_requests WHERE command_type = $1 AND target = $2 "
            "AND state = 'pending' AND expires_at > $3 ORDER BY requested_at LIMIT 1",
            CLOSE_YEAR, stream, four_eyes.clock())
        if waiting is not None:
            return 202, {**Pending(waiting["request_id"], waiting["command_type"],
                                   waiting["target"], waiting["expires_at"],
                                   list(waiting["checker_roles"])).out(),
                         "year": year, "already_pending": True}
        pending = await four_eyes.submit(uow, actor, command_type=CLOSE_YEAR, target=stream,
                                         payload={"year": year}, province_code=None, year=year)
        if pending is not None:
            return 202, {**pending.out(), "year": year, "already_pending": False}
        return 200, await close_year(uow, year, policy_of)
    return await ctx.command(decide, actor)


async def _closable(uow: UnitOfWork, year: int) -> EvaluationCycle:
    # the exclusive cycle lock waits for consumer batches touching this year (see projections)
    cycle = await uow.load(EvaluationCycle, cycle_stream(year))
    if cycle is None:
        raise NotFoundError(f"no evaluation is open for {year}", field="year")
    if cycle.status == "closed":
        raise ConflictError(f"the {year} evaluation is already closed", field="year",
                            result=await views.close_result(uow.conn, year))
    return cycle


async def close_year(uow: UnitOfWork, year: int, policy_of: PolicyOf) -> dict[str, Any]:
    """Scores every TKS of the year under the year's policy as in force now, and writes all
    outcomes in the unit of work's transaction; the outbox relay publishes them. Raises
    ConflictError carrying the first close's result when the year is closed already.
    Carried out when a checker grants a close (`close_year_executor`), or at once when the
    year's rules do not want four eyes for it."""
    cycle = await _closable(uow, year)
    cycle.adopt(await policy_of(uow.conn, year))
    assert cycle.policy is not None
    outcome = evaluate_year(await views.tks_facts(uow.conn, year), cycle.policy)
    evaluated = cycle.close(outcome)
    # the TKS streams are resumed at their versions, neither replayed nor locked (thousands
    # of locks would not fit the lock table): a concurrent writer is still caught by the
    # versions and the whole close is retried
    versions = await uow.store.stream_versions(
        uow.conn, [tks_stream(e.tks_id) for e in evaluated])
    streams = []
    for event in evaluated:
        stream = tks_stream(event.tks_id)
        streams.append(TksEvaluations.at_version(stream, versions.get(stream, 0)))
        streams[-1].add(event)
    await uow.save_many([*streams, cycle])
    return await views.close_result(uow.conn, year)
