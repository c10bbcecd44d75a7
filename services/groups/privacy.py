"""Members' personal data in the groups service: sealed at rest, readable per page, erasable
(issue 18; the design: docs/privacy.md, the kernel: shared/pii.py).

- person_ref = the NIK's keyed hash (`nik_hash`): one data key per person across their groups
  and years, so an erasure by NIK (hash -> key) reaches every group they were in.
- `sealer` fetches the keys of a batch of persons in one statement (a CSV import asks once per
  batch of groups) and seals each member's NIK, name, phone and birth date as `pii1:` tokens.
- `reader` loads the keys of a page's persons in one statement and opens their fields; an
  erased person reads as `shared.pii.ERASED` in every personal field; a value that is not a
  token (an event recorded before version 2) is plaintext and reads as it is.
- A person whose data was erased is not registered again (`MemberErasedError`, 409): their
  tombstone keeps the key from being recreated, so nothing new is written readable for them.
- `subject_access`, `correct` and `erase`: what the privacy routes (shared.privacy) do here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

import asyncpg

from services.groups.domain import (
    Group,
    MemberRecord,
    Person,
    member_name,
    member_phone,
    stream_id,
)
from shared import pii
from shared.aggregate import UnitOfWork
from shared.errors import ConflictError, DomainError, NotFoundError
from shared.nik import mask_nik

FIELDS = ("nik", "name", "phone", "birth_date")
# what a correction may change: the NIK and the birth date (from the NIK) are the person's
# identity; a wrong one is a different person (remove and add the member instead)
CORRECTABLE = ("name", "phone")


@functools.cache
def keyring() -> pii.Keyring:
    """The process's keyring, loaded once (TKM_PII_MASTER_KEY_FILE; the dev key only with
    TKM_ENV=dev or test)."""
    return pii.Keyring.from_environment()


def nik_hash(nik: str) -> str:
    return keyring().nik_hash(nik)


class MemberErasedError(ConflictError):
    """The person's personal data was erased at their request: nothing new is recorded for
    them. `nik_hash` lets the caller point at the member without the NIK in the answer."""

    def __init__(self, nik_hash: str):
        super().__init__("this person's personal data was erased at their request (UU PDP): "
                         "they cannot be registered again", field="nik")
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
    """Seals persons whose keys were fetched by `sealer` (a `domain.Seal`)."""

    def __init__(self, keys: pii.PersonKeys):
        self.keys = keys

    def __call__(self, people: Sequence[Person]) -> list[MemberRecord]:
        return [_seal_one(self.keys, p) for p in people]


async def sealer(conn: asyncpg.Connection, people: Iterable[Person]) -> Sealer:
    """The data keys of `people` (created for newcomers), in one statement."""
    return Sealer(await pii.ensure_keys(conn, keyring(), {p.nik_hash for p in people}))


def _open(keys: pii.PersonKeys, ref: str | None, field: str, value: Any) -> Any:
    if value is None or not pii.is_token(value):
        return value  # plaintext, recorded before the data was sealed
    if ref is None or ref not in keys:
        return pii.ERASED
    return keys.decrypt(ref, field, value)


class Reader:
    """Opens sealed member fields with the keys of one page (`reader`)."""

    def __init__(self, keys: pii.PersonKeys):
        self.keys = keys

    def field(self, ref: str | None, field: str, value: Any) -> Any:
        return _open(self.keys, ref, field, value)

    def member(self, row: Any) -> dict[str, Any]:
        """nik, name, phone, birth_date of a group_members row (or a MemberRecord)."""
        get = row.get if isinstance(row, dict | asyncpg.Record) else \
            (lambda k: getattr(row, k))
        ref = get("nik_hash")
        out = {f: self.field(ref, f, get(f)) for f in FIELDS}
        if isinstance(out["birth_date"], date):
            out["birth_date"] = out["birth_date"].isoformat()
        return out


async def reader(conn: asyncpg.Connection, refs: Iterable[str | None]) -> Reader:
    """The keys of the persons on a page, in one statement (none when the page holds none)."""
    wanted = [r for r in dict.fromkeys(refs) if r]
    return Reader(await pii.load_keys(conn, keyring(), wanted))


def shown_nik(nik: Any, reveal: bool) -> Any:
    """A member's NIK as the API shows it: masked to the region unless revealed; ERASED
    stays ERASED."""
    if isinstance(nik, pii.Erased) or reveal:
        return nik
    return mask_nik(nik)


# ---- the privacy routes' work (shared.privacy gives them their HTTP form) -------------------

_HELD = ("SELECT m.group_id, m.nik, m.name, m.phone, m.birth_date, m.nik_hash, g.name AS "
         "group_name, g.year, g.stage, g.status, g.province_code, g.regency_code, "
         "g.registered_on, (a.group_id IS NOT NULL) AS active_membership "
         "FROM group_members m JOIN group_registry g USING (group_id) "
         "LEFT JOIN active_memberships a ON a.nik_hash = m.nik_hash AND a.year = g.year "
         "AND a.group_id = m.group_id WHERE m.nik_hash = $1 ORDER BY g.year, m.group_id")


async def subject_access(conn: asyncpg.Connection, nik: str) -> list[dict[str, Any]]:
    """Everything this service holds about the person of `nik`, readable: a record per group
    they are a member of (their fields, the group, its year and status, whether the
    membership holds their place that year). Erased fields read as ERASED."""
    ref = nik_hash(nik)
    rows = await conn.fetch(_HELD, ref)
    opened = await reader(conn, [ref])
    return [{"kind": "group_member", "group_id": r["group_id"], "group_name": r["group_name"],
             "year": r["year"], "stage": r["stage"], "status": r["status"],
             "province_code": r["province_code"], "regency_code": r["regency_code"],
             "registered_on": r["registered_on"].isoformat() if r["registered_on"] else None,
             "active_membership": r["active_membership"], **opened.member(r)}
            for r in rows]


def _corrections(changes: dict[str, Any]) -> dict[str, str | None]:
    unknown = sorted(set(changes) - set(CORRECTABLE))
    if unknown:
        raise DomainError(f"a group member's {', '.join(unknown)} cannot be corrected here; "
                          f"correctable: {', '.join(CORRECTABLE)}", field=f"changes.{unknown[0]}")
    if not changes:
        raise DomainError("nothing to correct", field="changes")
    out: dict[str, str | None] = {}
    for field, check in (("name", member_name), ("phone", member_phone)):
        if field in changes:
            try:
                out[field] = check(changes[field])
            except DomainError as exc:
                raise DomainError(exc.reason, field=f"changes.{field}") from None
    return out


async def correct(uow: UnitOfWork, nik: str, changes: dict[str, Any]) -> int:
    """Correct the person's name/phone in every group they are a member of: the person's key
    is replaced (`rekey`: every earlier token of theirs reads as erased) and a MemberCorrected
    with all their fields re-sealed is recorded per group. Returns the groups corrected.
    Raises NotFoundError when no group holds the person, MemberErasedError when erased."""
    fixed = _corrections(changes)
    conn = uow.conn
    ref = nik_hash(nik)
    rows = await conn.fetch("SELECT group_id, nik, name, phone, birth_date, nik_hash "
                            "FROM group_members WHERE nik_hash = $1 ORDER BY group_id", ref)
    if not rows:
        raise NotFoundError("no group member has this NIK", field="nik")
    current = (await reader(conn, [ref])).member(rows[0])
    if isinstance(current["nik"], pii.Erased):
        raise MemberErasedError(ref)
    try:
        key = await pii.rekey(conn, keyring(), ref)
    except pii.PersonErasedError:
        raise MemberErasedError(ref) from None
    values = {**current, **fixed}
    keys = pii.PersonKeys({ref: key})
    record = MemberRecord(nik=keys.encrypt(ref, "nik", values["nik"]),
                          name=keys.encrypt(ref, "name", values["name"]),
                          phone=keys.encrypt(ref, "phone", values["phone"]),
                          birth_date=keys.encrypt(ref, "birth_date", values["birth_date"]),
                          nik_hash=ref)
    groups = await uow.load_many(Group, [stream_id(r["group_id"]) for r in rows])
    for group in groups.values():
        group.correct_member(record)
    await uow.save_many(groups.values())
    return len(groups)


async def erase(conn: asyncpg.Connection, nik: str) -> tuple[str, bool, int]:
    """Erase the person of `nik`: their data key is deleted (tombstone kept), so every token of
    theirs in events, read models, rebuilds and later backups reads as ERASED; memberships,
    counts and rupiah stay. Returns (person_ref, erased now (False: erased before), groups
    holding them)."""
    ref = nik_hash(nik)
    groups = await conn.fetchval("SELECT count(*) FROM group_members WHERE nik_hash = $1", ref)
    return ref, await pii.erase(conn, ref), groups
