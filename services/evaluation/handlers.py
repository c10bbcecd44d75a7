"""Command handlers: open and close a year's evaluation (load, decide, save)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from services.evaluation import views
from services.evaluation.config import Policy
from services.evaluation.domain import EvaluationCycle, TksEvaluations, cycle_stream, tks_stream
from services.evaluation.scoring import evaluate_year
from shared.aggregate import UnitOfWork
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


async def close_evaluation(ctx: ServiceContext, year: int, actor: Actor,
                           policy_of: PolicyOf) -> dict[str, Any]:
    """Scores every TKS of the year under the year's policy as in force now, and writes all
    outcomes in one transaction; the outbox relay publishes them. A second close raises
    ConflictError carrying the first close's result."""
    async def decide(uow: UnitOfWork) -> dict[str, Any]:
        # the exclusive cycle lock waits for consumer batches touching this year (see projections)
        cycle = await uow.load(EvaluationCycle, cycle_stream(year))
        if cycle is None:
            raise NotFoundError(f"no evaluation is open for {year}", field="year")
        if cycle.status == "closed":
            raise ConflictError(f"the {year} evaluation is already closed", field="year",
                                result=await views.close_result(uow.conn, year))
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
    return await ctx.command(decide, actor)
