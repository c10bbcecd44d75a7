"""The privacy kernel (shared.privacy) in a small service of its own, on the real Postgres and
Kafka, through HTTP: the router factory's three routes on a "people" register whose names are
tokens; what the kernel itself guarantees whatever the service: ministry admin only, the NIK
validated and never echoed nor recorded, every call an audited event, a correction re-keys
(the superseded tokens read erased) and is projected, an erasure is idempotent and also drops
the stored answers of subject-access requests (which hold decrypted data); a service without
personal data has neither keyring nor key table."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from shared import pii, privacy
from shared.aggregate import Aggregate, UnitOfWork
from shared.auth import Actor, Role, mint_token, require
from shared.envelope import Envelope, Event, register
from shared.kafka_security import kafka_security
from shared.nik import random_valid_nik
from shared.service import ServiceContext, ServiceSpec, context, create_app
from shared.settings import DEV_SIGNING_KEY, load_settings
from tests.support.databases import create_database, drop_database

pytestmark = pytest.mark.integration

SERVICE = "evaluation"  # a principal the secured broker knows; the topic is the test's own
ADMIN = {"Authorization": "Bearer " + mint_token(DEV_SIGNING_KEY, "dpo@kemnaker.go.id",
                                                 Role.ADMIN)}
OFFICER = {"Authorization": "Bearer " + mint_token(DEV_SIGNING_KEY, "officer@example.go.id",
                                                   Role.PROVINCE, province_code="94")}
PEOPLE = """
CREATE TABLE people (person_ref text PRIMARY KEY, nik_hash text NOT NULL, name text NOT NULL);
"""
_rng = random.Random(uuid.uuid4().int)


@register
class PersonNoted(Event):
    """Internal: a person of the test's register, the name a token of their key."""

    event_type = "privacytest.PersonNoted"
    person_ref: str
    nik_hash: str
    name: str


class _Person(Aggregate):
    def apply(self, event: Event) -> None:
        pass


async def project(conn: asyncpg.Connection, events: list[tuple[Envelope, Event]]) -> None:
    for _, event in events:
        match event:
            case PersonNoted():
                await conn.execute("INSERT INTO people VALUES ($1, $2, $3)", event.person_ref,
                                   event.nik_hash, event.name)
            case privacy.PersonCorrected():
                await conn.execute("UPDATE people SET name = $2 WHERE person_ref = $1",
                                   event.person_ref, event.values["name"])


class NewPerson(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nik: str
    name: str


class Changes(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None


async def find(conn: asyncpg.Connection, subject: privacy.Subject) -> list[str]:
    return [r["person_ref"] for r in await conn.fetch(
        "SELECT person_ref FROM people WHERE nik_hash = $1", subject.nik_hash)]


async def export(conn: asyncpg.Connection, keys: pii.PersonKeys,
                 refs: list[str]) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT person_ref, name FROM people WHERE person_ref = ANY($1) "
                            "ORDER BY person_ref", refs)
    return [{"person_ref": r["person_ref"],
             "name": privacy.reveal(keys, r["person_ref"], "name", r["name"])} for r in rows]


async def current(conn: asyncpg.Connection, keys: pii.PersonKeys,
                  refs: list[str]) -> dict[str, dict[str, str | None]]:
    return {r["person_ref"]: {"name": r["name"]} for r in await export(conn, keys, refs)}


def build(tmp: Path) -> ServiceSpec:
    (tmp / "migrations").mkdir()
    (tmp / "migrations" / "001_people.sql").write_text(PEOPLE)
    router = APIRouter()

    @router.post("/people")
    async def note(body: NewPerson, ctx: ServiceContext = Depends(context),
                   actor: Actor = Depends(require(Role.ADMIN))) -> dict[str, str]:
        keyring = privacy.keyring_of(ctx)
        ref = f"person-{uuid.uuid4()}"

        async def decide(uow: UnitOfWork) -> dict[str, str]:
            key = (await pii.ensure_keys(uow.conn, keyring, [ref]))[ref]
            person = _Person(ref)
            person.record(PersonNoted(person_ref=ref, nik_hash=keyring.nik_hash(body.nik),
                                      name=key.encrypt("name", body.name)))
            await uow.save(person)
            return {"person_ref": ref}

        return await ctx.command(decide, actor)

    return ServiceSpec(
        name=SERVICE, topic=f"tkm.privacytest-{uuid.uuid4().hex[:8]}.v1",
        routers=[router, privacy.build_router(privacy.Privacy(
            find=find, export=export, current=current, corrections=Changes,
            stream_for=lambda ref: ref))],
        migrations=tmp / "migrations", projector=project, personal_data=True)


class Demo:
    def __init__(self, client: httpx.AsyncClient, conn: asyncpg.Connection):
        self.client, self.conn = client, conn

    async def person(self, name: str) -> tuple[str, str]:
        nik = random_valid_nik(_rng)
        r = await self.client.post("/people", headers=ADMIN, json={"nik": nik, "name": name})
        assert r.status_code == 200, r.text
        return nik, r.json()["person_ref"]


@pytest.fixture(scope="module")
async def demo(infra, tmp_path_factory):
    database_url = await create_database(infra, "t_privacy")
    app = create_app(build(tmp_path_factory.mktemp("privacy")),
                     load_settings(SERVICE, database_url=database_url,
                                   kafka_bootstrap_servers=infra.kafka_bootstrap),
                     security=kafka_security(service="admin"))
    conn = await asyncpg.connect(database_url)
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://demo") as client:
                for _ in range(500):
                    if getattr(app.state, "ctx", None) is not None:
                        break
                    await asyncio.sleep(0.02)
                yield Demo(client, conn)
    finally:
        await conn.close()
        await drop_database(infra, database_url)


async def test_only_the_ministry_asks_and_a_bad_nik_is_refused_without_echo(demo):
    nik, _ = await demo.person("Maria Kogoya")
    for path, body in (("subject-access", {"nik": nik}),
                       ("correction", {"nik": nik, "changes": {"name": "X"}}),
                       ("erasure", {"nik": nik, "reason_code": "subject_request"})):
        refused = await demo.client.post(f"/privacy/{path}", headers=OFFICER, json=body)
        assert refused.status_code == 403, (path, refused.text)
        bad = nik[:6] + "99" + nik[8:]  # no such birth day
        refused = await demo.client.post(f"/privacy/{path}", headers=ADMIN,
                                         json={**body, "nik": bad})
        assert refused.status_code == 422 and refused.json()["error"]["field"] == "nik"
        assert bad not in refused.text
    unknown = random_valid_nik(_rng)
    r = await demo.client.post("/privacy/correction", headers=ADMIN,
                               json={"nik": unknown, "changes": {"name": "X"}})
    assert r.status_code == 404 and unknown not in r.text
    r = await demo.client.post("/privacy/erasure", headers=ADMIN,
                               json={"nik": unknown, "reason_code": "retention_ended"})
    assert r.json() == {"service": SERVICE, "erased": 0, "already_erased": 0}
    r = await demo.client.post("/privacy/correction", headers=ADMIN,
                               json={"nik": nik, "changes": {}})
    assert r.status_code == 422 and r.json()["error"]["field"] == "changes"


async def test_every_call_is_an_audited_event_naming_no_one(demo):
    nik, ref = await demo.person("Yohanes Wenda")
    before = await demo.conn.fetchval("SELECT count(*) FROM events WHERE event_type LIKE "
                                      "'privacy.%'")
    for path, body in (("subject-access", {"nik": nik}),
                       ("correction", {"nik": nik, "changes": {"name": "Yohanes W."}}),
                       ("erasure", {"nik": nik, "reason_code": "subject_request"})):
        r = await demo.client.post(f"/privacy/{path}", headers=ADMIN, json=body)
        assert r.status_code == 200, r.text
    rows = await demo.conn.fetch(
        "SELECT event_type, stream_id, actor, payload::text AS payload FROM events "
        "WHERE event_type LIKE 'privacy.%' ORDER BY global_position")
    mine = rows[before:]
    assert [r["event_type"] for r in mine] == [
        "privacy.PrivacyRequestHandled", "privacy.PersonCorrected",
        "privacy.PrivacyRequestHandled", "privacy.PersonErased",
        "privacy.PrivacyRequestHandled"]
    assert {r["actor"].split(":")[0] for r in mine} == {"ministry_admin"}
    assert [r["stream_id"] for r in mine if r["event_type"] != "privacy.PrivacyRequestHandled"] \
        == [ref, ref]
    for row in mine:
        assert nik not in row["payload"] and "Yohanes" not in row["payload"]
    trail = await demo.client.get("/audit", headers=ADMIN,
                                  params={"type": "privacy.PrivacyRequestHandled"})
    summaries = [r["summary"] for r in trail.json()["items"]]
    assert any("command_type=erasure" in s and "reason_code=subject_request" in s
               for s in summaries), summaries
    assert nik not in trail.text


async def test_a_correction_rekeys_and_an_erasure_is_idempotent_and_drops_stored_answers(demo):
    nik, ref = await demo.person("Dewi Lestari")
    other_nik, other_ref = await demo.person("Budi Santoso")
    keyring = pii.Keyring.dev()
    first = await demo.conn.fetchval("SELECT name FROM people WHERE person_ref = $1", ref)

    r = await demo.client.post("/privacy/correction", headers=ADMIN,
                               json={"nik": nik, "changes": {"name": "Dewi L. Putri"}})
    assert r.json() == {"service": SERVICE, "corrected": 1}
    keys = await pii.load_keys(demo.conn, keyring, [ref])
    assert keys.decrypt(ref, "name", first) is pii.ERASED  # superseded: unreadable
    keyed = {**ADMIN, "Idempotency-Key": f"sar-{uuid.uuid4()}"}
    asked = await demo.client.post("/privacy/subject-access", headers=keyed, json={"nik": nik})
    assert asked.json() == {"service": SERVICE, "found": True,
                            "records": [{"person_ref": ref, "name": "Dewi L. Putri"}]}
    stored = await demo.conn.fetchval(
        "SELECT count(*) FROM idempotency_keys WHERE route = $1 AND body IS NOT NULL",
        privacy.SUBJECT_ACCESS_ROUTE)
    assert stored >= 1

    r = await demo.client.post("/privacy/erasure", headers=ADMIN,
                               json={"nik": nik, "reason_code": "subject_request"})
    assert r.json() == {"service": SERVICE, "erased": 1, "already_erased": 0}
    assert await demo.conn.fetchval("SELECT count(*) FROM idempotency_keys WHERE route = $1",
                                    privacy.SUBJECT_ACCESS_ROUTE) == 0
    r = await demo.client.post("/privacy/erasure", headers=ADMIN,
                               json={"nik": nik, "reason_code": "subject_request"})
    assert r.json() == {"service": SERVICE, "erased": 0, "already_erased": 1}
    asked = await demo.client.post("/privacy/subject-access", headers=ADMIN, json={"nik": nik})
    assert asked.json()["records"] == [{"person_ref": ref, "name": str(pii.ERASED)}]
    other = await demo.client.post("/privacy/subject-access", headers=ADMIN,
                                   json={"nik": other_nik})
    assert other.json()["records"] == [{"person_ref": other_ref, "name": "Budi Santoso"}]
    r = await demo.client.post("/privacy/correction", headers=ADMIN,
                               json={"nik": nik, "changes": {"name": "Dewi"}})
    assert r.status_code == 409 and r.json()["error"]["field"] == "nik"


async def test_a_service_without_personal_data_has_no_keyring_nor_key_table(infra, tmp_path):
    database_url = await create_database(infra, "t_nopii")
    spec = ServiceSpec(name=SERVICE, topic=f"tkm.privacytest-{uuid.uuid4().hex[:8]}.v1",
                       routers=[])
    app = create_app(spec, load_settings(SERVICE, database_url=database_url,
                                         kafka_bootstrap_servers=infra.kafka_bootstrap),
                     security=kafka_security(service="admin"))
    try:
        assert app.state.keyring is None
        async with app.router.lifespan_context(app):
            for _ in range(500):
                if getattr(app.state, "ctx", None) is not None:
                    break
                await asyncio.sleep(0.02)
            with pytest.raises(RuntimeError, match="keyring"):
                privacy.keyring_of(app.state.ctx)
        conn = await asyncpg.connect(database_url)
        try:
            assert await conn.fetchval("SELECT to_regclass('pii_person_keys')") is None
        finally:
            await conn.close()
    finally:
        await drop_database(infra, database_url)
