"""Members' personal data in the groups service: sealed at rest, readable per page, erasable
(issue 18; the design: docs/privacy.md, the kernel: shared/pii.py and shared/privacy.py).

- person_ref = the NIK's keyed hash (`nik_hash`): one data key per person across their groups
  and years, so an erasure by NIK (hash -> key) reaches every group they were ever in.
- `sealer` fetches the keys of a batch of persons in one statement (a CSV import asks once per
  batch of groups) and seals each member's NIK, name, phone and birth date as `pii1:` tokens.
- `reader` loads the keys of a page's persons in one statement and opens their fields; an
  erased person reads as `shared.pii.ERASED` in every personal field; a value that is not a
  token (an event recorded before RosterRecorded/RosterChanged version 2) is plaintext.
- A person whose data was erased is not registered again (`MemberErasedError`, 409): their
  tombstone is their person_ref, which no new key may take, and nothing new is written
  readable for them; their rows stay, erased, in the groups they were in (counts unchanged).
- `groups_privacy()`: what the kernel's privacy routes need from this service (find, export,
  current, corrections); a correction's `privacy.PersonCorrected` is projected onto every
  group_members row of the person (projections.py).
- `seal_plaintext`: the one-time rewrite of rosters stored before sealing (version 1 events,
  plaintext rows): `python -m services.groups.privacy seal-plaintext`.

The keyring is the process's (`ServiceContext.keyring`, loaded once at app creation).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict

from services.groups.domain import MemberRecord, Person, member_name, member_phone
from shared import pii
from shared.errors import ConflictError, DomainError
from shared.inputs import Text
from shared.nik import mask_nik
from shared.privacy import Privacy, Subject, reveal

FIELDS = ("nik", "name", "phone", "birth_date")


class MemberErasedError(ConflictError):
    """The person's personal data was erased: nothing new is recorded for them. `nik_hash`
    lets the caller point at the member without the NIK in the answer."""

    def __init__(self, nik_hash: str):
        super().__init__("this person's personal data was erased (UU PDP): they cannot be "
                         "registered again", field="nik")
        self.nik_hash = nik_hash


def _seal_one(keys: pii.PersonKeys, person: Person) -> MemberRecord:
    ref = person.nik_hash
    try:
        return MemberRecord(nik=keys.encrypt(ref, "nik", person.nik),
                            name=keys.encrypt(ref, "name", person.name),
                            phone=keys.encrypt(ref, "phone", person.phone),
                            birth_date=keys.encrypt(ref, "birth_date",
                                                    person.birth_date.isoformat()),
                            nik_hash=ref)
    except pii.PersonErasedError:
        raise MemberErasedError(ref) from None


class Sealer:
    """Seals persons whose keys `sealer` fetched (a `domain.Seal`)."""

    def __init__(self, keys: pii.PersonKeys):
        self.keys = keys

    def __call__(self, people: Sequence[Person]) -> list[MemberRecord]:
        return [_seal_one(self.keys, p) for p in people]


async def sealer(conn: asyncpg.Connection, keyring: pii.Keyring,
                 people: Iterable[Person]) -> Sealer:
    """The data keys of `people` (created for newcomers), in one statement."""
    return Sealer(await pii.ensure_keys(conn, keyring, {p.nik_hash for p in people}))


class Reader:
    """Opens the sealed member fields of one page with its keys (`reader`)."""

    def __init__(self, keys: pii.PersonKeys):
        self.keys = keys

    def member(self, row: Any) -> dict[str, Any]:
        """nik, name, phone, birth_date of a group_members row, readable."""
        ref = row["nik_hash"]
        out = {f: reveal(self.keys, ref, f, row[f]) if ref else row[f] for f in FIELDS}
        if isinstance(out["birth_date"], date):
            out["birth_date"] = out["birth_date"].isoformat()
        return out


async def reader(conn: asyncpg.Connection, keyring: pii.Keyring,
                 refs: Iterable[str | None]) -> Reader:
    """The keys of the persons on a page, in one statement (none when it names nobody)."""
    wanted = [r for r in dict.fromkeys(refs) if r]
    return Reader(await pii.load_keys(conn, keyring, wanted) if wanted else pii.PersonKeys({}))


def shown_nik(nik: Any, reveal_nik: bool) -> Any:
    """A member's NIK as the API shows it: masked to the region (its first 6 digits) unless
    revealed; ERASED stays ERASED."""
    if isinstance(nik, pii.Erased) or reveal_nik:
        return nik
    return mask_nik(nik)


# ---- the privacy routes (shared.privacy builds them) ----------------------------------------

class MemberCorrections(BaseModel):
    """What a member may have corrected: the name and the phone. The NIK (and the birth date
    it encodes) is the person: a wrong one is another member (change the roster)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Text(200) | None = None
    phone: Text(30) | None = None


def check(changes: BaseModel) -> dict[str, str | None]:
    """The corrections normalised as a registration would (on the plaintext); a null phone
    removes it, the name cannot be removed."""
    out: dict[str, str | None] = {}
    for field, value in changes.model_dump(exclude_unset=True).items():
        try:
            if field == "name":
                out[field] = member_name(value)
            else:
                out[field] = member_phone(value)
        except DomainError as exc:
            raise DomainError(exc.reason, field=f"changes.{field}") from None
    return out


async def find(conn: asyncpg.Connection, subject: Subject) -> list[str]:
    """The person's ref when any group holds them (the NIK's hash: one ref for all groups)."""
    held = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM group_members WHERE nik_hash = $1)"
                               " OR EXISTS (SELECT 1 FROM active_memberships "
                               "WHERE nik_hash = $1)", subject.nik_hash)
    return [subject.nik_hash] if held else []


_HELD = ("SELECT m.group_id, m.nik, m.name, m.phone, m.birth_date, m.nik_hash, "
         "g.name AS group_name, g.year, g.stage, g.status, g.province_code, g.regency_code, "
         "g.registered_on, g.member_count, g.funded_total, "
         "(a.group_id IS NOT NULL) AS active_membership "
         "FROM group_members m JOIN group_registry g USING (group_id) "
         "LEFT JOIN active_memberships a ON a.nik_hash = m.nik_hash AND a.year = g.year "
         "AND a.group_id = m.group_id WHERE m.nik_hash = ANY($1::text[]) "
         "ORDER BY g.year, m.group_id")


async def export(conn: asyncpg.Connection, keys: pii.PersonKeys,
                 refs: list[str]) -> list[dict[str, Any]]:
    """A record per group the person is a member of: their fields (readable, or ERASED), the
    group (id, name, year, stage, status, region, registration date, size, rupiah received),
    whether the membership holds the person's place that year, and the group's events that
    changed its roster (type, time, actor pseudonym)."""
    rows = await conn.fetch(_HELD, refs)
    opened = Reader(keys)
    events: dict[str, list[dict[str, Any]]] = {}
    for r in await conn.fetch(
            "SELECT stream_id, event_type, occurred_at, actor FROM events "
            "WHERE stream_id = ANY($1::text[]) AND event_type = ANY($2::text[]) "
            "ORDER BY global_position",
            [f"group-{r['group_id']}" for r in rows],
            ["groups.RosterRecorded", "groups.RosterChanged"]):
        events.setdefault(r["stream_id"].removeprefix("group-"), []).append(
            {"event_type": r["event_type"], "occurred_at": r["occurred_at"],
             "actor": r["actor"]})
    return [{"kind": "group_member", **opened.member(r), "group_id": r["group_id"],
             "group_name": r["group_name"], "year": r["year"], "stage": r["stage"],
             "status": r["status"], "province_code": r["province_code"],
             "regency_code": r["regency_code"], "registered_on": r["registered_on"],
             "member_count": r["member_count"], "funded_total": r["funded_total"],
             "active_membership": r["active_membership"],
             "roster_events": events.get(r["group_id"], [])} for r in rows]


async def current(conn: asyncpg.Connection, keys: pii.PersonKeys,
                  refs: list[str]) -> dict[str, dict[str, str | None]]:
    """Every personal field of each person as it reads now (the correction re-seals them all
    under the person's new key; the same values in each of their groups)."""
    rows = await conn.fetch("SELECT DISTINCT ON (nik_hash) nik, name, phone, birth_date, "
                            "nik_hash FROM group_members WHERE nik_hash = ANY($1::text[]) "
                            "ORDER BY nik_hash, group_id", refs)
    opened = Reader(keys)
    return {r["nik_hash"]: opened.member(r) for r in rows}


def groups_privacy() -> Privacy:
    return Privacy(find=find, export=export, current=current, corrections=MemberCorrections,
                   check=check)


# ---- the one-time rewrite of what was stored before sealing ---------------------------------

_V1 = ("groups.RosterRecorded", "groups.RosterChanged")


def _unreadable(ref: str) -> pii.PersonKey:
    # a key nobody keeps: its tokens read as ERASED under the person's tombstone
    return pii.PersonKey(ref, uuid.uuid4(), AESGCM(AESGCM.generate_key(bit_length=256)))


def _seal_plain(keys: pii.PersonKeys, keyring: pii.Keyring, m: dict[str, Any]) -> dict[str, Any]:
    ref = keyring.nik_hash(m["nik"])
    key = keys[ref]
    if key.erased:
        key = _unreadable(ref)
    return {"nik": key.encrypt("nik", m["nik"]), "name": key.encrypt("name", m["name"]),
            "phone": key.encrypt("phone", m.get("phone")),
            "birth_date": key.encrypt("birth_date", str(m["birth_date"])), "nik_hash": ref}


async def seal_plaintext(conn: asyncpg.Connection, keyring: pii.Keyring) -> dict[str, int]:
    """Rewrite, once and in place, what was stored before members were sealed: the version 1
    RosterRecorded/RosterChanged events become version 2 (members sealed under their keys,
    removed NIKs as hashes), the `group_members` rows without a hash take the tokens of the
    event that last added them (a rebuild gives the same rows), and `active_memberships` rows
    holding a NIK take its hash. One transaction; a person erased meanwhile (a tombstone) gets
    tokens nobody can open. Returns what was rewritten. Afterwards `VACUUM (FULL) events,
    group_members, active_memberships` drops the old row versions from the table files (before
    the next backup)."""
    async with conn.transaction():
        await conn.execute("LOCK TABLE events, group_members, active_memberships "
                           "IN SHARE ROW EXCLUSIVE MODE")
        rows = await conn.fetch("SELECT global_position, event_type, payload::text AS payload "
                                "FROM events WHERE event_type = ANY($1::text[]) "
                                "AND schema_version = 1 ORDER BY global_position", list(_V1))
        payloads = [json.loads(r["payload"]) for r in rows]
        niks = {m["nik"] for p in payloads for m in (*p.get("members", ()), *p.get("added", ()))}
        niks |= {n for p in payloads for n in p.get("removed", ())}
        legacy = await conn.fetch("SELECT DISTINCT nik_hash AS nik FROM active_memberships "
                                  "WHERE nik_hash ~ '^[0-9]{16}$'")
        niks |= {r["nik"] for r in legacy}
        keys = await pii.ensure_keys(conn, keyring, {keyring.nik_hash(n) for n in niks})
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        updates = []
        for row, payload in zip(rows, payloads, strict=True):
            group_id = payload["group_id"]
            field = "members" if row["event_type"] == "groups.RosterRecorded" else "added"
            sealed = [_seal_plain(keys, keyring, m) for m in payload.get(field, ())]
            for plain, record in zip(payload.get(field, ()), sealed, strict=True):
                latest[(group_id, plain["nik"])] = record
            payload[field] = sealed
            if "removed" in payload:
                payload["removed"] = [keyring.nik_hash(n) for n in payload["removed"]]
            updates.append((row["global_position"], json.dumps(payload)))
        await conn.executemany("UPDATE events SET payload = $2::jsonb, schema_version = 2 "
                               "WHERE global_position = $1", updates)
        await conn.executemany(
            "UPDATE group_members SET nik = $3, name = $4, phone = $5, birth_date = $6, "
            "nik_hash = $7 WHERE group_id = $1 AND nik = $2 AND nik_hash IS NULL",
            [(g, n, r["nik"], r["name"], r["phone"], r["birth_date"], r["nik_hash"])
             for (g, n), r in latest.items()])
        left = await conn.fetchval("SELECT count(*) FROM group_members WHERE nik_hash IS NULL")
        if left:
            raise pii.PiiError(f"{left} group_members rows without a hash match no stored "
                               "roster event: nothing was rewritten")
        claims = await conn.fetch(
            "UPDATE active_memberships a SET nik_hash = u.h FROM unnest($1::text[], "
            "$2::text[]) AS u(n, h) WHERE a.nik_hash = u.n RETURNING a.year",
            [r["nik"] for r in legacy], [keyring.nik_hash(r["nik"]) for r in legacy])
        return {"events": len(updates), "members": len(latest), "memberships": len(claims)}


async def _main() -> None:
    from shared.settings import load_settings

    settings = load_settings("groups")
    conn = await asyncpg.connect(settings.database_url)
    try:
        done = await seal_plaintext(conn, settings.keyring())
    finally:
        await conn.close()
    print(f"sealed: {done['events']} roster events, {done['members']} member rows, "
          f"{done['memberships']} memberships; now VACUUM (FULL) events, group_members, "
          "active_memberships before the next backup")


if __name__ == "__main__":
    import asyncio
    import sys

    if sys.argv[1:] != ["seal-plaintext"]:
        sys.exit("usage: python -m services.groups.privacy seal-plaintext   (GROUPS_DATABASE_URL, "
                 "TKM_PII_MASTER_KEY_FILE)")
    asyncio.run(_main())
