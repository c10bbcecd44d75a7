import dataclasses
import uuid
from dataclasses import dataclass
from datetime import date

import httpx
import pytest

from services.recruitment.app import build_spec
from shared.service import create_app
from shared.settings import ServiceSettings, load_settings
from shared.topics import ensure_topics
from tests.recruitment.recruitment_helpers import ADMIN, applicant
from tests.support.databases import create_database
from tests.support.kafka import start_at_end


@dataclass
class Recruitment:
    client: httpx.AsyncClient
    database_url: str
    kafka: str

    async def open_round(self, quotas: list[dict], year: int = 2023, stage: int = 1) -> str:
        r = await self.client.post("/rounds", headers=ADMIN,
                                   json={"year": year, "stage": stage, "quotas": quotas})
        assert r.status_code == 201, r.text
        return r.json()["round_id"]

    async def briefed(self, year: int = 2023, regency: str = "3201", stage: int = 1,
                      on: date | None = None) -> str:
        """A new applicant, registered, passed and briefed: its id."""
        r = await self.client.post("/applicants", headers=ADMIN,
                                   json=applicant(year, regency))
        assert r.status_code == 201, r.text
        applicant_id = r.json()["applicant_id"]
        r = await self.client.post(f"/applicants/{applicant_id}/screening", headers=ADMIN,
                                   json={"passed": True})
        assert r.status_code == 200, r.text
        r = await self.client.post(
            f"/applicants/{applicant_id}/briefing", headers=ADMIN,
            json={"stage": stage, "city": "Jakarta",
                  "briefed_on": (on or date(year, 3, 6)).isoformat()})
        assert r.status_code == 200, r.text
        return applicant_id

    async def recruit(self, round_id: str, applicant_id: str, regency: str = "3201",
                      **extra) -> httpx.Response:
        return await self.client.post(
            f"/rounds/{round_id}/recruitments", headers=ADMIN,
            json={"applicant_id": applicant_id, "regency_code": regency, **extra})


@pytest.fixture(scope="module")
async def recruitment(infra):
    """A recruitment service (its own database and consumer group) per test module."""
    url = await create_database(infra, "t_recruitment")
    spec = dataclasses.replace(build_spec(),
                               consumer_group=f"recruitment-test-{uuid.uuid4().hex}")
    settings = load_settings("recruitment", database_url=url,
                             kafka_bootstrap_servers=infra.kafka_bootstrap)
    for topic in spec.consumes:
        await _start_at_the_end(settings, topic, spec.consumer_group)
    app = create_app(spec, settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://recruitment", timeout=60) as client:
            yield Recruitment(client, url, infra.kafka_bootstrap)


async def _start_at_the_end(settings: ServiceSettings, topic: str, group: str) -> None:
    """Commit the group's offsets at the topic's end: the tests' consumer then reads only
    what this run produces, not the evaluations every earlier run left on the shared topic
    (about TKS this database never recruited, which it would dead-letter one by one)."""
    await ensure_topics(settings.kafka_bootstrap_servers, [topic],
                        partitions=settings.topic_partitions,
                        replication_factor=settings.topic_replication_factor)
    await start_at_end(settings.kafka_bootstrap_servers, group, [topic])
