import random
import time
import uuid
from datetime import date

import asyncpg
import pytest

from services.evaluation.projections import HANDLERS, OWN_TABLES, project
from shared.aggregate import UnitOfWork
from shared.consumer import apply_handler
from shared.contracts import mentoring as m
from shared.contracts import recruitment as r
from shared.envelope import parse_payload
from shared.projections import rebuild
from tests.evaluation.integration.evaluation_helpers import (
    ADMIN,
    close_year,
    envelope,
    running_service,
)
from tests.support.kafka import eventually

pytestmark = pytest.mark.integration

TKS_COUNT = 900


def _year_of_facts(year: int, run: str) -> list:
    events = []
    for n in range(TKS_COUNT):
        tks, group = f"scale-{run}-{n}", f"scale-grp-{run}-{n}"
        province = f"{11 + n % 20}"
        events.append(envelope(r.TksRecruited(
            tks_id=tks, round_id="r", year=year, stage=1 + n % 3, province_code=province,
            regency_code=f"{province}{1 + n % 9:02d}", contract_start=date(year, 1, 1),
            contract_end=date(year, 12, 31)), f"tks-{tks}"))
        for month, revenue in ((2, 1_000_000), (11, 1_000_000 + 1_000 * n)):
            events.append(envelope(m.ReportFiled(
                group_id=group, tks_id=tks, period=f"{year}-{month:02d}", revenue=revenue,
                production_units=1, production_unit="pcs", members_active=10,
                new_workers=n % 3, on_time=n % 4 != 0), f"group-{group}"))
    return events


async def test_closing_900_tks_is_one_quick_transaction_published_by_the_relay(infra,
                                                                               database_url):
    year = random.randint(2030, 2090)
    run = uuid.uuid4().hex[:8]
    async with running_service(infra.kafka_bootstrap, database_url) as (app, client):
        ctx = app.state.ctx
        # the consumer handlers write the facts directly: the broker is not what is measured
        async with ctx.pool.acquire() as conn, conn.transaction():
            uow = UnitOfWork(conn, ctx.store, "test", uuid.uuid4())
            for env in _year_of_facts(year, run):
                await apply_handler(HANDLERS[env.event_type], uow, [(env, parse_payload(env))])
        assert (await client.post(f"/evaluations/{year}/open", headers=ADMIN)).status_code == 201

        started = time.perf_counter()
        closed = await close_year(client, year)  # asked for, then granted by another admin
        elapsed = time.perf_counter() - started
        summary = closed["summary"]
        assert summary["evaluated"] == TKS_COUNT
        assert summary["continued"] + summary["replaced"] == TKS_COUNT
        assert 0 < summary["continued"] < TKS_COUNT
        print(f"\nclosing {TKS_COUNT} TKS took {elapsed:.1f}s")
        # one transaction: every outcome and the close share the writing transaction (how
        # long it takes is the bench's business, not a timed test's)
        async with ctx.pool.acquire() as conn:
            written = await conn.fetchrow(
                "SELECT count(*) AS n, count(DISTINCT xmin::text) AS transactions FROM events "
                "WHERE (event_type = 'TksEvaluated' AND stream_id LIKE 'tks-scale-%') "
                "OR (event_type = 'EvaluationClosed' AND payload->>'year' = $1)", str(year))
        assert dict(written) == {"n": TKS_COUNT + 1, "transactions": 1}

        async def all_published():
            conn = await asyncpg.connect(database_url)
            try:
                return await conn.fetchrow(
                    "SELECT count(*) FILTER (WHERE sent_at IS NULL) AS unsent, "
                    "count(*) FILTER (WHERE message_key LIKE 'tks-scale-%') AS outcomes, "
                    "count(*) FILTER (WHERE message_key = $1) AS cycle_events "
                    "FROM outbox HAVING count(*) FILTER (WHERE sent_at IS NULL) = 0",
                    f"evaluation-{year}")
            finally:
                await conn.close()

        published = await eventually(all_published, timeout=60)
        assert published["outcomes"] == TKS_COUNT
        assert published["cycle_events"] == 2  # EvaluationOpened and EvaluationClosed

        page = await client.get(f"/evaluations/{year}/results", headers=ADMIN,
                                params={"limit": 100, "offset": 850})
        assert page.json()["total"] == TKS_COUNT
        assert len(page.json()["items"]) == 50
        spread = await client.get(f"/evaluations/{year}/distribution", headers=ADMIN)
        assert sum(b["count"] for b in spread.json()["buckets"]) == TKS_COUNT

        # the results are a disposable projection: replaying the store gives the same answer
        async with ctx.pool.acquire() as conn:
            assert await rebuild(conn, project, OWN_TABLES) > TKS_COUNT
        again = await client.post(f"/evaluations/{year}/close", headers=ADMIN)
        assert again.status_code == 409
        assert again.json()["error"]["result"] == closed
