"""A person's rights under UU PDP in every service holding personal data (issue 18): subject
access, correction and erasure, from one router factory; the personal data itself is encrypted
by `shared.pii` (crypto-shredding: per-person keys, erasure deletes the key).

How a service adopts it (recruitment does; groups follows the same steps):

1. `ServiceSpec(..., personal_data=True)`. Schema: nothing else to do. `migrate` (component
   "privacy" in `schema_migrations`: `PII_SCHEMA`, the `pii_person_keys` table) is applied by
   `shared.service` at start-up in a service with personal data, after the kernel's and the
   audit's steps, like `shared.audit.migrate`. Tests that build a database by hand call
   `privacy.migrate(conn)` after `shared.eventstore.migrate`.
2. Keys: the process's `pii.Keyring` is loaded ONCE, when the app is created, from the settings
   (`TKM_PII_MASTER_KEY_FILE`, in compose the secret `pii_<service>_master_key`; without it the
   dev key, only with TKM_ENV=dev or test): a handler reads `ctx.keyring`
   (`shared.service.ServiceContext`), a route without the context `request.app.state.keyring`.
   `keyring_of(ctx)` raises a clear error when it is missing (personal_data not set).
3. Writes: personal fields go into the service's INTERNAL events as `pii.ensure_keys(...)
   .encrypt(person_ref, field, value)` tokens, beside `nik_hash = keyring.nik_hash(nik)`; the
   projection copies the same tokens into the read model (so a rebuild is byte-identical).
   Every NIK rule compares `nik_hash`. Validation runs on the plaintext before encryption.
4. Reads: `pii.load_keys(conn, keyring, refs)` once per page, then `keys.decrypt(...)`; the
   helper `reveal(keys, ref, field, value)` also reads an old plaintext value (not a `pii1:`
   token) as it is, and a ref without a key as ERASED (`key_of(keys, ref)`: `PersonKeys`
   raises PiiKeyError on a miss, so `in` and `.get` do not work on it).
5. HTTP: `build_router(Privacy(...))` among the service spec's `routers`. The service gives
   callbacks (all inside the command's transaction, `conn` its connection):
   - `find(conn, subject) -> list[str]`: the person refs holding this NIK (by
     `subject.nik_hash`; old plaintext rows by `subject.nik`);
   - `export(conn, keys, refs) -> list[dict]`: everything held about them, readable (ids,
     years, statuses, personal fields decrypted with `reveal`);
   - `current(conn, keys, refs) -> {ref: {field: plaintext}}`: every personal field of each ref
     as it reads now (the correction re-encrypts all of them under a new key);
   - `corrections`: the pydantic model of `changes` (the fields that may be corrected, each
     optional), and `check(changes) -> dict` validating/normalising them (DomainError with
     the field, on the plaintext, before encryption);
   - `stream_for(ref)`: the stream the person's privacy events go to (default
     `privacy-<ref>`); recruitment uses the applicant's own stream (its ref IS the stream id);
   - `on_erase(conn, subject, refs)` (optional): the service's own clean-up in the same
     transaction (recruitment replaces a NIK claimed before encryption by its hash).
   The kernel: ministry_admin only; validates the NIK with `shared.nik` (bad NIK: 422 field
   `nik`, the NIK never echoed); hashes it; records every call as a command (the audit trail
   shows who and when, never the NIK): `privacy.PrivacyRequestHandled` in the stream
   `privacy-request-<request id>`, plus per person `privacy.PersonCorrected` {person_ref,
   values: the new tokens} after `pii.rekey` (the superseded tokens read ERASED) or
   `privacy.PersonErased` {person_ref, reason_code} after `pii.erase`. The service's
   PROJECTOR must apply `PersonCorrected` (write `values` into its read model's columns); it
   may ignore `PersonErased` (the tokens already read ERASED) and `PrivacyRequestHandled`.
   The routes: POST /privacy/subject-access, /privacy/correction, /privacy/erasure (the NIK in
   the body, never in the URL). An erasure also deletes the stored answers of subject-access
   requests (`idempotency_keys`), which hold decrypted data, and vacuums the key table after
   its commit (`pii.vacuum_keys`), so a backup taken afterwards holds no key of the person.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, create_model

from shared import pii
from shared.aggregate import Aggregate
from shared.auth import Actor, Role, require
from shared.envelope import Event, register
from shared.errors import ConflictError, NotFoundError, RuleViolationError
from shared.eventstore import apply_steps
from shared.inputs import Text
from shared.nik import InvalidNikError, parse_nik

log = logging.getLogger("tkm.privacy")

STEPS = [(1, "personal data keys (shared.pii)", pii.PII_SCHEMA)]
REQUEST_STREAM = "privacy-request-"
# why a person's data is erased (docs/privacy.md): the person asked (UU PDP art. 43), the
# retention period ended (art. 44(1)(a)), the processing was unlawful (art. 44(1)(d))
REASON_CODES = ("subject_request", "retention_ended", "unlawful_processing")
ReasonCode = Literal["subject_request", "retention_ended", "unlawful_processing"]
SUBJECT_ACCESS_ROUTE = "POST /privacy/subject-access"


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the privacy steps not applied yet (after the kernel's: `schema_migrations` exists),
    under the migrations' advisory lock. Returns the names applied now."""
    return await apply_steps(conn, [("privacy", v, name, sql) for v, name, sql in STEPS])


# ---- kernel events (internal: no topic; they name person refs, never a NIK or a name) -------

@register
class PrivacyRequestHandled(Event):
    """Internal: a ministry admin's subject-access, correction or erasure request, answered.
    `member_count`: how many of the service's person records it concerned."""

    event_type = "privacy.PrivacyRequestHandled"
    request_id: str
    command_type: Literal["subject-access", "correction", "erasure"]
    member_count: int = Field(ge=0)
    reason_code: str | None = None


@register
class PersonCorrected(Event):
    """Internal: every personal field of the person, re-encrypted under their new key (the
    values before read ERASED); a field absent from `values` was not held."""

    event_type = "privacy.PersonCorrected"
    person_ref: str
    request_id: str
    values: dict[str, str | None]
    fields: list[str] = Field(default_factory=list, description="the fields asked to change")


@register
class PersonErased(Event):
    """Internal: the person's data key was deleted; every token of theirs reads ERASED."""

    event_type = "privacy.PersonErased"
    person_ref: str
    request_id: str
    reason_code: str


# ---- reading helpers ------------------------------------------------------------------------

def keyring_of(ctx: Any) -> pii.Keyring:
    """The process's keyring (loaded once, at app creation)."""
    keyring = getattr(ctx, "keyring", None)
    if keyring is None:
        raise RuntimeError("this service context holds no PII keyring (shared.service loads "
                           "it from TKM_PII_MASTER_KEY_FILE at app creation)")
    return keyring


def reveal(keys: Mapping[str, pii.PersonKey], person_ref: str, field: str,
           value: Any) -> Any:
    """A stored personal field as it reads: a token decrypted (ERASED for an erased person or a
    superseded token), a value written before encryption (not a `pii1:` token) as it is, None
    as None. A token of a person without any key reads ERASED."""
    if not pii.is_token(value):
        return value
    key = key_of(keys, person_ref)
    if key is None:
        return pii.ERASED
    return key.decrypt(field, value)


def key_of(keys: Mapping[str, pii.PersonKey], person_ref: str) -> pii.PersonKey | None:
    """The person's key, None when the batch holds none (`PersonKeys` raises PiiKeyError, not
    KeyError, so `in` and `.get` do not work on it)."""
    try:
        return keys[person_ref]
    except (KeyError, pii.PiiKeyError):
        return None


@dataclass(frozen=True)
class Subject:
    """The person a request is about: the validated NIK and its keyed hash. `nik` is for the
    callbacks' matching of rows written before encryption only; never store or log it."""

    nik: str
    nik_hash: str

    def __repr__(self) -> str:
        return f"Subject(nik_hash={self.nik_hash[:12]}...)"


Find = Callable[[asyncpg.Connection, Subject], Awaitable[list[str]]]
Export = Callable[[asyncpg.Connection, pii.PersonKeys, list[str]], Awaitable[list[dict[str, Any]]]]
Current = Callable[[asyncpg.Connection, pii.PersonKeys, list[str]],
                   Awaitable[dict[str, dict[str, str | None]]]]
OnErase = Callable[[asyncpg.Connection, Subject, list[str]], Awaitable[None]]


def _default_stream(person_ref: str) -> str:
    return f"privacy-{person_ref}"


@dataclass(frozen=True)
class Privacy:
    """What a service tells the kernel about the persons it holds (see the module doc)."""

    find: Find
    export: Export
    current: Current
    corrections: type[BaseModel]
    check: Callable[[BaseModel], dict[str, str | None]] = lambda changes: changes.model_dump(
        exclude_unset=True)
    stream_for: Callable[[str], str] = _default_stream
    on_erase: OnErase | None = None


# ---- the routes -----------------------------------------------------------------------------

Admin = Annotated[Actor, Depends(require(Role.ADMIN))]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubjectAccessIn(_Body):
    nik: Text(32) = Field(description="the person's 16-digit NIK (in the body: URLs reach logs)")


class ErasureIn(_Body):
    nik: Text(32) = Field(description="the person's 16-digit NIK")
    reason_code: ReasonCode = Field(description="why: " + ", ".join(REASON_CODES))


class SubjectAccessOut(BaseModel):
    service: str
    found: bool
    records: list[dict[str, Any]]


class CorrectionOut(BaseModel):
    service: str
    corrected: int


class ErasureOut(BaseModel):
    service: str
    erased: int
    already_erased: int


class _Stream(Aggregate):
    """Any stream, to append a person's privacy event to it: its events are read, not applied."""

    def apply(self, event: Event) -> None:
        pass


def subject_of(nik: str, keyring: pii.Keyring) -> Subject:
    """The validated NIK and its hash. Raises RuleViolationError (422, field `nik`) without
    echoing the NIK."""
    try:
        info = parse_nik(nik)
    except InvalidNikError as exc:
        raise RuleViolationError(f"not a valid NIK: {exc}", field="nik") from None
    return Subject(info.nik, keyring.nik_hash(info.nik))


async def _context(request: Request) -> Any:
    from shared.service import context  # shared.service mounts routers built here

    return await context(request)


Ctx = Annotated[Any, Depends(_context)]


def build_router(privacy: Privacy) -> APIRouter:
    """The three routes of a person's rights, for the service described by `privacy`."""
    router = APIRouter(prefix="/privacy", tags=["privacy"])
    CorrectionIn = create_model(
        "CorrectionIn", __base__=_Body,
        nik=(Text(32), Field(description="the person's 16-digit NIK")),
        changes=(privacy.corrections, Field(description="the corrected values; at least one")))

    async def _handled(uow: Any, request_id: str, kind: str, count: int,
                       reason_code: str | None = None) -> None:
        stream = _Stream(f"{REQUEST_STREAM}{request_id}")
        stream.record(PrivacyRequestHandled(request_id=request_id, command_type=kind,
                                            member_count=count, reason_code=reason_code))
        await uow.save(stream)

    async def _person_event(uow: Any, person_ref: str, event: Event) -> None:
        stream_id = privacy.stream_for(person_ref)
        stream = await uow.load(_Stream, stream_id) or _Stream(stream_id)
        stream.record(event)
        await uow.save(stream)

    @router.post("/subject-access", response_model=SubjectAccessOut)
    async def subject_access(body: SubjectAccessIn, ctx: Ctx, actor: Admin) -> dict[str, Any]:
        """Everything this service holds about the person with this NIK, readable (UU PDP
        art. 32); erased fields read as `[erased]`. Recorded in the audit trail (who, when,
        how many records; never the NIK)."""
        keyring = keyring_of(ctx)
        subject = subject_of(body.nik, keyring)
        request_id = str(uuid.uuid4())

        async def decide(uow: Any) -> list[dict[str, Any]] | None:
            refs = await privacy.find(uow.conn, subject)
            keys = await pii.load_keys(uow.conn, keyring, refs)
            records = await privacy.export(uow.conn, keys, refs) if refs else None
            await _handled(uow, request_id, "subject-access", len(refs))
            return records

        records = await ctx.command(decide, actor)
        return {"service": ctx.spec.name, "found": records is not None,
                "records": records or []}

    async def correction(body: Any, ctx: Ctx, actor: Admin) -> dict[str, Any]:
        """Correct the person's personal fields (UU PDP art. 30): every personal field is
        re-encrypted under a new key, so the values before read as erased; reads show the new
        ones. 404 when no record holds this NIK; 409 when the person's data was erased."""
        keyring = keyring_of(ctx)
        subject = subject_of(body.nik, keyring)
        changes = privacy.check(body.changes)
        if not changes:
            raise RuleViolationError("name at least one field to correct", field="changes")
        request_id = str(uuid.uuid4())

        async def decide(uow: Any) -> int:
            refs = sorted(await privacy.find(uow.conn, subject))
            if not refs:
                raise NotFoundError("no record of this service holds this NIK", field="nik")
            # a person whose data was written before encryption gets a key now
            keys = await pii.ensure_keys(uow.conn, keyring, refs)
            now = await privacy.current(uow.conn, keys, refs)
            for ref in refs:
                values = {**now[ref], **changes}
                if keys[ref].erased or any(
                        v is pii.ERASED or isinstance(v, pii.Erased) for v in values.values()):
                    raise ConflictError("the personal data of this person was erased: there "
                                        "is nothing to correct", field="nik")
                try:
                    key = await pii.rekey(uow.conn, keyring, ref)
                except pii.PersonErasedError:
                    raise ConflictError("the personal data of this person was erased: there "
                                        "is nothing to correct", field="nik") from None
                await _person_event(uow, ref, PersonCorrected(
                    person_ref=ref, request_id=request_id, fields=sorted(changes),
                    values={f: key.encrypt(f, v) for f, v in values.items()}))
            await _handled(uow, request_id, "correction", len(refs))
            return len(refs)

        return {"service": ctx.spec.name, "corrected": await ctx.command(decide, actor)}

    # the body's model is built above: an annotation naming it would stay a string here
    correction.__annotations__["body"] = CorrectionIn
    router.post("/correction", response_model=CorrectionOut)(correction)

    @router.post("/erasure", response_model=ErasureOut)
    async def erasure(body: ErasureIn, ctx: Ctx, actor: Admin) -> dict[str, Any]:
        """Erase the person's personal data (UU PDP art. 43-44): their keys are deleted, so
        every personal field of theirs, in events, read models, rebuilds and later backups,
        reads as `[erased]`; ids, counts, statuses and rupiah stay. Idempotent: a second call
        answers `already_erased`. A NIK no record holds answers 0 and 0."""
        keyring = keyring_of(ctx)
        subject = subject_of(body.nik, keyring)
        request_id = str(uuid.uuid4())

        async def decide(uow: Any) -> tuple[int, int]:
            refs = sorted(await privacy.find(uow.conn, subject))
            keys = await pii.load_keys(uow.conn, keyring, refs)
            erased = already = 0
            for ref in refs:
                # a person without a key (data written before encryption) gets a tombstone now
                held = key_of(keys, ref)
                if held is not None and held.erased:
                    already += 1
                    continue
                await pii.erase(uow.conn, ref)
                erased += 1
                await _person_event(uow, ref, PersonErased(
                    person_ref=ref, request_id=request_id, reason_code=body.reason_code))
            if erased:
                if privacy.on_erase is not None:
                    await privacy.on_erase(uow.conn, subject, refs)
                # stored subject-access answers hold decrypted data
                await uow.conn.execute("DELETE FROM idempotency_keys WHERE route = $1",
                                       SUBJECT_ACCESS_ROUTE)
            await _handled(uow, request_id, "erasure", len(refs), body.reason_code)
            return erased, already

        erased, already = await ctx.command(decide, actor)
        if erased:
            try:  # the deleted keys' old row versions out of the table file, before a backup
                async with ctx.pool.acquire() as conn:
                    await pii.vacuum_keys(conn)
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("vacuuming pii_person_keys after an erasure failed: %r", exc)
        return {"service": ctx.spec.name, "erased": erased, "already_erased": already}

    return router


__all__ = ["REASON_CODES", "PersonCorrected", "PersonErased", "Privacy",
           "PrivacyRequestHandled", "Subject", "build_router", "keyring_of", "migrate", "reveal",
           "subject_of"]
