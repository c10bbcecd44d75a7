"""The mentoring service run in-process against the shared broker, fed with contract events as
recruitment and groups would publish them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI

from services.mentoring.app import build_spec
from services.mentoring.config import (
    BatchLimits,
    MentoringConfig,
    PeriodCloseRules,
    load_config,
)
from shared.auth import Role, mint_token
from shared.contracts.groups import GroupDissolved, GroupFunded
from shared.contracts.recruitment import TksRecruited, TksReleased
from shared.envelope import Envelope, Event, encode, utcnow
from shared.service import create_app
from shared.settings import DEV_SIGNING_KEY, load_settings
from shared.topics import GROUPS, MENTORING, RECRUITMENT, ensure_topics
from tests.support.kafka import eventually, kafka_client, partitions, produce, start_at_end

CONSUMED = (RECRUITMENT, GROUPS)


def headers(role: Role, subject: str = "tester", **scope: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(DEV_SIGNING_KEY, subject, role, **scope)}"}


ADMIN = headers(Role.ADMIN, "admin")


def tks_headers(tks_id: str) -> dict[str, str]:
    return headers(Role.TKS, f"tks-{tks_id}", tks_id=tks_id)


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def envelope(stream_id: str, event: Event) -> bytes:
    return encode(Envelope(event_id=uuid.uuid4(), event_type=event.event_type,
                           schema_version=event.schema_version, occurred_at=utcnow(),
                           stream_id=stream_id, stream_version=1, correlation_id=uuid.uuid4(),
                           producer="test", actor="test",
                           payload=json.loads(event.model_dump_json())))


@dataclass
class Mentoring:
    app: FastAPI
    client: httpx.AsyncClient
    kafka: str
    database_url: str
    published_from: dict[TopicPartition, int]

    async def recruit(self, tks_id: str, regency: str, year: int = 2023,
                      contract: tuple[date, date] | None = None) -> None:
        start, end = contract or (date(year, 1, 1), date(year, 12, 31))
        await self.publish(RECRUITMENT, tks_id, TksRecruited(
            tks_id=tks_id, round_id="round-test", year=year, stage=1,
            province_code=regency[:2], regency_code=regency,
            contract_start=start, contract_end=end))

    async def release(self, tks_id: str, regency: str, on: date) -> Envelope:
        return await self.publish(RECRUITMENT, tks_id, TksReleased(
            tks_id=tks_id, year=2023, province_code=regency[:2], regency_code=regency,
            reason="misconduct", effective_date=on))

    async def fund(self, group_id: str, regency: str, on: date) -> None:
        await self.publish(GROUPS, group_id, GroupFunded(
            group_id=group_id, tranche=1, amount=20_000_000, disbursed_on=on, budget_year=on.year,
            year=on.year, province_code=regency[:2], regency_code=regency,
            lpj_due_on=date(on.year, 12, 31)))

    async def dissolve(self, group_id: str) -> None:
        await self.publish(GROUPS, group_id, GroupDissolved(group_id=group_id,
                                                            reason_code="members_left"))

    async def publish(self, topic: str, key: str, event: Event) -> Envelope:
        raw = envelope(key, event)
        await produce(self.kafka, topic, [(key.encode(), raw)])
        return Envelope.model_validate_json(raw)

    async def known(self, *, tks: tuple[str, ...] = (), groups: tuple[str, ...] = ()) -> None:
        async def all_there() -> bool:
            async with self.db() as conn:
                n = await conn.fetchval(
                    "SELECT (SELECT count(*) FROM mentors WHERE tks_id = ANY($1)) + "
                    "(SELECT count(*) FROM mentored_groups WHERE group_id = ANY($2))",
                    list(tks), list(groups))
            return n == len(tks) + len(groups)
        await eventually(all_there)

    async def assign(self, group_id: str, tks_id: str, on: date,
                     who: dict[str, str] = ADMIN) -> httpx.Response:
        return await self.client.post(f"/groups/{group_id}/mentor", headers=who,
                                      json={"tks_id": tks_id, "assigned_on": on.isoformat()})

    @contextlib.asynccontextmanager
    async def db(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await asyncpg.connect(self.database_url)
        try:
            yield conn
        finally:
            await conn.close()

    async def published(self, until: Callable[[list[dict]], bool],
                        timeout: float = 60) -> list[dict]:
        """What this service published on tkm.mentoring.v1 since it started (key, type,
        payload), read until `until` holds. Raises TimeoutError."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.kafka, enable_auto_commit=False,
                                    **kafka_client())
        await consumer.start()
        seen: list[dict] = []
        try:
            consumer.assign(list(self.published_from))
            for tp, offset in self.published_from.items():
                consumer.seek(tp, offset)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while not until(seen):
                if loop.time() > deadline:
                    raise TimeoutError(f"condition not met after {len(seen)} records: {seen}")
                for batch in (await consumer.getmany(timeout_ms=300)).values():
                    for r in batch:
                        value = json.loads(r.value)
                        if value["producer"] == "mentoring":
                            seen.append({"key": r.key.decode(), "type": value["event_type"],
                                         "payload": value["payload"],
                                         "event_id": value["event_id"], "raw": r.value})
            return seen
        finally:
            await consumer.stop()


@contextlib.asynccontextmanager
async def running_mentoring(bootstrap: str, database_url: str,
                            config: MentoringConfig | None = None) -> AsyncIterator[Mentoring]:
    group = f"mentoring-test-{uuid.uuid4().hex}"  # the prefix the service's principal may use
    await ensure_topics(bootstrap, [*CONSUMED, MENTORING], partitions=6, replication_factor=1)
    await start_at_end(bootstrap, group, CONSUMED)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, **kafka_client())
    await probe.start()
    try:
        published_from = await probe.end_offsets(await partitions(bootstrap, (MENTORING,)))
    finally:
        await probe.stop()
    config = config or without_automatic_close(load_config())
    spec = dataclasses.replace(build_spec(config), consumer_group=group)
    app = create_app(spec, load_settings("mentoring", database_url=database_url,
                                         kafka_bootstrap_servers=bootstrap))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://mentoring", timeout=60) as client:
            yield Mentoring(app, client, bootstrap, database_url, published_from)


def without_automatic_close(config: MentoringConfig) -> MentoringConfig:
    # each test decides when its months close; small chunks make every bulk call span several
    # transactions
    return config.model_copy(update={
        "period_close": PeriodCloseRules(automatic=False, check_interval_seconds=60,
                                         window_days=45),
        "batch": BatchLimits(max_reports=50, groups_per_transaction=2)})


def report(period: str, **changes) -> dict:
    return {"period": period, "revenue": 3_000_000, "production_units": 80,
            "production_unit": "kg", "members_active": 10, "new_workers": 1,
            "support": ["partnership"], "lpj_help": False, **changes}
