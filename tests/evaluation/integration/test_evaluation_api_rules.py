import random
import uuid

import asyncpg
import pytest

from services.evaluation.config import load_policy
from shared.auth import Role
from tests.evaluation.integration.evaluation_helpers import (
    ADMIN,
    AGENCY,
    close_year,
    headers,
    running_service,
)

pytestmark = pytest.mark.integration


async def _count(database_url: str, sql: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_the_cycle_answers_bad_requests_clearly_and_writes_nothing(infra, database_url):
    year = random.randint(2030, 2090)
    policy = load_policy().model_copy(update={"version": f"test-{uuid.uuid4().hex[:6]}"})
    as_tks = headers(Role.TKS, "t-1", tks_id="t-1")
    async with running_service(infra.kafka_bootstrap, database_url, policy=policy) as (_, api):
        unauthenticated = await api.post(f"/evaluations/{year}/open")
        assert unauthenticated.status_code == 401
        assert unauthenticated.json()["error"]["field"] == "Authorization"

        too_early = await api.post("/evaluations/1999/open", headers=ADMIN)
        assert too_early.status_code == 422
        assert too_early.json()["error"]["field"].endswith("year")

        not_open = await api.post(f"/evaluations/{year}/close", headers=ADMIN)
        assert not_open.status_code == 404
        assert not_open.json()["error"]["field"] == "year"
        assert (await api.get(f"/evaluations/{year}/preview", headers=ADMIN)).status_code == 404
        assert await _count(database_url, "SELECT count(*) FROM events") == 0

        opened = await api.post(f"/evaluations/{year}/open", headers=ADMIN)
        assert opened.status_code == 201
        assert opened.json()["policy_version"] == policy.version
        twice = await api.post(f"/evaluations/{year}/open", headers=ADMIN)
        assert twice.status_code == 409
        assert twice.json()["error"]["current_status"] == "open"
        assert await _count(database_url, "SELECT count(*) FROM events") == 2

        assert (await api.get(f"/evaluations/{year}", headers=as_tks)).json()["status"] == "open"
        assert (await api.get(f"/evaluations/{year}/preview", headers=as_tks)).status_code == 403
        bad_page = await api.get(f"/evaluations/{year}/preview", headers=ADMIN,
                                 params={"limit": 0})
        assert bad_page.status_code == 422
        assert bad_page.json()["error"]["field"] == "query.limit"
        bad_province = await api.get(f"/evaluations/{year}/preview", headers=AGENCY,
                                     params={"province_code": "Jawa Barat"})
        assert bad_province.status_code == 422
        assert (await api.get(f"/evaluations/{year}/results", headers=ADMIN)).status_code == 404
        assert (await api.get(f"/evaluations/{year}/distribution",
                              headers=ADMIN)).status_code == 404
        assert (await api.get(f"/evaluations/{year}/late-events",
                              headers=headers(Role.PROVINCE, province_code="32"))
                ).status_code == 403
        stranger = await api.get(f"/evaluations/{year}/tks/nobody-{uuid.uuid4().hex}",
                                 headers=ADMIN)
        assert stranger.status_code == 200
        assert (stranger.json()["provisional"], stranger.json()["reason"]) == (True,
                                                                                "no_contract")
        assert (await api.post(f"/evaluations/{year}/close", headers=AGENCY)).status_code == 403

        closed = await close_year(api, year)
        summary = closed["summary"]
        assert summary["evaluated"] == len(closed["outcomes"])
        assert summary["policy"]["version"] == policy.version
        reopened = await api.post(f"/evaluations/{year}/open", headers=ADMIN)
        assert reopened.status_code == 409
        assert reopened.json()["error"]["current_status"] == "closed"
        bad_decision = await api.get(f"/evaluations/{year}/results", headers=ADMIN,
                                     params={"decision": "promote"})
        assert bad_decision.status_code == 422
        gone = await api.get(f"/evaluations/{year}/tks/nobody-{uuid.uuid4().hex}",
                             headers=ADMIN)
        assert gone.status_code == 404
        assert (await api.get(f"/evaluations/{year}/results", headers=AGENCY)).status_code == 200


async def test_a_huge_offset_is_refused_not_a_server_error(infra, database_url):
    year = random.randint(2030, 2090)
    async with running_service(infra.kafka_bootstrap, database_url) as (_, api):
        assert (await api.post(f"/evaluations/{year}/open", headers=ADMIN)).status_code == 201
        assert (await api.get(f"/evaluations/{year}/preview", headers=ADMIN,
                              params={"offset": 99999999999999999999})).status_code == 422
        await close_year(api, year)
        for page in ("results", "late-events"):
            for offset in ("99999999999999999999", "1000001"):
                r = await api.get(f"/evaluations/{year}/{page}", headers=ADMIN,
                                  params={"offset": offset})
                assert r.status_code == 422, (page, r.text)
                assert r.json()["error"]["field"] == "query.offset"
            r = await api.get(f"/evaluations/{year}/{page}", headers=ADMIN,
                              params={"offset": 1_000_000})
            assert (r.status_code, r.json()["items"]) == (200, []), (page, r.text)
