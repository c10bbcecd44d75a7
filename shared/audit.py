"""The audit trail an inspector can query (issue 18, item 2): who did what, when, to which
group, TKS or round, in every service, from the events it already stores.

- `GET /audit` (auditor, ministry admin; a provincial officer sees its own province only) lists
  the service's stored events and the pseudonym lookups below, oldest first, filtered by
  province, event type, actor (pseudonym or `role:pseudonym`), actor role, time range (UTC),
  stream (a stream id, or a group, TKS or round id) and correlation id; paged by
  `shared.paging`, or exported as CSV (`Accept: text/csv` or `?format=csv`).
  A row names no person: the actor is a pseudonym, and the summary shows only the fields a
  published contract carries (no personal data by contract) or, for an internal event, only its
  ids, codes, dates and counts (never a name, NIK, phone, birth date or free text).
- An event's province is the one its payload names (`province_code`, `domicile_province_code`,
  or the first two digits of a regency code), else the one of its stream (a `GroupApproved`
  belongs to the province its `GroupRegistered` named).
- `GET /audit/actors/{pseudonym}?reason=...` (ministry admin only) names the person behind a
  pseudonym: the token subject the service saw issue a command. Each lookup, found or not, is
  recorded first (who looked up whom, when, why, under which correlation id) and shows in
  `/audit` as `audit.PseudonymResolved`.
- The service learns a subject when the actor issues its first command in this process
  (`remember_actor`, called by `ServiceContext.command`): one INSERT ... ON CONFLICT DO NOTHING
  per actor and role per process.

The two tables are this module's own schema (`migrate`, component "audit" in
schema_migrations), applied at start-up after the kernel's.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

import shared.contracts  # noqa: F401 - every published type known, for `summary`
from shared.auth import Actor, Role, require
from shared.csv_export import write_rows
from shared.envelope import current_version, event_class
from shared.errors import ForbiddenError, NotFoundError, RuleViolationError
from shared.eventstore import apply_steps
from shared.inputs import clean_text
from shared.observability import correlation_id_var
from shared.paging import PageOut, PageParams, PageQuery

LOOKUP_TYPE = "audit.PseudonymResolved"
STREAM_KINDS = ("group", "tks", "round")  # a bare id names the stream `<kind>-<id>`
CSV_PAGE = 1000  # rows fetched at a time for a CSV export
PSEUDONYM = re.compile(r"^(?:[a-z_]+:)?([0-9a-f]{20})$")

SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS audit_actors (
    pseudonym text NOT NULL,
    role text NOT NULL,
    subject text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pseudonym, role)
);
CREATE TABLE IF NOT EXISTS audit_lookups (
    id bigserial PRIMARY KEY,
    looked_up_at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    pseudonym text NOT NULL,
    found boolean NOT NULL,
    reason text NOT NULL,
    correlation_id uuid NOT NULL
);
"""

# an event's province as the trail reads it (the index below is on this very expression)
def _province_of(payload: str) -> str:
    return (f"coalesce({payload}->>'province_code', {payload}->>'domicile_province_code', "
            f"left({payload}->>'regency_code', 2), left({payload}->>'domicile_regency_code', 2))")


# what an inspector's questions search by, measured on 100,000 events (tests/shared/integration/
# test_audit_scale.py, docs/audit.md): without them a province's question read every event
# twice. Built once at start-up (on a large existing store that start takes longer).
SCHEMA_2 = f"""
CREATE INDEX IF NOT EXISTS audit_events_province ON events (({_province_of('payload')}))
    WHERE {_province_of('payload')} IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_events_type_time ON events (event_type, occurred_at);
CREATE INDEX IF NOT EXISTS audit_events_correlation ON events (correlation_id);
"""
STEPS = [(1, "actors seen and pseudonym lookups", SCHEMA_1),
         (2, "indexes for the audit trail's questions", SCHEMA_2)]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the audit schema's steps not applied yet (after the kernel's: `schema_migrations`
    exists), under the migrations' advisory lock. Returns the names applied now."""
    return await apply_steps(conn, [("audit", v, name, sql) for v, name, sql in STEPS])


def _split_actor(actor_id: str) -> tuple[str | None, str]:
    role, sep, alias = actor_id.partition(":")
    return (role, alias) if sep else (None, actor_id)


async def remember_actor(pool: asyncpg.Pool, actor: Actor, seen: set[str]) -> None:
    """Record who stands behind the actor's pseudonym, once per actor per process (`seen` is
    the process's memory of it)."""
    if actor.id in seen:
        return
    _, alias = _split_actor(actor.id)
    await pool.execute("INSERT INTO audit_actors (pseudonym, role, subject) VALUES ($1, $2, $3) "
                       "ON CONFLICT DO NOTHING", alias, actor.role.value, actor.subject)
    seen.add(actor.id)


# ---- the rows -------------------------------------------------------------------------------

# what an internal event (no topic, no contract) may show: ids, codes, dates and counts
INTERNAL_SAFE = frozenset({
    "group_id", "tks_id", "round_id", "report_id", "vacancy_id", "applicant_id", "year",
    "stage", "period", "evidence_count", "held_on", "recorded_on", "changed_on", "briefed_on",
    "province_code", "regency_code", "policy_version",
    # four-eyes requests (shared.approvals): what was asked, by whom, who checked it and why not
    "request_id", "command_type", "target", "amount", "batch_id", "maker", "maker_role",
    "checker", "checker_role", "reason_code", "expires_at"})
# shown first, in this order; the other fields follow alphabetically
LEADING = ("pseudonym", "found", "amount", "tranche", "budget_year", "decision", "score",
           "reason_code", "reason", "from_stage", "to_stage", "stage", "member_count")
# a scalar string longer than this is not a code or an id: left out
MAX_VALUE = 64


def _published(event_type: str) -> bool:
    try:
        return event_class(event_type, current_version(event_type)).topic is not None
    except ValueError:  # a type this process does not know: shown as an internal one
        return False


def summary(event_type: str, payload: dict[str, Any]) -> str:
    """`key=value` pairs of the decision's fields that name no one (see the module doc)."""
    # a lookup's row is built by this module; a published contract carries no personal data
    everything = event_type == LOOKUP_TYPE or _published(event_type)
    keys = sorted((k for k in payload if everything or k in INTERNAL_SAFE),
                  key=lambda k: (LEADING.index(k) if k in LEADING else len(LEADING), k))
    parts = []
    for key in keys:
        value = payload[key]
        if isinstance(value, bool):
            parts.append(f"{key}={'true' if value else 'false'}")
        elif isinstance(value, int | float):
            parts.append(f"{key}={value}")
        elif isinstance(value, str) and (len(value) <= MAX_VALUE or event_type == LOOKUP_TYPE):
            parts.append(f"{key}={value}")
    return " ".join(parts)


class AuditRow(BaseModel):
    recorded_at: datetime
    service: str
    event_type: str
    stream_id: str
    stream_version: int | None
    event_id: uuid.UUID | None
    actor: str  # the pseudonym
    actor_role: str | None
    correlation_id: uuid.UUID
    province_code: str | None
    summary: str


CSV_COLUMNS = list(AuditRow.model_fields)


class ActorRole(BaseModel):
    role: str
    first_seen: datetime


class ResolvedActor(BaseModel):
    pseudonym: str
    subject: str
    roles: list[ActorRole]
    looked_up_at: datetime
    reason: str


# ---- the query ------------------------------------------------------------------------------

_TRAIL = f"""
SELECT e.global_position AS pos, 0 AS src, e.event_id, e.stream_version,
       e.occurred_at AS recorded_at, e.event_type, e.stream_id, e.actor, e.correlation_id,
       e.payload, {_province_of('e.payload')} AS own_province
FROM events e
UNION ALL
SELECT l.id, 1, NULL::uuid, NULL::int, l.looked_up_at, '{LOOKUP_TYPE}',
       'audit-actor-' || l.pseudonym, l.actor, l.correlation_id,
       jsonb_build_object('pseudonym', l.pseudonym, 'found', l.found, 'reason', l.reason),
       NULL::text
FROM audit_lookups l
"""


class AuditFilter(BaseModel):
    province: str | None = None
    types: list[str] = []
    actor: str | None = None
    actor_role: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    stream: str | None = None
    correlation_id: uuid.UUID | None = None

    def where(self, args: list[Any]) -> str:
        """The WHERE clause over `_TRAIL`'s rows (aliased u), its arguments appended."""

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        clauses = ["true"]
        if self.province:
            p = arg(self.province)
            # the event's own province, else its stream's (any event of the stream naming
            # one): the province's streams first (by the index), then their events
            # (found once, as an array: a semi-join's estimates made the planner probe the
            # province's index once per event)
            clauses.append(
                f"u.stream_id = ANY(ARRAY(SELECT DISTINCT s.stream_id FROM events s "
                f"WHERE {_province_of('s.payload')} = {p})) "
                f"AND coalesce(u.own_province, {p}) = {p}")
        if self.types:
            clauses.append(f"u.event_type = ANY({arg(self.types)}::text[])")
        if self.actor:
            role, alias = _split_actor(self.actor)
            clauses.append(f"u.actor = {arg(self.actor)}" if role
                           else f"split_part(u.actor, ':', 2) = {arg(alias)}")
        if self.actor_role:
            clauses.append(f"split_part(u.actor, ':', 1) = {arg(self.actor_role)}")
        if self.since:
            clauses.append(f"u.recorded_at >= {arg(self.since)}")
        if self.until:
            clauses.append(f"u.recorded_at < {arg(self.until)}")
        if self.stream:
            ids = [self.stream, *(f"{kind}-{self.stream}" for kind in STREAM_KINDS)]
            clauses.append(f"u.stream_id = ANY({arg(ids)}::text[])")
        if self.correlation_id:
            clauses.append(f"u.correlation_id = {arg(self.correlation_id)}")
        return " AND ".join(clauses)


def _page_sql(where: str, window: str) -> str:
    # the stream's province only for the rows of the page
    return f"""
SELECT t.*, coalesce(t.own_province, (
           SELECT {_province_of('s.payload')} FROM events s
           WHERE s.stream_id = t.stream_id AND {_province_of('s.payload')} IS NOT NULL
           ORDER BY s.stream_version LIMIT 1)) AS province_code
FROM (SELECT * FROM ({_TRAIL}) u WHERE {where}
      ORDER BY u.recorded_at, u.src, u.pos {window}) t
ORDER BY t.recorded_at, t.src, t.pos"""


async def query(conn: asyncpg.Connection, service: str, filters: AuditFilter,
                page: PageParams) -> dict[str, Any]:
    """One page of the trail and the number of rows matching."""
    args: list[Any] = []
    where = filters.where(args)
    total = await conn.fetchval(f"SELECT count(*) FROM ({_TRAIL}) u WHERE {where}", *args)
    rows = await conn.fetch(_page_sql(where, page.window(args)), *args) if total else []
    return page.out([_row(service, r) for r in rows], total)


def _row(service: str, r: asyncpg.Record) -> dict[str, Any]:
    role, alias = _split_actor(r["actor"])
    return {"recorded_at": r["recorded_at"], "service": service, "event_type": r["event_type"],
            "stream_id": r["stream_id"], "stream_version": r["stream_version"],
            "event_id": r["event_id"], "actor": alias, "actor_role": role,
            "correlation_id": r["correlation_id"], "province_code": r["province_code"],
            "summary": summary(r["event_type"], json.loads(r["payload"]))}


async def export_csv(pool: asyncpg.Pool, service: str, filters: AuditFilter,
                     page: PageParams | None) -> AsyncIterator[str]:
    """The header, then every matching row (or one page's), fetched CSV_PAGE rows at a time
    in one snapshot."""
    yield write_rows([CSV_COLUMNS])
    args: list[Any] = []
    where = filters.where(args)
    window = page.window(args) if page else ""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                        readonly=True):
        cursor = await conn.cursor(_page_sql(where, window), *args)
        while batch := await cursor.fetch(CSV_PAGE):
            yield write_rows([[_csv_cell(v) for v in _row(service, r).values()] for r in batch])


def _csv_cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return "" if value is None else value


# ---- the routes -----------------------------------------------------------------------------

Reader = Annotated[Actor, Depends(require(Role.AUDITOR, Role.ADMIN, Role.PROVINCE))]
Admin = Annotated[Actor, Depends(require(Role.ADMIN))]


def _utc(value: datetime | None, name: str) -> datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise RuleViolationError("must carry a time zone (UTC), e.g. 2026-03-01T00:00:00Z",
                                 field=name)
    return value


async def _context(request: Request) -> Any:
    """The service's context (pool, name): shared.service.context, imported here because the
    service module mounts this one."""
    from shared.service import context

    return await context(request)


Ctx = Annotated[Any, Depends(_context)]


def build_router() -> APIRouter:
    """The kernel's audit routes, mounted by shared.service.create_app in every service."""
    router = APIRouter(tags=["audit"])

    @router.get("/audit", response_model=PageOut[AuditRow],
                responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                                 "description": "the trail's rows (JSON page or CSV export)"}})
    async def audit_trail(
            request: Request, ctx: Ctx, actor: Reader, page: PageQuery,
            province: Annotated[str | None, Query(
                pattern=r"^\d{2}$", description="two-digit province code")] = None,
            type: Annotated[list[str] | None, Query(
                max_length=50, description="event type(s), e.g. GroupFunded")] = None,
            actor_id: Annotated[str | None, Query(
                alias="actor", max_length=80, pattern=r"^(?:[a-z_]+:)?[0-9a-f]{1,40}$",
                description="pseudonym, or role:pseudonym as events record it")] = None,
            actor_role: Annotated[Role | None, Query(description="the actor's role")] = None,
            since: Annotated[datetime | None, Query(
                alias="from", description="from this instant on (UTC, inclusive)")] = None,
            until: Annotated[datetime | None, Query(
                alias="to", description="before this instant (UTC, exclusive)")] = None,
            stream: Annotated[str | None, Query(
                max_length=200, description="a stream id, or a group, TKS or round id")] = None,
            correlation_id: Annotated[uuid.UUID | None, Query()] = None,
            format: Annotated[Literal["json", "csv"] | None, Query(
                description="csv: the same as Accept: text/csv")] = None,
    ) -> Any:
        """Who did what, when, to which group, TKS or round, and under which correlation id.
        CSV exports every matching row unless `limit` or `offset` is given."""
        if actor.role is Role.PROVINCE:
            if province is not None and province != actor.province_code:
                raise ForbiddenError(f"a provincial officer of {actor.province_code} cannot "
                                     f"read province {province}", field="province")
            province = actor.province_code
        if any(len(t) > 100 for t in type or ()):
            raise RuleViolationError("an event type is at most 100 characters", field="type")
        filters = AuditFilter(province=province, types=type or [], actor=actor_id,
                              actor_role=actor_role.value if actor_role else None,
                              since=_utc(since, "from"), until=_utc(until, "to"), stream=stream,
                              correlation_id=correlation_id)
        if since and until and until <= since:
            raise RuleViolationError("`to` must be after `from`", field="to")
        wants_csv = format == "csv" or (format is None and "text/csv" in request.headers.get(
            "accept", ""))
        if wants_csv:
            paged = "limit" in request.query_params or "offset" in request.query_params
            return StreamingResponse(
                export_csv(ctx.pool, ctx.spec.name, filters, page if paged else None),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="audit-{ctx.spec.name}'
                                                '.csv"'})
        async with ctx.pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                                readonly=True):
            return await query(conn, ctx.spec.name, filters, page)

    @router.get("/audit/actors/{pseudonym}", response_model=ResolvedActor)
    async def resolve_actor(
            ctx: Ctx, actor: Admin,
            pseudonym: Annotated[str, Path(max_length=80, description="pseudonym or "
                                                                      "role:pseudonym")],
            reason: Annotated[str, Query(min_length=1, max_length=300, description=(
                "why: a case or letter reference (recorded and shown in /audit); name no "
                "one here"))],
    ) -> Response | ResolvedActor:
        """The person behind a pseudonym (the token subject), for a ministry admin only; every
        lookup is recorded first and is itself listed by `/audit`; 404 when no actor with this
        pseudonym issued a command here (the lookup is recorded all the same)."""
        match = PSEUDONYM.match(pseudonym)
        if match is None:
            raise RuleViolationError("not a pseudonym: 20 hexadecimal characters, optionally "
                                     "after `role:`", field="pseudonym")
        try:
            why = clean_text(reason, max_length=300)
        except ValueError as exc:
            raise RuleViolationError(str(exc), field="reason") from exc
        if len(why) < 5:
            raise RuleViolationError("give the reason for the lookup (a case or letter "
                                     "reference), at least 5 characters", field="reason")
        alias = match.group(1)
        correlation = correlation_id_var.get()
        async with ctx.pool.acquire() as conn, conn.transaction():
            roles = await conn.fetch("SELECT role, subject, first_seen FROM audit_actors "
                                     "WHERE pseudonym = $1 ORDER BY first_seen, role", alias)
            looked_up_at = await conn.fetchval(
                "INSERT INTO audit_lookups (actor, pseudonym, found, reason, correlation_id) "
                "VALUES ($1, $2, $3, $4, $5) RETURNING looked_up_at", actor.id, alias,
                bool(roles), why, uuid.UUID(correlation) if correlation else uuid.uuid4())
        if not roles:
            raise NotFoundError(f"no actor {alias} issued a command in this service "
                                "(the lookup is recorded)", field="pseudonym")
        return ResolvedActor(pseudonym=alias, subject=roles[0]["subject"],
                             roles=[ActorRole(role=r["role"], first_seen=r["first_seen"])
                                    for r in roles], looked_up_at=looked_up_at, reason=why)

    return router
