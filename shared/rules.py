"""Programme rules per year, as data adopted by an event (issue 17, item 1).

Each service keeps the sections of the rules it enforces in its own database, so no service
reads another's. A year's rules are an event-sourced stream `rules-<year>` of internal
`ProgrammeRulesAdopted` events (version = stream version, the event records its actor), mirrored
in the `programme_rules` table (`RULES_SCHEMA`, a kernel migration step) that commands read.

The rules in force for a year are the latest version of the greatest year defined at or before
it: a year's rules stay in force until a later year's are adopted; a year before the first one
defined uses the earliest.

A `RuleBook[T]` (T: the service's pydantic model of one year's rules) answers `in_force` from a
per-process cache, so a command pays no statement for its rules. The cache is trusted only while
the process LISTENs on `RULES_CHANNEL` (`RuleBook.listen`, a service background job): every
adoption notifies at commit, and every instance drops its cache on the notification (and when
its listening connection is lost). Without a listener each call reads the table (one statement).

Shipped rules (`<dir>/<year>.toml`) are adopted as version 1 by actor "system" for the years that
have none, once (`seed_shipped`, also run on first use when the table is empty); a changed file
is not adopted again: the API (`PUT /rules/{year}`) adopts a new version.

Importing this module must not import shared.eventstore (which imports `RULES_SCHEMA` from
here): the event store and the service kernel are imported where they are used.
"""

import asyncio
import contextlib
import json
import logging
import tomllib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

import asyncpg
from pydantic import BaseModel, ValidationError

from shared.envelope import Event, register
from shared.errors import DomainError, NotFoundError, RuleViolationError

if TYPE_CHECKING:  # imported at run time where used: shared.eventstore imports this module
    from fastapi import APIRouter

    from shared.auth import Actor
    from shared.service import ServiceContext

log = logging.getLogger("tkm.rules")

RULES_SCHEMA = """
CREATE TABLE IF NOT EXISTS programme_rules (
    year integer NOT NULL,
    version integer NOT NULL,
    rules jsonb NOT NULL,
    adopted_at timestamptz NOT NULL,
    actor text NOT NULL,
    note text,
    PRIMARY KEY (year, version)
);
"""
RULES_CHANNEL = "tkm_rules"
SYSTEM_ACTOR = "system"
FIRST_YEAR, LAST_YEAR = 2000, 2100
MAX_NOTE = 500
_SEED_LOCK = "tkm-rules-seed"


@register
class ProgrammeRulesAdopted(Event):
    """Internal: the rules of a programme year as adopted (version = the stream's version)."""

    event_type = "rules.ProgrammeRulesAdopted"
    year: int
    version: int
    rules: dict[str, Any]
    note: str | None = None


def stream_id(year: int) -> str:
    return f"rules-{year}"


T = TypeVar("T", bound=BaseModel)


class InForce(NamedTuple, Generic[T]):
    """The rules that decide for a year: the model, the year they were adopted for, their
    version."""

    rules: T
    year_defined: int
    version: int


@dataclass(frozen=True)
class Adopted(Generic[T]):
    """One adopted version."""

    year: int
    version: int
    rules: T
    adopted_at: datetime
    actor: str
    note: str | None

    def out(self) -> dict[str, Any]:
        return {"year": self.year, "version": self.version, "adopted_at": self.adopted_at,
                "actor": self.actor, "note": self.note,
                "rules": self.rules.model_dump(mode="json")}


class NoRulesError(DomainError):
    """No year has rules (none shipped, none adopted)."""

    status = 503


def _path(loc: tuple[Any, ...]) -> str:
    out = "rules"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validation_error(exc: ValidationError) -> RuleViolationError:
    """A 422 naming the first field at fault (`rules.members.max_count`) and listing all."""
    errors = [{"field": _path(e["loc"]), "reason": e["msg"]} for e in exc.errors()]
    first = errors[0] if errors else {"field": "rules", "reason": "invalid rules"}
    return RuleViolationError(first["reason"], field=first["field"], errors=errors)


Db = asyncpg.Connection | asyncpg.Pool


class RuleBook(Generic[T]):
    """The rules of one service, per programme year. `model` validates one year's rules;
    `shipped` is the directory of `<year>.toml` files adopted when a year has none."""

    def __init__(self, service: str, model: type[T], shipped: Path | None = None):
        self.service, self.model, self.shipped = service, model, shipped
        self._latest: dict[int, Adopted[T]] | None = None  # the cache: latest version per year
        self._generation = 0  # bumped by every invalidation
        self.listening = False
        self.loads = 0  # reads of the table (tests, metrics)

    # -- reading ---------------------------------------------------------------------------

    def invalidate(self, *_: Any) -> None:
        self._generation += 1
        self._latest = None

    async def _load(self, db: Db) -> dict[int, Adopted[T]]:
        if self._latest is not None:
            return self._latest
        generation = self._generation
        rows = await db.fetch(
            "SELECT DISTINCT ON (year) year, version, rules::text AS rules, adopted_at, actor, "
            "note FROM programme_rules ORDER BY year, version DESC")
        self.loads += 1
        if not rows and self.shipped is not None and _shipped_files(self.shipped):
            await self.seed(db)
            generation = self._generation
            rows = await db.fetch(
                "SELECT DISTINCT ON (year) year, version, rules::text AS rules, adopted_at, "
                "actor, note FROM programme_rules ORDER BY year, version DESC")
        latest = {r["year"]: self._adopted(r) for r in rows}
        # trusted for later calls only while notifications reach us, and only when no
        # adoption was announced while we read
        if self.listening and generation == self._generation:
            self._latest = latest
        return latest

    def _adopted(self, row: asyncpg.Record) -> Adopted[T]:
        return Adopted(row["year"], row["version"], self.model.model_validate(
            json.loads(row["rules"])), row["adopted_at"], row["actor"], row["note"])

    async def in_force(self, db: Db, year: int) -> InForce[T]:
        """The rules deciding for `year`. Raises NoRulesError when no year has rules. `db`: the
        pool, or a connection outside a transaction or in a READ COMMITTED one (a REPEATABLE
        READ snapshot older than a notification received could cache the previous version)."""
        entry = self._pick(await self._load(db), year)
        return InForce(entry.rules, entry.year, entry.version)

    async def resolver(self, db: Db) -> Callable[[int], InForce[T]]:
        """A plain function giving the rules in force for any year, as `in_force` would at
        this moment (one read at most): for code that decides many years at once or cannot
        await (a file parsed in a worker thread)."""
        latest = await self._load(db)

        def in_force(year: int) -> InForce[T]:
            entry = self._pick(latest, year)
            return InForce(entry.rules, entry.year, entry.version)

        return in_force

    async def entry_in_force(self, db: Db, year: int) -> Adopted[T]:
        """As `in_force`, with when, by whom and why they were adopted."""
        return self._pick(await self._load(db), year)

    @staticmethod
    def _pick(latest: dict[int, Adopted[T]], year: int) -> Adopted[T]:
        if not latest:
            raise NoRulesError("no programme rules are adopted yet (PUT /rules/{year})",
                               field="year")
        defined = [y for y in latest if y <= year]
        return latest[max(defined) if defined else min(latest)]

    async def years(self, db: Db) -> list[dict[str, Any]]:
        """Every year with rules: its latest version, when and by whom."""
        latest = await self._load(db)
        return [{"year": e.year, "version": e.version, "adopted_at": e.adopted_at,
                 "actor": e.actor, "note": e.note} for _, e in sorted(latest.items())]

    async def versions(self, db: Db, year: int) -> list[Adopted[T]]:
        """Every version adopted for `year` exactly, oldest first (empty: none)."""
        rows = await db.fetch(
            "SELECT year, version, rules::text AS rules, adopted_at, actor, note "
            "FROM programme_rules WHERE year = $1 ORDER BY version", year)
        return [self._adopted(r) for r in rows]

    # -- adopting ---------------------------------------------------------------------------

    def validate(self, rules: Any) -> T:
        """`rules` (JSON-like) as the service's model, strictly: "20000000" or 2e7 for a whole
        number is refused, as everywhere else people send numbers. Raises RuleViolationError
        (422) naming the field."""
        if not isinstance(rules, dict):
            raise RuleViolationError("rules must be an object", field="rules")
        try:
            return self.model.model_validate_json(json.dumps(rules), strict=True)
        except (ValidationError, ValueError) as exc:
            if isinstance(exc, ValidationError):
                raise validation_error(exc) from None
            raise RuleViolationError(f"rules are not JSON: {exc}", field="rules") from None

    async def adopt(self, ctx: "ServiceContext", actor: "Actor", year: int, rules: Any,
                    note: str | None = None) -> Adopted[T]:
        """Adopt `rules` for `year` as its next version (one transaction: the event, the table
        row, the notification). Raises RuleViolationError (422) for invalid rules or year;
        nothing is written then."""
        _check_year(year)
        model = self.validate(rules)
        note = _clean_note(note)

        async def decide(uow: Any) -> Adopted[T]:
            return await self._append(uow.conn, uow.store, year, model, note, uow.actor,
                                      uow.correlation_id)

        adopted = await ctx.command(decide, actor)
        self.invalidate()
        return adopted

    async def _append(self, conn: asyncpg.Connection, store: Any, year: int, model: T,
                      note: str | None, actor: str, correlation_id: uuid.UUID) -> Adopted[T]:
        """In the caller's transaction. Raises ConcurrencyError when another adoption of the
        year took the version (the command is then run again)."""
        last = await conn.fetchval(
            "SELECT coalesce(max(version), 0) FROM programme_rules WHERE year = $1", year)
        rules = model.model_dump(mode="json")
        event = ProgrammeRulesAdopted(year=year, version=last + 1, rules=rules, note=note)
        [envelope] = await store.append(conn, stream_id(year), last, [event], actor=actor,
                                        correlation_id=correlation_id)
        await conn.execute(
            "INSERT INTO programme_rules (year, version, rules, adopted_at, actor, note) "
            "VALUES ($1, $2, $3::jsonb, $4, $5, $6)", year, last + 1,
            json.dumps(rules), envelope.occurred_at, actor, note)
        # delivered at commit, to every instance's listener (and to nobody on a rollback)
        await conn.execute("SELECT pg_notify($1, $2)", RULES_CHANNEL, str(year))
        return Adopted(year, last + 1, model, envelope.occurred_at, actor, note)

    async def seed(self, db: Db) -> list[int]:
        """Adopt the shipped rules of every year that has none (version 1, actor "system"),
        in one transaction under an advisory lock, so instances starting together adopt them
        once. Returns the years adopted now. Raises ValueError for an invalid shipped file."""
        if self.shipped is None:
            return []
        files = _shipped_files(self.shipped)
        models = {year: self._from_file(path) for year, path in files.items()}
        if isinstance(db, asyncpg.Pool):
            async with db.acquire() as conn:
                return await self._seed(conn, models)
        return await self._seed(db, models)

    async def _seed(self, conn: asyncpg.Connection, models: dict[int, T]) -> list[int]:
        from shared.eventstore import EventStore

        async with conn.transaction():  # a savepoint inside a caller's transaction
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _SEED_LOCK)
            have = {r["year"] for r in await conn.fetch(
                "SELECT DISTINCT year FROM programme_rules")}
            store, correlation_id = EventStore(self.service), uuid.uuid4()
            adopted = []
            for year, model in sorted(models.items()):
                if year not in have:
                    await self._append(conn, store, year, model, "shipped rules",
                                       SYSTEM_ACTOR, correlation_id)
                    adopted.append(year)
        if adopted:
            log.info("%s: shipped programme rules adopted for %s", self.service, adopted)
        self.invalidate()
        return adopted

    def _from_file(self, path: Path) -> T:
        with path.open("rb") as f:
            data = tomllib.load(f)
        try:
            return self.model.model_validate(data)
        except ValidationError as exc:
            raise ValueError(f"{path.name}: {validation_error(exc).reason} "
                             f"({validation_error(exc).field})") from exc

    # -- staying current across instances -----------------------------------------------

    async def listen(self, dsn: str, stop: asyncio.Event, *, retry_s: float = 1.0) -> None:
        """Keep this process's cache current until `stop` is set: LISTEN on `RULES_CHANNEL`
        over a connection of its own; while it is down, nothing is cached."""
        while not stop.is_set():
            conn = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(dsn, timeout=10)
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(RULES_CHANNEL, self.invalidate)
                self.invalidate()  # whatever was adopted before we listened is read afresh
                self.listening = True
                waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                log.warning("%s: rules listener: %r; retrying", self.service, exc)
            finally:
                self.listening = False
                self.invalidate()
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close()
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), retry_s)

    def background(self) -> Callable[["ServiceContext", asyncio.Event], Any]:
        """A `ServiceSpec.background` job: adopt the shipped rules, then listen."""

        async def rules_job(ctx: "ServiceContext", stop: asyncio.Event) -> None:
            try:
                await self.seed(ctx.pool)
            except (OSError, asyncpg.PostgresError) as exc:  # first use seeds them anyway
                log.warning("%s: shipped rules not adopted at start: %r", self.service, exc)
            await self.listen(ctx.settings.database_url, stop)

        return rules_job

    # -- HTTP ---------------------------------------------------------------------------

    def router(self, *, tags: list[str] | None = None) -> "APIRouter":
        return rules_router(self, tags=tags)


def _check_year(year: int) -> None:
    if isinstance(year, bool) or not isinstance(year, int) or not FIRST_YEAR <= year <= LAST_YEAR:
        raise RuleViolationError(f"year must be {FIRST_YEAR} to {LAST_YEAR}", field="year")


def _clean_note(note: str | None) -> str | None:
    if note is None or not note.strip():
        return None
    note = " ".join(note.split())
    if len(note) > MAX_NOTE:
        raise RuleViolationError(f"note must be at most {MAX_NOTE} characters", field="note")
    return note


def _shipped_files(directory: Path) -> dict[int, Path]:
    out = {}
    for path in sorted(directory.glob("*.toml")):
        if path.stem.isdigit() and FIRST_YEAR <= int(path.stem) <= LAST_YEAR:
            out[int(path.stem)] = path
    return out


def rules_router(book: "RuleBook[Any]", *, tags: list[str] | None = None) -> "APIRouter":
    """`GET /rules`, `GET /rules/{year}`, `GET /rules/{year}/versions` (any role) and
    `PUT /rules/{year}` (ministry admin)."""
    from typing import Annotated

    from fastapi import APIRouter, Depends, Path as PathParam
    from pydantic import Field

    from shared.auth import ANY_ROLE, Actor, Role, require
    from shared.inputs import Text
    from shared.service import ServiceContext, context

    tags = tags or ["rules"]
    router = APIRouter(tags=tags)
    Ctx = Annotated[ServiceContext, Depends(context)]
    Reader = Annotated[Actor, Depends(require(*ANY_ROLE))]
    Admin = Annotated[Actor, Depends(require(Role.ADMIN))]
    YearP = Annotated[int, PathParam(ge=FIRST_YEAR, le=LAST_YEAR, examples=[2023])]
    model = book.model

    class AdoptRules(BaseModel):
        model_config = {"extra": "forbid"}
        rules: dict[str, Any] = Field(description=f"the whole rules of the year, as "
                                                  f"{model.__name__}")
        note: Text(MAX_NOTE, multiline=True) | None = Field(
            None, description="why (the guideline, the decree)")

    class RulesEntry(BaseModel):
        year: int
        version: int
        adopted_at: datetime
        actor: str = Field(description="role and pseudonym of who adopted them, or system")
        note: str | None = None

    class RulesYears(BaseModel):
        items: list[RulesEntry]
        total: int

    class RulesVersion(RulesEntry):
        rules: model  # type: ignore[valid-type]

    class RulesInForce(RulesVersion):
        year_defined: int = Field(description="the year these rules were adopted for")
        year: int = Field(description="the year asked for")

    class RulesVersions(BaseModel):
        items: list[RulesVersion]
        total: int

    @router.get("/rules", response_model=RulesYears)
    async def rule_years(ctx: Ctx, actor: Reader) -> dict[str, Any]:
        """Every programme year with rules of its own, and its latest version. A year without
        follows the greatest year before it that has rules."""
        items = await book.years(ctx.pool)
        return {"items": items, "total": len(items)}

    @router.get("/rules/{year}", response_model=RulesInForce)
    async def rules_of_year(year: YearP, ctx: Ctx, actor: Reader) -> dict[str, Any]:
        """The rules in force for `year`: the latest version of the greatest year at or before
        it that has rules (the earliest year's for a year before them all)."""
        entry = await book.entry_in_force(ctx.pool, year)
        return {**entry.out(), "year": year, "year_defined": entry.year}

    @router.get("/rules/{year}/versions", response_model=RulesVersions)
    async def rule_versions(year: YearP, ctx: Ctx, actor: Reader) -> dict[str, Any]:
        """Every version adopted for exactly `year`, oldest first."""
        items = [v.out() for v in await book.versions(ctx.pool, year)]
        if not items:
            raise NotFoundError(f"no rules were adopted for {year}", field="year")
        return {"items": items, "total": len(items)}

    @router.put("/rules/{year}", response_model=RulesVersion)
    async def adopt_rules(year: YearP, body: AdoptRules, ctx: Ctx,
                          actor: Admin) -> dict[str, Any]:
        """Adopt the rules of `year` (ministry admin): the whole set, validated; answers the new
        version. They apply to the commands decided from then on, for `year` and the years
        after it that have no rules of their own."""
        adopted = await book.adopt(ctx, actor, year, body.rules, body.note)
        return adopted.out()

    return router

