"""A person's rights in the recruitment service (shared.privacy): what it holds about a NIK,
correcting an applicant's name, phone or e-mail, erasing an applicant's personal data.

The person_ref of an applicant (and of the TKS it became: the TKS id is the applicant id) is its
stream id, `applicant-<id>`: its key encrypts the personal fields of `ApplicantRegistered` and
of the `applicants` read model; the kernel's privacy events go to that same stream, so the audit
trail lists them under the applicant's province. A NIK is found through `applicant_nik` (every
registration, one per NIK and year: a person who applied in two years has two refs).

After an erasure the applicant's `applicant_nik` row stays (its key is the NIK's keyed hash, no
plaintext): the same NIK cannot register again for that year (409, as before), and registers
for another year as a new applicant with a fresh key. Counts, statuses, quotas and contracts
are unchanged."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import asyncpg
import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, Field

from services.recruitment import handlers, views
from services.recruitment.config import RecruitmentConfig
from shared import pii
from shared.errors import DomainError
from shared.inputs import Text
from shared.nik import mask_nik
from shared.privacy import Privacy, Subject, keyring_of

log = logging.getLogger("tkm.recruitment.privacy")

PREFIX = "applicant-"


class ApplicantCorrections(BaseModel):
    """The fields of an applicant that may be corrected; the NIK, and with it the birth date
    and sex it encodes, is not (a wrong NIK is a new registration)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    full_name: Text(200) | None = None
    phone: Text(30) | None = Field(None, min_length=3, description="null removes it, unless "
                                                                   "the programme requires it")
    email: Text(254) | None = Field(None, min_length=3)


async def find(conn: asyncpg.Connection, subject: Subject) -> list[str]:
    rows = await conn.fetch("SELECT DISTINCT applicant_id FROM applicant_nik "
                            "WHERE nik = ANY($1::text[])", [subject.nik_hash, subject.nik])
    return [PREFIX + r["applicant_id"] for r in rows]


def _ids(refs: list[str]) -> list[str]:
    return [ref.removeprefix(PREFIX) for ref in refs]


async def export(conn: asyncpg.Connection, keys: pii.PersonKeys,
                 refs: list[str]) -> list[dict[str, Any]]:
    """Per applicant: its record (personal fields decrypted), its TKS contracts and the events
    of its streams (type, time, actor pseudonym)."""
    ids = _ids(refs)
    applicants = views.decrypted(keys, [dict(r) for r in await conn.fetch(
        f"SELECT {views.APPLICANT_COLUMNS}, nik FROM applicants "
        "WHERE applicant_id = ANY($1::text[]) ORDER BY registered_at, applicant_id", ids)])
    contracts: dict[str, list[dict[str, Any]]] = {}
    for r in await conn.fetch(f"SELECT {views.TKS_COLUMNS} FROM tks_roster r "
                              "WHERE r.tks_id = ANY($1::text[]) ORDER BY r.year", ids):
        contracts.setdefault(r["tks_id"], []).append(dict(r))
    events: dict[str, list[dict[str, Any]]] = {}
    for r in await conn.fetch(
            "SELECT stream_id, event_type, occurred_at, actor FROM events "
            "WHERE stream_id = ANY($1::text[]) ORDER BY global_position",
            [f"{kind}-{i}" for i in ids for kind in ("applicant", "tks")]):
        events.setdefault(r["stream_id"].split("-", 1)[1], []).append(
            {"event_type": r["event_type"], "occurred_at": r["occurred_at"],
             "actor": r["actor"], "stream_id": r["stream_id"]})
    return [{"kind": "applicant", **a, "tks_contracts": contracts.get(a["applicant_id"], []),
             "events": events.get(a["applicant_id"], [])} for a in applicants]


async def current(conn: asyncpg.Connection, keys: pii.PersonKeys,
                  refs: list[str]) -> dict[str, dict[str, str | None]]:
    rows = await conn.fetch("SELECT applicant_id, nik, full_name, birth_date, phone, email, "
                            "rejection_note FROM applicants WHERE applicant_id = ANY($1::text[])",
                            _ids(refs))
    out: dict[str, dict[str, str | None]] = {}
    for row in views.decrypted(keys, [dict(r) for r in rows]):
        born = row["birth_date"]
        out[PREFIX + row["applicant_id"]] = {
            "nik": row["nik"], "full_name": row["full_name"],
            "birth_date": born.isoformat() if hasattr(born, "isoformat") else born,
            "phone": row["phone"], "email": row["email"]}
        if row["rejection_note"] is not None:  # re-encrypted too, or it would read erased
            out[PREFIX + row["applicant_id"]]["rejection_note"] = row["rejection_note"]
    return out


def _checker(config: RecruitmentConfig):
    def check(changes: BaseModel) -> dict[str, str | None]:
        """The corrections normalised as a registration would be (on the plaintext)."""
        given = changes.model_dump(exclude_unset=True)
        out: dict[str, str | None] = {}
        for name, value in given.items():
            if value is None:
                if name == "full_name" or name in config.contact.required:
                    raise DomainError(f"the {name} cannot be removed", field=f"changes.{name}")
                out[name] = None
            elif name == "full_name":
                out[name] = value.strip()
            elif name == "phone":
                out[name] = _field(lambda v: handlers._phone(v, config.contact.phone_region),
                                   value, name)
            else:
                out[name] = _field(handlers._email, value, name)
        return out

    return check


def _field(normalise, value: str, name: str) -> str:
    try:
        return normalise(value)
    except DomainError as exc:
        raise DomainError(exc.reason, field=f"changes.{name}") from None


async def on_erase(conn: asyncpg.Connection, subject: Subject, refs: list[str]) -> None:
    """A NIK claimed before encryption is kept as its keyed hash from now on (the rule still
    holds for that year; the plain NIK leaves the table)."""
    await conn.execute("UPDATE applicant_nik SET nik = $1 WHERE nik = $2",
                       subject.nik_hash, subject.nik)


def recruitment_privacy(config: RecruitmentConfig) -> Privacy:
    return Privacy(find=find, export=export, current=current, corrections=ApplicantCorrections,
                   check=_checker(config), stream_for=lambda ref: ref, on_erase=on_erase)


# ---- the plaintext written before encryption, sealed once -------------------------------------

SEAL_BATCH = 500
_SEAL_LOCK = "tkm-recruitment-seal-plaintext"
_LEGACY = """
SELECT e.global_position, e.stream_id, e.event_type, e.schema_version, e.payload::text AS payload,
       EXISTS (SELECT 1 FROM events c WHERE c.stream_id = e.stream_id
               AND c.event_type = 'privacy.PersonCorrected') AS corrected
FROM events e
WHERE (e.event_type = 'recruitment.ApplicantRegistered' AND e.schema_version = 1)
   OR (e.event_type = 'recruitment.ApplicantRejected' AND e.payload->>'note' IS NOT NULL
       AND left(e.payload->>'note', 5) <> 'pii1:')
ORDER BY e.global_position LIMIT $1 FOR UPDATE OF e"""


def _throwaway(ref: str) -> pii.PersonKey:
    """A key nobody keeps: what it seals reads as erased (an erased person's old plaintext, or a
    corrected person's superseded values)."""
    return pii.PersonKey(ref, uuid.uuid4(), AESGCM(AESGCM.generate_key(256)))


async def seal_plaintext(conn: asyncpg.Connection, keyring: pii.Keyring,
                         batch_size: int = SEAL_BATCH) -> int:
    """Rewrite, in place, one batch of the events stored before encryption (ApplicantRegistered
    v1, a rejection's plaintext note) with their personal fields as tokens of the applicant's
    key (version 2, with nik_hash and nik_masked); the read model's plaintext columns take the
    same tokens and `applicant_nik` the NIK's hash. An erased applicant's values, and the
    superseded ones of a corrected applicant, are sealed under a key nobody keeps (they read as
    erased). One transaction; returns how many events were rewritten (0: nothing left)."""
    async with conn.transaction():
        rows = await conn.fetch(_LEGACY, batch_size)
        if not rows:
            return 0
        keys = await pii.ensure_keys(conn, keyring, {r["stream_id"] for r in rows})
        events, columns, claims = [], [], []
        for row in rows:
            ref, payload = row["stream_id"], orjson.loads(row["payload"])
            key = keys[ref]
            if key.erased or row["corrected"]:
                key = _throwaway(ref)
            applicant_id = ref.removeprefix(PREFIX)
            if row["event_type"] == "recruitment.ApplicantRegistered":
                nik = payload["nik"]
                sealed = {f: key.encrypt(f, payload.get(f))
                          for f in ("nik", "full_name", "birth_date", "phone", "email")}
                payload = {**payload, **sealed, "nik_hash": keyring.nik_hash(nik),
                           "nik_masked": mask_nik(nik)}
                version = 2
                claims.append((keyring.nik_hash(nik), nik, applicant_id))
            else:
                sealed = {"rejection_note": key.encrypt("rejection_note", payload["note"])}
                payload = {**payload, "note": sealed["rejection_note"]}
                version = row["schema_version"]
            events.append((row["global_position"], orjson.dumps(payload).decode(), version))
            columns.append((applicant_id, *(sealed.get(f) for f in _SEALED_COLUMNS),
                            payload.get("nik_hash")))
        await conn.executemany("UPDATE events SET payload = $2::jsonb, schema_version = $3 "
                               "WHERE global_position = $1", events)
        # a column still in plaintext takes the event's token (a corrected one holds tokens)
        sets = ", ".join(f"{c} = CASE WHEN ${i + 2}::text IS NOT NULL AND left({c}, 5) <> "
                         f"'pii1:' THEN ${i + 2}::text ELSE {c} END"
                         for i, c in enumerate(_SEALED_COLUMNS))
        n = len(_SEALED_COLUMNS)
        await conn.executemany(
            f"UPDATE applicants SET {sets}, nik_hash = coalesce(${n + 2}::text, nik_hash) "
            "WHERE applicant_id = $1", columns)
        await conn.executemany("UPDATE applicant_nik SET nik = $1 WHERE nik = $2 "
                               "AND applicant_id = $3", claims)
        return len(events)


_SEALED_COLUMNS = ("nik", "full_name", "birth_date", "phone", "email", "rejection_note")


async def seal_plaintext_job(ctx: Any, stop: asyncio.Event) -> None:
    """Background job: seal what was stored before encryption, batch by batch, once (another
    instance doing it meanwhile waits on the lock and finds nothing left), then idle until
    shutdown."""
    keyring = keyring_of(ctx)
    total = 0
    async with ctx.pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", _SEAL_LOCK):
            await stop.wait()
            return
        try:
            while not stop.is_set() and (n := await seal_plaintext(conn, keyring)):
                total += n
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", _SEAL_LOCK)
    if total:
        log.info("sealed %d events stored with plaintext personal data", total)
    await stop.wait()
