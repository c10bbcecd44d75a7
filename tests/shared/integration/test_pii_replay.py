"""Crypto-shredding through the kernel's event store: personal fields written as tokens into
internal events, a read model rebuilt by replaying every event; after one person's erasure the
rebuild shows that person as erased while the events, the counts and the rupiah stay the same."""

import uuid

import asyncpg
import pytest

from shared import pii
from shared.envelope import Event
from shared.eventstore import EventStore, migrate

pytestmark = pytest.mark.integration


class MemberFunded(Event):
    """Internal (no topic), not registered: the test reads the stored payloads itself."""

    event_type = "KernelTestMemberFunded"
    member_ref: str
    nik: str  # a pii token
    full_name: str  # a pii token
    province_code: str
    amount: int


MEMBERS = [("3171014101900001", "Siti Aminah", "31", 20_000_000),
           ("9471015507950002", "Yohanes Wenda", "94", 20_000_000),
           ("6501016203880003", "Dewi Lestari", "65", 15_000_000)]


@pytest.fixture
async def conn(database_url):
    conn = await asyncpg.connect(database_url)
    await migrate(conn, "kernel-test")
    await conn.execute(pii.PII_SCHEMA)
    yield conn
    await conn.close()


async def _rebuild(conn, keyring: pii.Keyring) -> tuple[dict, dict, list[uuid.UUID]]:
    """Replay every event: (members by ref, rupiah by province, event ids in order)."""
    recorded, after = [], (0, 0)
    while True:
        batch, after = await EventStore("kernel-test").read_all(conn, after, limit=2)
        if not batch:
            break
        recorded += batch
    payloads = [r.envelope.payload for r in recorded]
    keys = await pii.load_keys(conn, keyring, [p["member_ref"] for p in payloads])
    members, by_province = {}, {}
    for p in payloads:
        members[p["member_ref"]] = (keys.decrypt(p["member_ref"], "nik", p["nik"]),
                                    keys.decrypt(p["member_ref"], "full_name", p["full_name"]))
        by_province[p["province_code"]] = by_province.get(p["province_code"], 0) + p["amount"]
    return members, by_province, [r.envelope.event_id for r in recorded]


async def test_a_rebuild_after_an_erasure_shows_the_person_erased_and_keeps_every_figure(conn):
    keyring = pii.Keyring.dev()
    refs = [f"member-{uuid.uuid4()}" for _ in MEMBERS]
    async with conn.transaction():
        keys = await pii.ensure_keys(conn, keyring, refs)
        await EventStore("kernel-test").append_many(conn, [
            (f"member-stream-{ref}", 0, [MemberFunded(
                member_ref=ref, nik=keys.encrypt(ref, "nik", nik),
                full_name=keys.encrypt(ref, "full_name", name), province_code=province,
                amount=amount)])
            for ref, (nik, name, province, amount) in zip(refs, MEMBERS, strict=True)],
            actor="ministry_admin:test", correlation_id=uuid.uuid4())
    stored = await conn.fetchval("SELECT string_agg(payload::text, ' ' ORDER BY global_position) FROM events")
    for nik, name, _, _ in MEMBERS:
        assert nik not in stored and name not in stored

    members, by_province, event_ids = await _rebuild(conn, keyring)
    assert members[refs[0]] == ("3171014101900001", "Siti Aminah")
    assert by_province == {"31": 20_000_000, "94": 20_000_000, "65": 15_000_000}

    await pii.erase(conn, refs[0])
    members_after, by_province_after, event_ids_after = await _rebuild(conn, keyring)
    assert members_after[refs[0]] == (pii.ERASED, pii.ERASED)
    assert members_after[refs[1]] == ("9471015507950002", "Yohanes Wenda")
    assert members_after[refs[2]] == ("6501016203880003", "Dewi Lestari")
    # the history and its figures are untouched: same events, same count, same rupiah
    assert event_ids_after == event_ids and len(members_after) == len(members) == 3
    assert by_province_after == by_province
    assert await conn.fetchval("SELECT string_agg(payload::text, ' ' ORDER BY global_position) FROM events") == stored
