"""Command handlers: open and close a year's evaluation (load, decide, save)."""

from __future__ import annotations

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


async def open_evaluation(ctx: ServiceContext, year: int, policy: Policy,
                          actor: Actor) -> dict[str, Any]:
    async def decide(uow: UnitOfWork) -> dict[str, Any]:
        stream = cycle_stream(year)
        cycle = await uow.load(EvaluationCycle, stream) or EvaluationCycle(stream)
        cycle.open(year, policy)
        await uow.save(cycle)
        return await views.cycle_summary(uow.conn, year)
    return await ctx.command(decide, actor)


async def close_evaluation(ctx: ServiceContext, year: int, actor: Actor) -> dict[str, Any]:
    """Scores every TKS of the year and writes all outcomes in one transaction; the outbox relay
    publishes them. A second close raises ConflictError carrying the first close's result."""
    async def decide(uow: UnitOfWork) -> dict[str, Any]:
        # the exclusive cycle lock waits for consumer batches touching this year (see projections)
        cycle = await uow.load(EvaluationCycle, cycle_stream(year))
        if cycle is None:
            raise NotFoundError(f"no evaluation is open for {year}", field="year")
        if cycle.status == "closed":
            raise ConflictError(f"the {year} evaluation is already closed", field="year",
                                result=await views.close_result(uow.conn, year))
        assert cycle.policy is not None
        outcome = evaluate_year(await views.tks_facts(uow.conn, year), cycle.policy)
        evaluated = cycle.close(outcome)
        versions = await _stream_versions(uow.conn, [tks_stream(e.tks_id) for e in evaluated])
        for event in evaluated:
            stream = TksEvaluations.at_version(tks_stream(event.tks_id),
                                               versions.get(tks_stream(event.tks_id), 0))
            stream.add(event)
            await uow.save(stream)
        await uow.save(cycle)
        return await views.close_result(uow.conn, year)
    return await ctx.command(decide, actor)


async def _stream_versions(conn: asyncpg.Connection, stream_ids: list[str]) -> dict[str, int]:
    # one query for all TKS streams instead of one load each; a concurrent writer is still caught
    # by the store's unique (stream, version) key and the whole close is retried
    rows = await conn.fetch(
        "SELECT stream_id, max(stream_version) AS version FROM events "
        "WHERE stream_id = ANY($1::text[]) GROUP BY stream_id", stream_ids)
    return {r["stream_id"]: r["version"] for r in rows}
