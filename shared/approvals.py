"""Four eyes on money: a maker asks, a different checker grants or rejects (issue 18, item 1).

A command that moves money (funding and tranche changes, LPJ acceptance, the year-end close) is
not carried out when its maker asks for it: it becomes a pending *approval request*, an
event-sourced aggregate (stream `approval-<request_id>`) in the owning service's own event store,
and is carried out when a checker grants it. Every step is an internal event (never published)
recording its actor:

    ApprovalRequested {request_id, command_type, target, payload, province_code, year, amount,
                       batch_id, maker, maker_role, checker_roles, requested_at, expires_at}
    ApprovalGranted   {checker, checker_role, granted_at}
    ApprovalCarriedOut {result}              (same transaction as ApprovalGranted)
    ApprovalRejected  {checker, checker_role, reason_code, note, rejected_at}
    ApprovalExpired   {expired_at}

Guarantees (tests/shared/*/test_approvals*):
- A maker never checks their own request: the checker's pseudonym (the same for every role the
  person holds) must differ from the maker's (403, field "checker").
- A checker holds one of the request's checking roles (fixed when it was made) and, as a
  provincial officer, the request's province; a request without a province (a national command)
  is checked by ministry admins only (403).
- A grant carries out the command exactly once: the service's callback runs in the transaction
  that records ApprovalGranted and ApprovalCarriedOut, under the request stream's lock (every
  event that transaction writes has the ApprovalRequested event as its causation); a second
  grant answers 409 with the first result, and a retry under one `Idempotency-Key` gets the first
  answer replayed (shared.idempotency). A callback that refuses (the group changed meanwhile)
  rolls the whole grant back: the request stays pending, to be rejected or granted later.
- Rejected and expired requests are never granted (409). Expiry is `requested_at` plus the
  rules' `expires_after_days`, in UTC; `expire_due` (the service's housekeeping job, `sweeper`)
  records ApprovalExpired for pending requests past it, and a grant arriving after it records the
  expiry instead of granting.
- A bulk command is made item by item (one request per target, sharing a `batch_id`) and granted
  item by item (`grant_many`): each item in a savepoint of its own (up to 100 share a
  transaction and its commit), with its own result or error; a refused item rolls back alone.

Which commands need four eyes, who may make and check them, the threshold (rupiah at or above
which it applies; 0 = always), the expiry and the rejection reason codes are a section of the
service's programme rules per year (`FourEyesRules`, in the service's `shared.rules` model).
The read model `approval_requests` (`APPROVALS_SCHEMA`, in a migration of the service) lists the
requests by state, province, command type and batch; `router()` serves it and the decisions.
"""

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import asyncpg
import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from shared.aggregate import Aggregate, UnitOfWork, run_command
from shared.auth import Actor, Role
from shared.envelope import Envelope, Event, UtcDateTime, json_text, register, utcnow
from shared.errors import ConflictError, DomainError, ForbiddenError, NotFoundError, \
    RuleViolationError
from shared.projections import recordset

if TYPE_CHECKING:
    from fastapi import APIRouter

    from shared.rules import RuleBook
    from shared.service import ServiceContext

log = logging.getLogger("tkm.approvals")

SYSTEM_ACTOR = "system"
STREAM_PREFIX = "approval-"
MAX_BULK = 500  # request ids granted in one call
GRANTS_PER_TRANSACTION = 100  # grants of one call sharing a transaction (each in a savepoint)
MAX_NOTE = 500
MAX_PAYLOAD_BYTES = 16_384
# the roles that may make or check a money command: never a TKS, an agency or an auditor
DECIDING_ROLES = (Role.ADMIN, Role.PROVINCE)
# keys a command payload must never carry: it is stored in the request and shown to checkers
PERSONAL_KEYS = frozenset({"nik", "name", "full_name", "phone", "email", "birth_date",
                           "date_of_birth", "address", "members"})

CODE_PATTERN = r"^[a-z][a-z0-9_.]{0,63}$"
Code = Annotated[str, StringConstraints(pattern=CODE_PATTERN)]

PENDING, GRANTED, REJECTED, EXPIRED = "pending", "granted", "rejected", "expired"
STATES = (PENDING, GRANTED, REJECTED, EXPIRED)

APPROVALS_SCHEMA = """
CREATE TABLE IF NOT EXISTS approval_requests (
    request_id uuid PRIMARY KEY,
    command_type text NOT NULL,
    target text NOT NULL,
    province_code text,
    year integer NOT NULL,
    amount bigint,
    batch_id uuid,
    maker text NOT NULL,
    maker_role text NOT NULL,
    checker_roles text[] NOT NULL,
    payload jsonb NOT NULL,
    state text NOT NULL,
    requested_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    decided_at timestamptz,
    checker text,
    checker_role text,
    reason_code text,
    note text,
    result jsonb
);
CREATE INDEX IF NOT EXISTS approval_requests_listing
    ON approval_requests (state, province_code, requested_at);
CREATE INDEX IF NOT EXISTS approval_requests_due
    ON approval_requests (expires_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS approval_requests_batch
    ON approval_requests (batch_id) WHERE batch_id IS NOT NULL;
"""
# what a rebuild (shared.projections.RebuildPlan) swaps in: add to the plan's tables, and
# call `project` from the plan's projector
APPROVAL_TABLES = ("approval_requests",)

DEFAULT_REASON_CODES = ("wrong_amount", "wrong_target", "not_eligible", "duplicate",
                        "missing_evidence", "other")


# -- rules -------------------------------------------------------------------------------------

class CommandRule(BaseModel):
    """Four eyes for one command type."""

    model_config = ConfigDict(extra="forbid")
    makers: list[Role] = Field(min_length=1, description="roles that may ask for the command")
    checkers: list[Role] = Field(min_length=1, description="roles that may grant or reject it")
    threshold: int = Field(0, ge=0, le=10**15, description=(
        "whole rupiah at or above which four eyes apply; 0 = always (also for commands "
        "without an amount)"))

    @field_validator("makers", "checkers")
    @classmethod
    def _deciding(cls, roles: list[Role]) -> list[Role]:
        for role in roles:
            if role not in DECIDING_ROLES:
                raise ValueError(f"{role.value} may not make or check money commands; "
                                 f"allowed: {', '.join(r.value for r in DECIDING_ROLES)}")
        return list(dict.fromkeys(roles))

    def applies(self, amount: int | None) -> bool:
        return self.threshold == 0 or (amount is not None and amount >= self.threshold)


class FourEyesRules(BaseModel):
    """The four-eyes section of a service's programme rules for a year."""

    model_config = ConfigDict(extra="forbid")
    commands: dict[Code, CommandRule] = Field(default_factory=dict, description=(
        "command type -> its rule; a command type not listed is carried out at once"))
    expires_after_days: int = Field(7, ge=1, le=90, description=(
        "a pending request expires this many days (UTC, 24 h each) after it was made"))
    reason_codes: list[Code] = Field(default_factory=lambda: list(DEFAULT_REASON_CODES),
                                     min_length=1, description="what a rejection may cite")

    def rule(self, command_type: str, amount: int | None = None) -> CommandRule | None:
        """The rule when four eyes apply to this command and amount, else None."""
        rule = self.commands.get(command_type)
        return rule if rule is not None and rule.applies(amount) else None


# -- events ------------------------------------------------------------------------------------

@register
class ApprovalRequested(Event):
    """Internal: a maker asked for a command that needs a second pair of eyes."""

    event_type = "approvals.ApprovalRequested"
    request_id: uuid.UUID
    command_type: str
    target: str
    payload: dict[str, Any]
    province_code: str | None
    year: int
    amount: int | None = None
    batch_id: uuid.UUID | None = None
    maker: str  # the maker's pseudonym
    maker_role: str
    checker_roles: list[str]
    requested_at: UtcDateTime
    expires_at: UtcDateTime


@register
class ApprovalGranted(Event):
    event_type = "approvals.ApprovalGranted"
    checker: str
    checker_role: str
    granted_at: UtcDateTime


@register
class ApprovalCarriedOut(Event):
    event_type = "approvals.ApprovalCarriedOut"
    result: dict[str, Any]


@register
class ApprovalRejected(Event):
    event_type = "approvals.ApprovalRejected"
    checker: str
    checker_role: str
    reason_code: str
    note: str | None = None
    rejected_at: UtcDateTime


@register
class ApprovalExpired(Event):
    event_type = "approvals.ApprovalExpired"
    expired_at: UtcDateTime


APPROVAL_EVENTS = frozenset(c.event_type for c in (
    ApprovalRequested, ApprovalGranted, ApprovalCarriedOut, ApprovalRejected, ApprovalExpired))


# -- errors ------------------------------------------------------------------------------------

class SelfCheckError(ForbiddenError):
    def __init__(self) -> None:
        super().__init__("a maker cannot check their own request: another person with a "
                         "checking role must grant or reject it", field="checker")


class NotPendingError(ConflictError):
    pass


# -- the aggregate -----------------------------------------------------------------------------

def _expired() -> NotPendingError:
    return NotPendingError("request expired before it was granted", field="request_id",
                           state=EXPIRED)


def stream_id(request_id: uuid.UUID | str) -> str:
    return f"{STREAM_PREFIX}{request_id}"


def pseudonym_of(actor: Actor) -> str:
    """The actor's pseudonym: the same for every role one person holds."""
    return actor.id.split(":", 1)[1]


class ApprovalRequest(Aggregate):
    def __init__(self, stream_id: str):
        super().__init__(stream_id)
        self.requested: ApprovalRequested | None = None
        self.state = PENDING
        self.checker: str | None = None
        self.checker_role: str | None = None
        self.decided_at: datetime | None = None
        self.reason_code: str | None = None
        self.result: dict[str, Any] | None = None

    @property
    def requested_event_id(self) -> uuid.UUID:
        """The id of the ApprovalRequested event of a request loaded while pending: its
        stream's one event (read with it, no query of its own)."""
        assert self.version == 1 and self.loaded_event_id is not None, "loaded while pending"
        return self.loaded_event_id

    @property
    def request(self) -> ApprovalRequested:
        assert self.requested is not None
        return self.requested

    def apply(self, event: Event) -> None:
        if isinstance(event, ApprovalRequested):
            self.requested, self.state = event, PENDING
        elif isinstance(event, ApprovalGranted):
            self.state, self.checker, self.checker_role = GRANTED, event.checker, event.checker_role
            self.decided_at = event.granted_at
        elif isinstance(event, ApprovalCarriedOut):
            self.result = event.result
        elif isinstance(event, ApprovalRejected):
            self.state, self.checker, self.checker_role = REJECTED, event.checker, event.checker_role
            self.decided_at, self.reason_code = event.rejected_at, event.reason_code
        elif isinstance(event, ApprovalExpired):
            self.state, self.decided_at = EXPIRED, event.expired_at
        else:  # pragma: no cover - nothing else is written to an approval stream
            raise TypeError(f"an approval request cannot apply {event.event_type}")

    # commands

    @classmethod
    def make(cls, *, request_id: uuid.UUID, command_type: str, target: str,
             payload: dict[str, Any], province_code: str | None, year: int, amount: int | None,
             batch_id: uuid.UUID | None, maker: Actor, rule: CommandRule,
             rules: FourEyesRules, now: datetime) -> "ApprovalRequest":
        if maker.role not in rule.makers:
            raise ForbiddenError(
                f"role {maker.role.value} may not ask for {command_type}; allowed: "
                f"{', '.join(r.value for r in rule.makers)}", field="Authorization")
        if province_code is not None:
            maker.ensure_province(province_code)
        elif maker.role is Role.PROVINCE:
            raise ForbiddenError(f"{command_type} is national: a provincial officer cannot ask "
                                 "for it", field="Authorization")
        check_payload(payload)
        agg = cls(stream_id(request_id))
        agg.record(ApprovalRequested(
            request_id=request_id, command_type=command_type, target=target, payload=payload,
            province_code=province_code, year=year, amount=amount, batch_id=batch_id,
            maker=pseudonym_of(maker), maker_role=maker.role.value,
            checker_roles=[r.value for r in rule.checkers], requested_at=now,
            expires_at=now + timedelta(days=rules.expires_after_days)))
        return agg

    def ensure_may_check(self, checker: Actor) -> None:
        """Raises ForbiddenError unless `checker` may decide this request."""
        req = self.request
        if pseudonym_of(checker) == req.maker:
            raise SelfCheckError()
        if checker.role.value not in req.checker_roles:
            raise ForbiddenError(f"role {checker.role.value} may not check {req.command_type}; "
                                 f"allowed: {', '.join(req.checker_roles)}", field="checker")
        if checker.role is Role.PROVINCE:
            if req.province_code is None:
                raise ForbiddenError(f"{req.command_type} is national: only a ministry admin "
                                     "may check it", field="checker")
            checker.ensure_province(req.province_code)

    def ensure_pending(self) -> None:
        if self.state == GRANTED:
            raise NotPendingError(
                f"request already granted by {self.checker_role}:{self.checker} at "
                f"{_iso(self.decided_at)}; its command was carried out once", field="request_id",
                state=self.state, result=self.result)
        if self.state != PENDING:
            raise NotPendingError(f"request is {self.state} and can no longer be decided",
                                  field="request_id", state=self.state,
                                  reason_code=self.reason_code)

    def is_past_due(self, now: datetime) -> bool:
        return self.state == PENDING and now >= self.request.expires_at

    def grant(self, checker: Actor, now: datetime) -> None:
        self.ensure_may_check(checker)
        self.ensure_pending()
        self.record(ApprovalGranted(checker=pseudonym_of(checker),
                                    checker_role=checker.role.value, granted_at=now))

    def carried_out(self, result: dict[str, Any]) -> None:
        if self.state != GRANTED or self.result is not None:
            raise AssertionError("carried out only once, right after the grant")
        self.record(ApprovalCarriedOut(result=result))

    def reject(self, checker: Actor, reason_code: str, note: str | None, now: datetime) -> None:
        self.ensure_may_check(checker)
        self.ensure_pending()
        self.record(ApprovalRejected(checker=pseudonym_of(checker),
                                     checker_role=checker.role.value, reason_code=reason_code,
                                     note=note, rejected_at=now))

    def expire(self, now: datetime) -> None:
        if self.state != PENDING:
            return
        self.record(ApprovalExpired(expired_at=now))


def _refused(request_id: uuid.UUID, exc: DomainError) -> dict[str, Any]:
    """A grant's result in a list: the error that refused it."""
    return {"request_id": str(request_id), "status": exc.status, "error": exc.body()["error"]}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def check_payload(payload: Any, path: str = "payload") -> None:
    """Refuse a payload that is not plain JSON or names personal data (a programming error
    of the calling service, not of its caller: ValueError)."""
    if isinstance(payload, dict):
        for key, value in payload.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: keys must be strings")
            if key.lower() in PERSONAL_KEYS:
                raise ValueError(f"{path}.{key}: personal data never goes into an approval "
                                 "request")
            check_payload(value, f"{path}.{key}")
    elif isinstance(payload, list):
        for i, value in enumerate(payload):
            check_payload(value, f"{path}[{i}]")
    elif not (payload is None or isinstance(payload, str | int | float | bool)):
        raise ValueError(f"{path}: {type(payload).__name__} is not JSON")
    if path == "payload" and len(json.dumps(payload)) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload over {MAX_PAYLOAD_BYTES} bytes")


# -- the read model ----------------------------------------------------------------------------

async def project(conn: asyncpg.Connection, pairs: Sequence[tuple[Envelope, Event]]) -> None:
    """Keep `approval_requests` in step with approval events (others are ignored), a statement
    per event type whatever the number of events (the rows as one JSON parameter, planned at
    their number: shared.projections.recordset). Idempotent: a service may call it from its
    own projector too (and must, for a rebuild). The requests' rows are written first; each
    later event of a request sets columns of its own state (decided, carried out), so the
    updates of one request commute."""
    rows: dict[type, list[dict[str, Any]]] = {}
    for envelope, event in pairs:
        if not envelope.stream_id.startswith(STREAM_PREFIX):
            continue
        request_id = envelope.stream_id.removeprefix(STREAM_PREFIX)
        if isinstance(event, ApprovalRequested):
            row: dict[str, Any] = {
                "request_id": event.request_id, "command_type": event.command_type,
                "target": event.target, "province_code": event.province_code,
                "year": event.year, "amount": event.amount, "batch_id": event.batch_id,
                "maker": event.maker, "maker_role": event.maker_role,
                "checker_roles": event.checker_roles, "payload": event.payload,
                "requested_at": event.requested_at, "expires_at": event.expires_at}
        elif isinstance(event, ApprovalGranted):
            row = {"request_id": request_id, "at": event.granted_at, "checker": event.checker,
                   "checker_role": event.checker_role}
        elif isinstance(event, ApprovalCarriedOut):
            row = {"request_id": request_id, "result": event.result}
        elif isinstance(event, ApprovalRejected):
            row = {"request_id": request_id, "at": event.rejected_at, "checker": event.checker,
                   "checker_role": event.checker_role, "reason_code": event.reason_code,
                   "note": event.note}
        elif isinstance(event, ApprovalExpired):
            row = {"request_id": request_id, "at": event.expired_at}
        else:  # pragma: no cover - nothing else is written to an approval stream
            continue
        rows.setdefault(type(event), []).append(row)
    for kind, columns, sql in _PROJECTIONS:
        if rows.get(kind):
            await conn.execute(sql.format(rows=recordset(columns, len(rows[kind]))),
                               json_text(rows[kind]))


_DECIDED = "at timestamptz, checker text, checker_role text"
# (event type, its rows' columns, the statement writing them from `{rows}`: their recordset,
# planned at their number, so one event updates its request through the primary key instead
# of a seq scan of every request ever made)
_PROJECTIONS: tuple[tuple[type, str, str], ...] = (
    (ApprovalRequested,
     "request_id uuid, command_type text, target text, province_code text, year int, "
     "amount bigint, batch_id uuid, maker text, maker_role text, checker_roles text[], "
     "payload jsonb, requested_at timestamptz, expires_at timestamptz",
     "INSERT INTO approval_requests (request_id, command_type, target, province_code, year, "
     "amount, batch_id, maker, maker_role, checker_roles, payload, state, requested_at, "
     "expires_at) SELECT request_id, command_type, target, province_code, year, amount, "
     "batch_id, maker, maker_role, checker_roles, payload, 'pending', requested_at, expires_at "
     "FROM {rows} AS r ON CONFLICT DO NOTHING"),
    (ApprovalGranted, f"request_id uuid, {_DECIDED}",
     "UPDATE approval_requests a SET state = 'granted', decided_at = r.at, checker = r.checker, "
     "checker_role = r.checker_role FROM {rows} AS r WHERE a.request_id = r.request_id"),
    (ApprovalCarriedOut, "request_id uuid, result jsonb",
     "UPDATE approval_requests a SET result = r.result FROM {rows} AS r "
     "WHERE a.request_id = r.request_id"),
    (ApprovalRejected, f"request_id uuid, {_DECIDED}, reason_code text, note text",
     "UPDATE approval_requests a SET state = 'rejected', decided_at = r.at, checker = r.checker, "
     "checker_role = r.checker_role, reason_code = r.reason_code, note = r.note "
     "FROM {rows} AS r WHERE a.request_id = r.request_id"),
    (ApprovalExpired, "request_id uuid, at timestamptz",
     "UPDATE approval_requests a SET state = 'expired', decided_at = r.at "
     "FROM {rows} AS r WHERE a.request_id = r.request_id"),
)


async def _save(uow: UnitOfWork, agg: ApprovalRequest) -> None:
    events = list(agg.pending)
    envelopes = await uow.save(agg)
    await project(uow.conn, list(zip(envelopes, events, strict=True)))


async def _save_many(uow: UnitOfWork, aggs: Sequence[ApprovalRequest],
                     cause: Callable[[Event], uuid.UUID | None] | None = None) -> None:
    events = [e for agg in aggs for e in agg.pending]
    envelopes = await uow.save_many(aggs, cause=cause)
    await project(uow.conn, list(zip(envelopes, events, strict=True)))


def _row(r: asyncpg.Record) -> dict[str, Any]:
    out = dict(r)
    out["request_id"] = str(out["request_id"])
    out["batch_id"] = str(out["batch_id"]) if out["batch_id"] else None
    out["payload"] = orjson.loads(out["payload"])
    out["result"] = orjson.loads(out["result"]) if out["result"] is not None else None
    out["checker_roles"] = list(out["checker_roles"])
    return out


_COLUMNS = ("request_id, command_type, target, province_code, year, amount, batch_id, maker, "
            "maker_role, checker_roles, payload::text AS payload, state, requested_at, "
            "expires_at, decided_at, checker, checker_role, reason_code, note, "
            "result::text AS result")


# -- the kernel a service uses -----------------------------------------------------------------

# carries out an approved command in the grant's transaction: loads the target, decides, saves;
# answers what the command would have answered (JSON). A DomainError rolls the grant back.
Executor = Callable[[UnitOfWork, ApprovalRequested, Actor], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Carried:
    """One request carried out by a `BatchExecutor`: its answer and the events it recorded
    (their causation is the request)."""

    answer: dict[str, Any]
    events: list[Event]


class Undecided(Exception):
    """Raised by a `BatchExecutor` that cannot decide its requests in memory (a command
    refused after it recorded): the grants of its chunk are then made one savepoint each."""


# carries out many granted requests in the grant's transaction, set-based: loads their targets
# at once, decides each request in order in memory (a request refused by its command records
# nothing), and answers per request `Carried` or the DomainError that refused it, with the
# aggregates to save (the kernel saves them in one statement, after the grants)
BatchExecutor = Callable[[UnitOfWork, list[ApprovalRequested], Actor],
                         Awaitable[tuple[list["Carried | DomainError"], list[Aggregate]]]]


@dataclass(frozen=True)
class Asking:
    """A command a maker asks for (`FourEyes.submit_many`)."""

    command_type: str
    target: str
    payload: dict[str, Any]
    province_code: str | None
    year: int
    amount: int | None = None


@dataclass(frozen=True)
class Pending:
    """What a command answers when it became a request instead of being carried out (202)."""

    request_id: uuid.UUID
    command_type: str
    target: str
    expires_at: datetime
    checker_roles: list[str]

    def out(self) -> dict[str, Any]:
        return {"state": PENDING, "request_id": str(self.request_id),
                "command_type": self.command_type, "target": self.target,
                "expires_at": self.expires_at.isoformat(), "checker_roles": self.checker_roles}


class FourEyes:
    """The four-eyes flow of one service. `book` holds its programme rules per year and
    `section(rules)` their `FourEyesRules`; `executors` carry out each command type."""

    def __init__(self, book: "RuleBook[Any]", section: Callable[[Any], FourEyesRules],
                 executors: dict[str, Executor], *,
                 carry_out_many: BatchExecutor | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.book, self.section, self.executors, self.clock = book, section, executors, clock
        self.carry_out_many = carry_out_many

    async def rules(self, conn: asyncpg.Connection | asyncpg.Pool, year: int) -> FourEyesRules:
        return self.section((await self.book.in_force(conn, year)).rules)

    # making

    async def submit(self, uow: UnitOfWork, maker: Actor, *, command_type: str, target: str,
                     payload: dict[str, Any], province_code: str | None, year: int,
                     amount: int | None = None, batch_id: uuid.UUID | None = None
                     ) -> Pending | None:
        """In the maker's command transaction: record a pending request when the year's rules
        want four eyes for this command and amount (returns it), else None (the caller carries
        the command out at once). Raises ForbiddenError when the maker's role may not ask for
        it, or a provincial officer asks outside its province."""
        [made] = await self.submit_many(uow, maker, [Asking(
            command_type=command_type, target=target, payload=payload,
            province_code=province_code, year=year, amount=amount)], batch_id=batch_id)
        if isinstance(made, DomainError):
            raise made
        return made

    async def submit_many(self, uow: UnitOfWork, maker: Actor, asks: Sequence["Asking"], *,
                          batch_id: uuid.UUID | None = None
                          ) -> list[Pending | DomainError | None]:
        """`submit` for many commands in the maker's transaction, in a constant number of
        statements: per ask its pending request, None (no four eyes: the caller carries it out
        at once) or the ForbiddenError that refuses it (nothing recorded for it)."""
        for ask in asks:
            if ask.command_type not in self.executors:
                raise ValueError(f"no executor for {ask.command_type}")
        years: dict[int, FourEyesRules] = {}  # a call's asks span a year or two
        out: list[Pending | DomainError | None] = []
        made: list[ApprovalRequest] = []
        now = datetime.min.replace(tzinfo=UTC)
        for ask in asks:
            # each request at an instant of its own, in the order asked (listings sort by it)
            now = max(self.clock(), now + timedelta(microseconds=1))
            if ask.year not in years:
                years[ask.year] = await self.rules(uow.conn, ask.year)
            rules = years[ask.year]
            rule = rules.rule(ask.command_type, ask.amount)
            if rule is None:
                out.append(None)
                continue
            try:
                agg = ApprovalRequest.make(
                    request_id=uuid.uuid4(), command_type=ask.command_type, target=ask.target,
                    payload=ask.payload, province_code=ask.province_code, year=ask.year,
                    amount=ask.amount, batch_id=batch_id, maker=maker, rule=rule,
                    rules=rules, now=now)
            except DomainError as exc:
                out.append(exc)
                continue
            made.append(agg)
            req = agg.request
            out.append(Pending(req.request_id, req.command_type, req.target, req.expires_at,
                               req.checker_roles))
        await _save_many(uow, made)
        return out

    # deciding

    async def grant(self, ctx: "ServiceContext", request_id: uuid.UUID, checker: Actor
                    ) -> dict[str, Any]:
        """Grant and carry out, once, in one transaction. Raises NotFoundError, ForbiddenError
        (self-check, role, province), NotPendingError (decided, expired: the expiry is then
        recorded), or what the executor raises (nothing is written then)."""
        answer = await ctx.command(lambda uow: self._grant_in(uow, request_id, checker),
                                   checker)
        if answer.get("expired"):
            raise _expired()
        return answer

    async def _grant_in(self, uow: UnitOfWork, request_id: uuid.UUID, checker: Actor
                        ) -> dict[str, Any]:
        """The grant of one request in the caller's transaction: `{"expired": True}` when it
        was past due (the expiry is recorded instead), else the answer."""
        agg = await self._load(uow, request_id)
        agg.ensure_may_check(checker)
        now = self.clock()
        if agg.is_past_due(now):
            agg.expire(now)
            await _save(uow, agg)
            return {"expired": True}
        agg.grant(checker, now)
        # what the grant writes (its events, the command's) is caused by the request: an
        # inspector follows causation_id from a GroupFunded back to who asked for it
        uow.causation_id = agg.requested_event_id
        await _save(uow, agg)  # the grant first: the command's events follow it
        req = agg.request
        executor = self.executors.get(req.command_type)
        if executor is None:
            raise ConflictError(f"this service no longer carries out {req.command_type}",
                                field="request_id")
        result = await executor(uow, req, checker)
        agg.carried_out(result)
        await _save(uow, agg)
        return {"request_id": str(request_id), "state": GRANTED,
                "command_type": req.command_type, "target": req.target, "result": result}

    async def reject(self, ctx: "ServiceContext", request_id: uuid.UUID, checker: Actor,
                     reason_code: str, note: str | None = None) -> dict[str, Any]:
        """Raises NotFoundError, ForbiddenError, NotPendingError, RuleViolationError (a reason
        code the year's rules do not list)."""

        async def decide(uow: UnitOfWork) -> dict[str, Any]:
            agg = await self._load(uow, request_id)
            agg.ensure_may_check(checker)
            codes = (await self.rules(uow.conn, agg.request.year)).reason_codes
            if reason_code not in codes:
                raise RuleViolationError(f"unknown reason code; one of: {', '.join(codes)}",
                                         field="reason_code")
            agg.ensure_pending()
            agg.reject(checker, reason_code, note, self.clock())
            await _save(uow, agg)
            return {"request_id": str(request_id), "state": REJECTED,
                    "reason_code": reason_code}

        return await ctx.command(decide, checker)

    async def grant_many(self, ctx: "ServiceContext", request_ids: Sequence[uuid.UUID],
                         checker: Actor, *, per_transaction: int = GRANTS_PER_TRANSACTION
                         ) -> list[dict[str, Any]]:
        """Each request granted as `grant` does, in order, per item its result or its error
        (never an exception hiding the other items). Up to `per_transaction` grants share one
        transaction, each in a savepoint of its own: a grant refused (by the checks or by its
        command) rolls back alone and the others of the transaction carry on; one commit per
        chunk instead of one per grant (a year's fundings and LPJ acceptances are ~22,000
        grants). A chunk that meets a concurrent writer is decided again, whole. A service
        with a `carry_out_many` grants each chunk set-based (`_grant_set`): the same checks and
        answers, in a constant number of statements."""
        ids = list(dict.fromkeys(request_ids))
        results: list[dict[str, Any]] = []
        grant = self._grant_set if self.carry_out_many else self._grant_chunk
        for start in range(0, len(ids), per_transaction):
            chunk = ids[start:start + per_transaction]
            results.extend(await ctx.command(
                lambda uow, chunk=chunk: grant(uow, chunk, checker), checker))
        return results

    async def _grant_set(self, uow: UnitOfWork, chunk: Sequence[uuid.UUID], checker: Actor
                         ) -> list[dict[str, Any]]:
        """A chunk's grants decided in memory and written in a few statements: the requests
        locked and read at once, each checked as `_grant_in` checks it (an expiry is recorded
        instead), the commands carried out by `carry_out_many`, then the grants, the commands'
        events and the carried-out records appended in that order, each event caused by its
        request. A request refused (by the checks or by its command) writes nothing."""
        assert self.carry_out_many is not None
        streams = [stream_id(r) for r in chunk]
        aggs = await uow.load_many(ApprovalRequest, streams)
        now = self.clock()
        out: dict[uuid.UUID, dict[str, Any]] = {}
        expired: list[ApprovalRequest] = []
        checked: list[tuple[uuid.UUID, ApprovalRequest]] = []
        for request_id, sid in zip(chunk, streams, strict=True):
            agg = aggs.get(sid)
            try:
                if agg is None:
                    raise NotFoundError("no such approval request", field="request_id")
                agg.ensure_may_check(checker)
                if agg.is_past_due(now):
                    expired.append(agg)
                    raise _expired()
                agg.ensure_pending()
            except DomainError as exc:
                out[request_id] = _refused(request_id, exc)
                continue
            checked.append((request_id, agg))
        try:
            outcomes, targets = await self.carry_out_many(
                uow, [agg.request for _, agg in checked], checker) if checked else ([], [])
        except Undecided:
            log.info("a chunk of %d grants is granted one savepoint each", len(chunk))
            return await self._grant_chunk(uow, chunk, checker)
        # the requests' own event ids: what the grants and the commands were caused by
        first = {agg.stream_id: agg.requested_event_id for _, agg in checked}
        cause_of: dict[int, uuid.UUID] = {}
        granted: list[tuple[ApprovalRequest, dict[str, Any]]] = []
        for (request_id, agg), outcome in zip(checked, outcomes, strict=True):
            if isinstance(outcome, DomainError):
                out[request_id] = _refused(request_id, outcome)
                continue
            agg.grant(checker, now)
            for event in (*agg.pending, *outcome.events):
                cause_of[id(event)] = first[agg.stream_id]
            granted.append((agg, outcome.answer))
            req = agg.request
            out[request_id] = {"request_id": str(request_id), "status": 200,
                               "state": GRANTED, "command_type": req.command_type,
                               "target": req.target, "result": outcome.answer}
        for agg in expired:
            agg.expire(now)

        def cause(event: Event) -> uuid.UUID | None:
            return cause_of.get(id(event), uow.causation_id)

        await _save_many(uow, [*expired, *(agg for agg, _ in granted)], cause)
        await uow.save_many(targets, cause=cause)
        for agg, answer in granted:
            agg.carried_out(answer)
            cause_of[id(agg.pending[-1])] = first[agg.stream_id]
        await _save_many(uow, [agg for agg, _ in granted], cause)
        return [out[request_id] for request_id in chunk]

    async def _grant_chunk(self, uow: UnitOfWork, chunk: Sequence[uuid.UUID], checker: Actor
                           ) -> list[dict[str, Any]]:
        out = []
        for request_id in chunk:
            saved, causation = len(uow.saved), uow.causation_id
            try:
                async with uow.conn.transaction():  # a savepoint
                    answer = await self._grant_in(uow, request_id, checker)
            except DomainError as exc:
                del uow.saved[saved:]  # rolled back with the savepoint
                out.append(_refused(request_id, exc))
                continue
            finally:
                uow.causation_id = causation
            if answer.get("expired"):  # the expiry recorded, the grant refused
                out.append(_refused(request_id, _expired()))
            else:
                out.append({"request_id": str(request_id), "status": 200, **answer})
        return out

    async def _load(self, uow: UnitOfWork, request_id: uuid.UUID) -> ApprovalRequest:
        agg = await uow.load(ApprovalRequest, stream_id(request_id))
        if agg is None:
            raise NotFoundError("no such approval request", field="request_id")
        return agg

    # expiring

    async def expire_due(self, pool: asyncpg.Pool, store: Any, *, now: datetime | None = None,
                         limit: int = 500) -> int:
        """Record ApprovalExpired (actor "system") for pending requests past their expiry,
        oldest first, each in its own short transaction. Returns how many expired."""
        now = now or self.clock()
        due = await pool.fetch("SELECT request_id FROM approval_requests WHERE state = "
                               "'pending' AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
                               now, limit)
        expired = 0
        for row in due:

            async def decide(uow: UnitOfWork, request_id: uuid.UUID = row["request_id"]) -> bool:
                agg = await self._load(uow, request_id)
                if not agg.is_past_due(now):  # decided meanwhile
                    return False
                agg.expire(now)
                await _save(uow, agg)
                return True

            expired += await run_command(pool, store, decide, actor=SYSTEM_ACTOR)
        return expired

    def sweeper(self, interval_s: float = 300.0):
        """A `ServiceSpec.background` job: `expire_due` now and every `interval_s`."""

        async def approvals_sweeper(ctx: "ServiceContext", stop: asyncio.Event) -> None:
            while not stop.is_set():
                try:
                    count = await self.expire_due(ctx.pool, ctx.store)
                    if count:
                        log.info("%d approval requests expired", count)
                except Exception as exc:  # noqa: BLE001 - the next run tries again
                    log.warning("expiring approval requests failed, will try again: %r", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)

        return approvals_sweeper

    # reading

    async def get(self, pool: asyncpg.Pool, request_id: uuid.UUID, reader: Actor
                  ) -> dict[str, Any]:
        row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM approval_requests "
                                  "WHERE request_id = $1", request_id)
        if row is None or (reader.role is Role.PROVINCE
                           and row["province_code"] != reader.province_code):
            raise NotFoundError("no such approval request", field="request_id")
        return _row(row)

    async def listing(self, pool: asyncpg.Pool, reader: Actor, *, state: str | None,
                      province: str | None, command_type: str | None, batch_id: uuid.UUID | None,
                      checkable: bool, limit: int, offset: int) -> tuple[list[dict], int]:
        """Requests by state, province, command type and batch, oldest first; a provincial
        officer sees its own province only; `checkable`: only those the reader may decide."""
        if reader.role is Role.PROVINCE:
            if province is not None and province != reader.province_code:
                raise ForbiddenError(f"a provincial officer of {reader.province_code} cannot "
                                     f"list province {province}", field="province")
            province = reader.province_code
        where, args = [], []
        for column, value in (("state", state), ("province_code", province),
                              ("command_type", command_type), ("batch_id", batch_id)):
            if value is not None:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        if checkable:
            args += [reader.role.value, pseudonym_of(reader)]
            where.append(f"${len(args) - 1} = ANY(checker_roles) AND maker <> ${len(args)}")
            if reader.role is Role.PROVINCE:
                where.append("province_code IS NOT NULL")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        total = await pool.fetchval(f"SELECT count(*) FROM approval_requests {clause}", *args)
        args += [limit, offset]
        rows = await pool.fetch(
            f"SELECT {_COLUMNS} FROM approval_requests {clause} "
            f"ORDER BY requested_at, request_id LIMIT ${len(args) - 1} OFFSET ${len(args)}",
            *args)
        return [_row(r) for r in rows], total

    def router(self, *, tags: list[str] | None = None) -> "APIRouter":
        return approvals_router(self, tags=tags)


# -- HTTP --------------------------------------------------------------------------------------

def approvals_router(four_eyes: FourEyes, *, tags: list[str] | None = None) -> "APIRouter":
    """`GET /approvals`, `GET /approvals/{id}`, `POST /approvals/{id}/grant`,
    `POST /approvals/{id}/reject`, `POST /approvals/grant` (many): ministry admins and
    provincial officers (their own province)."""
    from fastapi import APIRouter, Depends, Query

    from shared.auth import require
    from shared.inputs import Text
    from shared.paging import PageQuery
    from shared.service import ServiceContext, context

    router = APIRouter(tags=tags or ["approvals"])
    Ctx = Annotated[ServiceContext, Depends(context)]
    Decider = Annotated[Actor, Depends(require(*DECIDING_ROLES))]

    class Reject(BaseModel):
        model_config = ConfigDict(extra="forbid")
        reason_code: Code = Field(description="one of the year's rules' reason_codes")
        note: Text(MAX_NOTE, multiline=True) | None = Field(  # type: ignore[valid-type]
            None, description="why, for the maker (no personal data)")

    class GrantMany(BaseModel):
        model_config = ConfigDict(extra="forbid")
        request_ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_BULK)

    class RequestOut(BaseModel):
        request_id: str
        command_type: str
        target: str
        province_code: str | None
        year: int
        amount: int | None
        batch_id: str | None
        maker: str = Field(description="the maker's pseudonym")
        maker_role: str
        checker_roles: list[str]
        payload: dict[str, Any]
        state: str
        requested_at: datetime
        expires_at: datetime
        decided_at: datetime | None
        checker: str | None
        checker_role: str | None
        reason_code: str | None
        note: str | None
        result: dict[str, Any] | None

    class RequestPage(BaseModel):
        items: list[RequestOut]
        total: int
        limit: int
        offset: int

    class Decision(BaseModel):
        model_config = ConfigDict(extra="allow")
        request_id: str
        state: str

    class GrantResults(BaseModel):
        results: list[dict[str, Any]]
        granted: int

    @router.get("/approvals", response_model=RequestPage)
    async def list_approvals(
            ctx: Ctx, actor: Decider, page: PageQuery,
            state: Annotated[str, Query(pattern=f"^({'|'.join(STATES)}|any)$", description=(
                "pending (default), granted, rejected, expired, or any"))] = PENDING,
            province: Annotated[str | None, Query(pattern=r"^\d{2}$")] = None,
            command_type: Annotated[str | None, Query(pattern=CODE_PATTERN)] = None,
            batch_id: uuid.UUID | None = None,
            checkable: Annotated[bool, Query(description=(
                "only the requests the caller may decide (its role checks them, it did not "
                "make them)"))] = False) -> dict[str, Any]:
        """Approval requests, oldest first (pending by default); a provincial officer's own
        province only."""
        items, total = await four_eyes.listing(
            ctx.pool, actor, state=None if state == "any" else state, province=province, command_type=command_type,
            batch_id=batch_id, checkable=checkable, limit=page.limit, offset=page.offset)
        return page.out(items, total)

    @router.get("/approvals/{request_id}", response_model=RequestOut)
    async def get_approval(request_id: uuid.UUID, ctx: Ctx, actor: Decider) -> dict[str, Any]:
        return await four_eyes.get(ctx.pool, request_id, actor)

    @router.post("/approvals/grant", response_model=GrantResults)
    async def grant_approvals(body: GrantMany, ctx: Ctx, actor: Decider) -> dict[str, Any]:
        """Grant many requests (a bulk funding's batch), each in its own transaction: per
        request its result or its error."""
        results = await four_eyes.grant_many(ctx, body.request_ids, actor)
        return {"results": results, "granted": sum(r["status"] == 200 for r in results)}

    @router.post("/approvals/{request_id}/grant", response_model=Decision)
    async def grant_approval(request_id: uuid.UUID, ctx: Ctx, actor: Decider) -> dict[str, Any]:
        """Grant the request and carry out its command, once (not the maker; a checking role;
        a provincial officer in the request's province)."""
        return await four_eyes.grant(ctx, request_id, actor)

    @router.post("/approvals/{request_id}/reject", response_model=Decision)
    async def reject_approval(request_id: uuid.UUID, body: Reject, ctx: Ctx,
                              actor: Decider) -> dict[str, Any]:
        """Reject the request with one of the year's reason codes; its command is never
        carried out."""
        return await four_eyes.reject(ctx, request_id, actor, body.reason_code, body.note)

    return router


__all__ = ["APPROVALS_SCHEMA", "APPROVAL_TABLES", "ApprovalRequest", "CommandRule",
           "FourEyes", "FourEyesRules", "Pending", "project"]
