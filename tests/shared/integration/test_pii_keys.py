"""The crypto-shredding kernel (shared.pii) on a real Postgres: keys per person, erasure,
rotation of the master key."""

import asyncio
import uuid

import asyncpg
import pytest

from scripts import backup
from shared import pii
from tests.support.databases import create_database

pytestmark = pytest.mark.integration


@pytest.fixture
async def conn(database_url):
    conn = await asyncpg.connect(database_url)
    await conn.execute(pii.PII_SCHEMA)
    yield conn
    await conn.close()


class _Counting:
    """The connection, counting the statements sent through it."""

    def __init__(self, conn):
        self.conn, self.statements = conn, 0

    async def fetch(self, sql, *args):
        self.statements += 1
        return await self.conn.fetch(sql, *args)


def _refs(n: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"applicant-{run}-{i}" for i in range(n)]


async def test_values_round_trip_through_keys_kept_wrapped_in_the_table(conn):
    keyring = pii.Keyring.dev()
    ref = _refs(1)[0]
    keys = await pii.ensure_keys(conn, keyring, [ref])
    token = keys.encrypt(ref, "full_name", "Yohanes Wenda")
    # another process (a rebuild, a view) reads the key back from the table
    again = await pii.load_keys(conn, keyring, [ref])
    assert again.decrypt(ref, "full_name", token) == "Yohanes Wenda"
    with pytest.raises(pii.PiiDecryptError):
        again.decrypt(ref, "place_of_birth", token)
    row = await conn.fetchrow("SELECT * FROM pii_person_keys WHERE person_ref = $1", ref)
    assert row["kek_id"] == "dev" and row["erased_at"] is None and row["key_id"] == keys[ref].key_id
    # what the table keeps is the wrapped key (nonce + key + tag), not the key itself
    assert len(row["wrapped_key"]) == 12 + 32 + 16
    # asking again gives the same key, not a new one
    assert (await pii.ensure_keys(conn, keyring, [ref]))[ref].key_id == keys[ref].key_id


async def test_keys_for_a_batch_are_created_and_read_in_one_statement(conn):
    keyring = pii.Keyring.dev()
    old = _refs(300)
    await pii.ensure_keys(conn, keyring, old[:100])
    counting = _Counting(conn)
    # 100 who have a key, 200 who have none, one asked twice
    keys = await pii.ensure_keys(counting, keyring, [*old, old[5]])
    assert counting.statements == 1
    assert sorted(keys) == sorted(old)
    assert await conn.fetchval("SELECT count(*) FROM pii_person_keys WHERE person_ref = ANY($1)",
                               old) == 300
    counting.statements = 0
    loaded = await pii.load_keys(counting, keyring, [*old, "nobody"])
    assert counting.statements == 1 and len(loaded) == 300
    assert {ref: k.key_id for ref, k in loaded.items()} == {
        ref: k.key_id for ref, k in keys.items()}
    with pytest.raises(pii.PiiKeyError, match="no data key for nobody"):
        loaded.decrypt("nobody", "nik", "pii1:AAAA")


# overlapping batches in different orders deadlocked 3 runs in 15 before keys went in in order
@pytest.mark.parametrize("run", range(5))
async def test_concurrent_callers_agree_on_one_key_per_person(conn, database_url, run):
    keyring = pii.Keyring.dev()
    refs = _refs(200)
    others = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(
            pii.ensure_keys(c, keyring, refs[i * 20:] + refs[:i * 20])
            for i, c in enumerate(others)))
    finally:
        for c in others:
            await c.close()
    for keys in results:
        assert len(keys) == 200
        assert {r: k.key_id for r, k in keys.items()} == {r: k.key_id for r, k in results[0].items()}


async def test_an_erased_person_reads_as_erased_and_everyone_else_as_before(conn):
    keyring = pii.Keyring.dev()
    siti, budi = _refs(2)
    keys = await pii.ensure_keys(conn, keyring, [siti, budi])
    stored = {ref: {f: keys.encrypt(ref, f, f"{f} of {ref}") for f in ("nik", "full_name")}
              for ref in (siti, budi)}

    async with conn.transaction():
        assert await pii.erase(conn, siti) is True
    assert await pii.erase(conn, siti) is False  # once is enough; again changes nothing

    after = await pii.load_keys(conn, keyring, [siti, budi])
    assert after[siti].erased and not after[budi].erased
    for field, token in stored[siti].items():
        assert after.decrypt(siti, field, token) is pii.ERASED
    for field, token in stored[budi].items():
        assert after.decrypt(budi, field, token) == f"{field} of {budi}"
    row = await conn.fetchrow("SELECT * FROM pii_person_keys WHERE person_ref = $1", siti)
    assert row["wrapped_key"] is None and row["kek_id"] is None and row["erased_at"] is not None
    # the tombstone stays: no new key is made for her, nothing new is encrypted readable
    again = await pii.ensure_keys(conn, keyring, [siti])
    with pytest.raises(pii.PersonErasedError):
        again.encrypt(siti, "full_name", "Siti")
    with pytest.raises(pii.PersonErasedError):
        await pii.rekey(conn, keyring, siti)
    # the table's file no longer holds the old row version with her key
    await pii.vacuum_keys(conn)
    assert await conn.fetchval("SELECT count(*) FROM pii_person_keys WHERE person_ref = $1",
                               siti) == 1


async def test_erasing_someone_without_a_key_leaves_a_tombstone(conn):
    keyring = pii.Keyring.dev()
    ref = _refs(1)[0]
    assert await pii.erase(conn, ref) is False
    keys = await pii.ensure_keys(conn, keyring, [ref])
    assert keys[ref].erased


async def test_an_erasure_rolled_back_erases_nothing(conn):
    keyring = pii.Keyring.dev()
    ref = _refs(1)[0]
    token = (await pii.ensure_keys(conn, keyring, [ref])).encrypt(ref, "phone", "+62811000111")
    with pytest.raises(RuntimeError):
        async with conn.transaction():
            await pii.erase(conn, ref)
            raise RuntimeError("the erasure event could not be appended")
    keys = await pii.load_keys(conn, keyring, [ref])
    assert keys.decrypt(ref, "phone", token) == "+62811000111"


async def test_a_correction_rekeys_so_the_superseded_values_become_unreadable(conn):
    keyring = pii.Keyring.dev()
    ref, other = _refs(2)
    keys = await pii.ensure_keys(conn, keyring, [ref, other])
    wrong = keys.encrypt(ref, "full_name", "Agus Salimm")
    others = keys.encrypt(other, "full_name", "Dewi")
    new_key = await pii.rekey(conn, keyring, ref)
    corrected = new_key.encrypt("full_name", "Agus Salim")
    after = await pii.load_keys(conn, keyring, [ref, other])
    assert after.decrypt(ref, "full_name", wrong) is pii.ERASED
    assert after.decrypt(ref, "full_name", corrected) == "Agus Salim"
    assert after.decrypt(other, "full_name", others) == "Dewi"
    with pytest.raises(pii.PiiKeyError):
        await pii.rekey(conn, keyring, "nobody")


async def test_keys_wrapped_by_one_master_key_do_not_open_under_another(conn):
    ours = pii.Keyring.from_lines([pii.new_key_line("k1")])
    theirs = pii.Keyring.from_lines([pii.new_key_line("k1")])  # same id, other key file
    ref = _refs(1)[0]
    await pii.ensure_keys(conn, ours, [ref])
    with pytest.raises(pii.PiiKeyError, match="does not unwrap"):
        await pii.load_keys(conn, theirs, [ref])
    with pytest.raises(pii.PiiKeyError, match="does not hold"):
        await pii.load_keys(conn, pii.Keyring.from_lines([pii.new_key_line("k2")]), [ref])


async def test_a_master_key_rotation_rewraps_every_live_key_and_old_values_still_read(conn):
    old_line = pii.new_key_line("2026a")
    old = pii.Keyring.from_lines([old_line])
    refs = _refs(25)
    keys = await pii.ensure_keys(conn, old, refs)
    tokens = {ref: keys.encrypt(ref, "nik", f"nik of {ref}") for ref in refs}
    await pii.erase(conn, refs[0])

    # step 1: the new key goes on top of the file; new keys are wrapped by it at once
    new_line = pii.new_key_line("2027a")
    rotated = pii.Keyring.from_lines([new_line, old_line])
    newcomer = _refs(1)[0]
    await pii.ensure_keys(conn, rotated, [newcomer])
    assert await pii.kek_usage(conn) == {"2026a": 24, "2027a": 1}
    # step 2: re-wrap the rest, in batches
    assert await pii.rewrap(conn, rotated, batch_size=10) == 24
    assert await pii.kek_usage(conn) == {"2027a": 25}
    assert await pii.rewrap(conn, rotated) == 0
    # step 3: the old key is needed no more for any data key (it stays in the file only as
    # the NIK hash's root); every value written before still reads, under the same data key
    after = await pii.load_keys(conn, pii.Keyring.from_lines([new_line]), refs)
    assert after.decrypt(refs[0], "nik", tokens[refs[0]]) is pii.ERASED
    for ref in refs[1:]:
        assert after.decrypt(ref, "nik", tokens[ref]) == f"nik of {ref}"
        assert after[ref].key_id == keys[ref].key_id


async def test_a_backup_taken_after_an_erasure_restores_without_the_persons_key(
        conn, database_url, infra, tmp_path):
    keyring = pii.Keyring.dev()
    siti, budi = _refs(2)
    keys = await pii.ensure_keys(conn, keyring, [siti, budi])
    tokens = {ref: keys.encrypt(ref, "full_name", f"name of {ref}") for ref in (siti, budi)}
    before = backup.dump(database_url, tmp_path / "before.dump")
    await pii.erase(conn, siti)
    await pii.vacuum_keys(conn)
    after = backup.dump(database_url, tmp_path / "after.dump")

    async def restored(archive) -> pii.PersonKeys:
        url = await create_database(infra)
        backup.restore(url, archive)
        other = await asyncpg.connect(url)
        try:
            return await pii.load_keys(other, keyring, [siti, budi])
        finally:
            await other.close()

    from_after = await restored(after)
    assert from_after.decrypt(siti, "full_name", tokens[siti]) is pii.ERASED
    assert from_after.decrypt(budi, "full_name", tokens[budi]) == f"name of {budi}"
    # what the erasure cannot reach: a backup taken before it (hence a bounded backup rotation)
    from_before = await restored(before)
    assert from_before.decrypt(siti, "full_name", tokens[siti]) == f"name of {siti}"
