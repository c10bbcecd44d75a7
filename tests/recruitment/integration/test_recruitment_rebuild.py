"""`tkm rebuild recruitment`: every read model comes back identical after a concurrent history
(a quota race, a NIK race, a resignation, outcomes consumed from evaluation), with the service
running; `applicant_nik` (the one-registration-per-NIK rule) is left alone."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from services.recruitment.app import REBUILD, build_spec
from shared.contracts.evaluation import Indicator, TksEvaluated
from shared.envelope import encode
from shared.projections import rebuild_plan
from shared.topics import EVALUATION
from tests.recruitment.recruitment_helpers import ADMIN, applicant, envelope
from tests.shared.integration.rebuild_support import leftovers, table_rows, table_shapes
from tests.support.kafka import kafka_client, eventually, produce

pytestmark = pytest.mark.integration


async def test_the_rebuilt_tables_equal_the_live_ones_after_a_concurrent_history(recruitment):
    client, year = recruitment.client, 2026
    round_id = await recruitment.open_round(
        [{"province_code": "32", "regency_code": "3201", "places": 3}], year=year)
    briefed = await asyncio.gather(*(recruitment.briefed(year, "3201") for _ in range(6)))
    # six recruitments race for three places
    answers = await asyncio.gather(*(recruitment.recruit(round_id, a, "3201") for a in briefed))
    codes = sorted(r.status_code for r in answers)
    assert codes.count(201) == 3, [r.text for r in answers]
    recruited = [a for a, r in zip(briefed, answers, strict=True) if r.status_code == 201]
    # one NIK registered twice at once: one wins
    twice = applicant(year, "3201")
    registered = await asyncio.gather(*(client.post("/applicants", headers=ADMIN, json=twice)
                                        for _ in range(2)))
    assert sorted(r.status_code for r in registered) == [201, 409]
    resigned = await client.post(f"/tks/{recruited[0]}/resignation", headers=ADMIN,
                                 json={"effective_date": f"{year}-07-31"})
    assert resigned.status_code == 200, resigned.text
    # outcomes consumed from evaluation: its policy records renewals and releases here
    outcomes = [(recruited[1], "continue", 80.0), (recruited[2], "replace", 40.0)]
    await produce(recruitment.kafka, EVALUATION, [
        (f"tks-{t}".encode(), encode(envelope(TksEvaluated(
            year=year, tks_id=t, province_code="32", regency_code="3201", score=score,
            decision=decision, policy_version="test-1",
            indicators=(Indicator(name="reports_on_time", value=score, weight=1.0,
                                  contribution=score),)), f"tks-{t}")))
        for t, decision, score in outcomes])

    async def settled() -> bool:
        r = await client.get(f"/tks/{recruited[2]}", headers=ADMIN)
        kept = await client.get(f"/tks/{recruited[1]}", headers=ADMIN)
        return (r.json()["contracts"][0]["status"] == "released"
                and len(kept.json()["contracts"]) == 2)
    await eventually(settled, timeout=30)

    conn = await asyncpg.connect(recruitment.database_url)
    try:
        live = await table_rows(conn, [*REBUILD.tables, "applicant_nik"])
        shapes = await table_shapes(conn, REBUILD.tables)
        assert [r[3:5] for r in live["round_quotas"] if r[0] == round_id] == [(3, 3)]
        await conn.execute("UPDATE round_quotas SET recruited = 0; DELETE FROM tks_roster")
        stats = await rebuild_plan(conn, REBUILD, topics=build_spec().consumes,
                                   bootstrap=recruitment.kafka,
                                   kafka_options=kafka_client("recruitment"))
        assert await table_rows(conn, [*REBUILD.tables, "applicant_nik"]) == live
        assert await table_shapes(conn, REBUILD.tables) == shapes
        assert await leftovers(conn) == []
        assert stats.own_events == await conn.fetchval("SELECT count(*) FROM events")
        assert stats.consumed_events == 0  # the consumed outcomes live on as own events
    finally:
        await conn.close()
