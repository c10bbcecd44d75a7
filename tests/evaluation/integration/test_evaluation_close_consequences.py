"""The close's own consequences (recruitment releasing a replaced TKS, mentoring unassigning its
groups) are not late events; facts the close missed still are. Evaluation, recruitment and
mentoring run in-process on the real broker, each with its own database."""

import contextlib
import dataclasses
import random
import uuid
from datetime import date

import asyncpg
import httpx
import pytest

from services.evaluation.config import load_policy
from services.recruitment.app import build_spec as recruitment_spec
from shared.contracts import groups as g
from shared.contracts import mentoring as m
from shared.envelope import Envelope
from shared.service import create_app
from shared.settings import load_settings
from shared.topics import EVALUATION, ensure_topics
from tests.evaluation.integration.evaluation_helpers import (
    ADMIN,
    AGENCY,
    close_year,
    envelope,
    publish,
    running_service,
)
from tests.mentoring.integration.mentoring_helpers import running_mentoring
from tests.recruitment.recruitment_helpers import ADMIN as RECRUITMENT_ADMIN
from tests.recruitment.recruitment_helpers import applicant
from tests.support.databases import create_database
from tests.support.kafka import eventually, start_at_end

pytestmark = pytest.mark.integration
REGENCY = "3273"


@contextlib.asynccontextmanager
async def running_recruitment(infra):
    url = await create_database(infra, "t_recruitment")
    group = f"recruitment-test-{uuid.uuid4().hex}"
    await ensure_topics(infra.kafka_bootstrap, [EVALUATION], partitions=6, replication_factor=1)
    await start_at_end(infra.kafka_bootstrap, group, [EVALUATION])
    app = create_app(dataclasses.replace(recruitment_spec(), consumer_group=group),
                     load_settings("recruitment", database_url=url,
                                   kafka_bootstrap_servers=infra.kafka_bootstrap))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://recruitment", timeout=60) as client:
            yield client


async def _recruit(client: httpx.AsyncClient, year: int) -> str:
    r = await client.post("/rounds", headers=RECRUITMENT_ADMIN, json={
        "year": year, "stage": 1,
        "quotas": [{"province_code": REGENCY[:2], "regency_code": REGENCY, "places": 1}]})
    assert r.status_code == 201, r.text
    round_id = r.json()["round_id"]
    r = await client.post("/applicants", headers=RECRUITMENT_ADMIN,
                          json=applicant(year, REGENCY))
    assert r.status_code == 201, r.text
    tks_id = r.json()["applicant_id"]
    for path, body in ((f"/applicants/{tks_id}/screening", {"passed": True}),
                       (f"/applicants/{tks_id}/briefing",
                        {"stage": 1, "city": "Bandung", "briefed_on": f"{year}-02-01"})):
        r = await client.post(path, headers=RECRUITMENT_ADMIN, json=body)
        assert r.status_code == 200, r.text
    r = await client.post(f"/rounds/{round_id}/recruitments", headers=RECRUITMENT_ADMIN,
                          json={"applicant_id": tks_id, "regency_code": REGENCY})
    assert r.status_code == 201, r.text
    return tks_id


async def test_what_follows_from_the_close_is_not_late_but_what_it_missed_is(infra,
                                                                            database_url):
    year = random.randint(2015, 2025)  # mentors are assigned on past dates only
    group = f"grp-{uuid.uuid4().hex[:10]}"
    close_id = uuid.uuid4()
    # every TKS is replaced: the chain we follow starts with a "replace"
    strict = load_policy().model_copy(update={"threshold": 100.0, "version": "test-strict"})
    mentoring_url = await create_database(infra, "t_mentoring")

    async with running_service(infra.kafka_bootstrap, database_url, policy=strict) as (
            _, evaluation), running_recruitment(infra) as recruitment, \
            running_mentoring(infra.kafka_bootstrap, mentoring_url) as mentoring:
        assert (await evaluation.post(f"/evaluations/{year}/open",
                                      headers=ADMIN)).status_code == 201
        tks_id = await _recruit(recruitment, year)
        await mentoring.fund(group, REGENCY, date(year, 3, 1))
        await mentoring.known(tks=(tks_id,), groups=(group,))
        assigned = await mentoring.assign(group, tks_id, date(year, 3, 1))
        assert assigned.status_code == 201, assigned.text

        async def evaluable():
            preview = await evaluation.get(f"/evaluations/{year}/preview", headers=ADMIN)
            items = {i["tks_id"]: i for i in preview.json()["items"]}
            basis = {i["name"]: i["basis"] for i in items.get(tks_id, {}).get("indicators", [])}
            return basis.get("lpj_completion", {}).get("funded_groups") == 1

        await eventually(evaluable)
        # the close is carried out by the checker's grant: its correlation id is the close's
        closed = await close_year(evaluation, year, **{"X-Correlation-ID": str(close_id)})
        assert [o["decision"] for o in closed["outcomes"] if o["tks_id"] == tks_id] == \
            ["replace"]

        # recruitment releases the TKS, mentoring unassigns its group: both under the close's
        # correlation id, each naming its cause
        [unassigned] = [e for e in await mentoring.published(lambda seen: any(
            e["type"] == "MentorUnassigned" for e in seen)) if e["type"] == "MentorUnassigned"]
        consequence = Envelope.model_validate_json(unassigned["raw"])
        assert consequence.correlation_id == close_id
        assert consequence.causation_id is not None
        assert (consequence.payload["tks_id"], consequence.payload["reason"],
                consequence.payload["unassigned_on"]) == (tks_id, "tks_left", f"{year}-12-31")

        # what the close missed: a late LPJ acceptance, and a command's event whose client
        # reused the close's correlation id (it names no cause)
        late_lpj = envelope(g.AccountabilityReportAccepted(group_id=group, report_id="lpj-1"),
                            f"group-{group}")
        reused = envelope(m.ReportOverdue(group_id=group, tks_id=tks_id, period=f"{year}-11"),
                          f"group-{group}").model_copy(update={"correlation_id": close_id})
        await publish(infra.kafka_bootstrap, [late_lpj, reused])

        conn = await asyncpg.connect(database_url)
        try:
            async def all_consumed():
                return await conn.fetchval(
                    "SELECT count(*) = 3 FROM inbox WHERE event_id = ANY($1::uuid[]) "
                    "AND outcome = 'applied'",
                    [consequence.event_id, late_lpj.event_id, reused.event_id])

            await eventually(all_consumed)
            # the consequence still updated the facts
            assert await conn.fetchval(
                "SELECT unassigned_on FROM mentor_assignments WHERE group_id = $1 AND "
                "tks_id = $2", group, tks_id) == date(year, 12, 31)
            await eventually(lambda: conn.fetchval(
                "SELECT count(*) = 1 FROM tks_exits WHERE tks_id = $1", tks_id))
        finally:
            await conn.close()

        page = await evaluation.get(f"/evaluations/{year}/late-events", headers=AGENCY,
                                    params={"limit": 500})
        assert page.status_code == 200, page.text
        ours = [(e["event_id"], e["event_type"]) for e in page.json()["items"]
                if e["group_id"] == group or e["tks_id"] == tks_id]
        assert sorted(ours) == sorted([(str(late_lpj.event_id), "AccountabilityReportAccepted"),
                                       (str(reused.event_id), "ReportOverdue")])
