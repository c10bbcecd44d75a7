"""Every write route of the mentoring service, with a request that succeeds, sent twice under
one Idempotency-Key: the first writes events, the retry writes none and answers the same. A
new write route fails this test until it is walked too."""

from __future__ import annotations

import uuid
from datetime import date

import pytest

from shared.idempotency import WRITES
from tests.mentoring.integration.mentoring_helpers import ADMIN, fresh, report

pytestmark = pytest.mark.integration


async def test_every_mentoring_write_runs_once_under_one_key(mentoring):
    walked: set[tuple[str, str]] = set()

    async def events() -> int:
        async with mentoring.db() as conn:
            return await conn.fetchval("SELECT count(*) FROM events")

    async def twice(method: str, route: str, expected: int, body: dict | None = None,
                    **params: str) -> dict:
        walked.add((method, route))
        path = route.format(**params)
        headers = {**ADMIN, "Idempotency-Key": f"walk-{uuid.uuid4()}"}
        before = await events()
        first = await mentoring.client.request(method, path, json=body, headers=headers)
        assert first.status_code == expected, (route, first.text)
        written = await events()
        assert written > before, f"{route} wrote nothing"
        retry = await mentoring.client.request(method, path, json=body, headers=headers)
        assert (retry.status_code, retry.content) == (first.status_code, first.content), route
        assert retry.headers["idempotent-replayed"] == "true"
        assert await events() == written, f"{route} wrote again on a retry"
        return first.json()

    regency, tks = "3201", fresh("tks")
    groups = [fresh("grp") for _ in range(4)]
    await mentoring.recruit(tks, regency)
    for g in groups:
        await mentoring.fund(g, regency, date(2023, 3, 1))
    await mentoring.known(tks=(tks,), groups=tuple(groups))

    g = groups[0]
    await twice("POST", "/groups/{group_id}/mentor", 201,
                {"tks_id": tks, "assigned_on": "2023-03-01"}, group_id=g)
    await twice("POST", "/groups/{group_id}/reports", 201, {**report("2023-04"), "tks_id": tks},
                group_id=g)
    await twice("PUT", "/groups/{group_id}/reports/{period}", 200,
                report("2023-04", revenue=4_000_000), group_id=g, period="2023-04")
    await twice("POST", "/reports/batch", 200,
                {"reports": [{**report("2023-05"), "group_id": g, "tks_id": tks}]})
    batch = await twice("POST", "/assignments/batch", 200, {"assignments": [
        {"group_id": groups[3], "tks_id": tks, "assigned_on": "2023-03-02"}]})
    assert batch["assigned"] == 1
    applied = await twice("POST", "/assignments/suggestions/apply", 200,
                          {"regency_code": regency, "on_funding_date": True})
    assert applied["assigned"] == 2
    await twice("POST", "/periods/{period}/close", 200, period="2023-04")
    adopted = await twice("PUT", "/rules/{year}", 200, {"rules": {"assignment": {
        "caseload_cap": 30, "allow_same_province": True}}}, year="2024")
    assert adopted["version"] == 1

    spec = (await mentoring.client.get("/openapi.json")).json()["paths"]
    routes = {(m.upper(), p) for p, ops in spec.items() for m in ops if m.upper() in WRITES}
    assert routes - walked == set(), "write routes not walked under a key"
