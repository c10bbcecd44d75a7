"""Safe retries of every state-changing request: the `Idempotency-Key` header.

A POST, PUT, PATCH or DELETE that carries `Idempotency-Key` (1-255 visible ASCII characters)
from an authenticated caller is claimed under (caller's actor id, method and path, key) before
it runs. Guarantees:
- The first answer below 500 (status, headers, body) is stored under the claim; a retry with the
  same key and the same request (query and body) gets that answer again, with
  `Idempotent-Replayed: true`, and runs nothing.
- The same key with a different request is refused (422); a retry while the first is still
  running is refused (409, `Retry-After`).
- Every command transaction a claimed request commits (`ServiceContext.command`) also writes an
  `idempotency_effects` row in that transaction, so "the command committed" is known even when
  the process dies before storing its answer. An answer of 500 or more with no committed
  transaction releases the claim (a retry runs afresh); with one, the claim is kept and a retry
  is refused (409: carried out, answer lost) rather than run twice.
- A claim whose process died is taken over by a retry once its lease (`idempotency_lease_s`)
  has passed, unless it committed something (then 409 as above).
Requests without the header, or whose bearer token does not verify (the endpoint answers
401 anyway), pass through untouched. `prune_keys` (a background job of every service) deletes
keys and their effects after `idempotency_retention_hours`: a retry later than that runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI

from shared.auth import decode_token
from shared.errors import ConflictError, UnauthorizedError
from shared.shedding import transaction_only

log = logging.getLogger("tkm.idempotency")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# headers of the first answer not replayed: recomputed, or belonging to the first request
_NOT_REPLAYED = frozenset({b"content-length", b"date", b"server", b"x-correlation-id"})

SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    actor text NOT NULL,
    route text NOT NULL,
    key text NOT NULL,
    request_hash text NOT NULL,
    owner uuid NOT NULL,
    lease_until timestamptz NOT NULL,
    state text NOT NULL DEFAULT 'in_progress',
    status integer,
    headers jsonb,
    body bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, route, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at);
CREATE TABLE IF NOT EXISTS idempotency_effects (
    owner uuid NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idempotency_effects_owner ON idempotency_effects (owner);
"""
# a claim whose command committed is never taken over, however late its answer (`recording`)
SCHEMA_2 = """
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS committed boolean NOT NULL DEFAULT false;
"""



def marking_claim(actor: str, route: str, key: str, owner: str, guard: str = "") -> str:
    """CTEs `k` and `ef` marking the claim of the given parameters committed and recording the
    effect (`ef` empty: a retry took the claim over). `guard`: a condition the marking also
    needs. One text for the command's own statement (`EventStore.append_many`) and for
    `recording` when the command appended nothing."""
    return (f"k AS (UPDATE idempotency_keys SET committed = true WHERE actor = {actor} "
            f"AND route = {route} AND key = {key} AND owner = {owner}"
            f"{f' AND {guard}' if guard else ''} RETURNING 1), "
            f"ef AS (INSERT INTO idempotency_effects (owner) SELECT {owner} FROM k RETURNING 1)")


_MARK_CLAIM = f"WITH {marking_claim('$2', '$3', '$4', '$1')} SELECT count(*) FROM ef"

# the claim the request being answered holds: (owner, (actor, route, key))
_claim: contextvars.ContextVar[tuple[uuid.UUID, tuple[str, str, str]] | None] = \
    contextvars.ContextVar("idempotency_claim", default=None)


class ClaimLostError(ConflictError):
    """The request's claim was taken over by a retry while its command ran (the claim's lease
    ran out first): the command's transaction rolls back, the retry's outcome is the one."""

    def __init__(self) -> None:
        super().__init__(f"a retry with this {HEADER} took this request over while it ran; "
                         "its own answer is the one that counts", field=None)


@dataclass
class CommitWatch:
    """Whether the last command run under `commit_watch()` had decided and was committing:
    after a lost connection, False means its transaction surely rolled back."""

    reached_commit: bool = False


_watch: contextvars.ContextVar[CommitWatch | None] = contextvars.ContextVar(
    "commit_watch", default=None)


@contextlib.contextmanager
def commit_watch() -> Iterator[CommitWatch]:
    watch = CommitWatch()
    token = _watch.set(watch)
    try:
        yield watch
    finally:
        _watch.reset(token)


def recording(decide: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
    """`decide` that also records, in its own transaction, that the claimed request being
    answered committed a command, and tells a `commit_watch()` when it reaches its commit
    (`decide` itself when there is neither)."""
    claim, watch = _claim.get(), _watch.get()
    if claim is None and watch is None:
        return decide

    async def decide_and_record(uow: Any) -> Any:
        if watch is not None:
            watch.reached_commit = False
        if claim is not None:
            # the command's first append marks the claim committed in the same statement
            # (shared.eventstore.append_many); a command that appends nothing, here
            owner, pk = claim
            uow.claim = (*pk, owner)
        result = await decide(uow)
        if claim is not None and uow.claim is not None:
            # the claim is still ours and now committed, in the command's own transaction:
            # the row lock orders this against a retry's takeover (which skips a committed
            # claim), so exactly one of the two ever commits a command
            uow.claim = None
            if not await uow.conn.fetchval(_MARK_CLAIM, owner, *pk):
                raise ClaimLostError()
        if watch is not None:
            watch.reached_commit = True
        return result

    return decide_and_record


def _error(status: int, reason: str) -> dict[str, Any]:
    return {"error": {"status": status, "field": HEADER, "reason": reason}}


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
                  ) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _refuse(send: Send, status: int, reason: str, retry_after: int | None = None) -> None:
    headers = [(b"content-type", b"application/json")]
    if retry_after is not None:  # with its milliseconds, as shared.shedding answers
        headers += [(b"retry-after", str(retry_after).encode()),
                    (b"retry-after-ms", str(retry_after * 1000).encode())]
    await _answer(send, status, orjson.dumps(_error(status, reason)), headers)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _valid_key(key: str) -> bool:
    return 0 < len(key) <= 255 and all(0x21 <= ord(c) <= 0x7E for c in key)


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, *, lease_s: float) -> None:
        self.app = app
        self.lease_s = lease_s
        self.settling: set[asyncio.Task] = set()  # held, or the loop may drop them

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _header(scope, b"idempotency-key") if scope["type"] == "http" else None
        if key is None or scope["method"] not in WRITES:
            await self.app(scope, receive, send)
            return
        if not _valid_key(key):
            await _refuse(send, 400, f"{HEADER} must be 1 to 255 visible ASCII characters")
            return
        app = scope["app"]
        ctx = getattr(app.state, "ctx", None)
        actor = _actor(app, scope)
        if ctx is None or actor is None:
            await self.app(scope, receive, send)
            return
        body, receive = await _buffered(receive)
        route = f"{scope['method']} {scope['path']}"
        digest = hashlib.sha256(b"\n".join((
            scope.get("query_string", b""), (_header(scope, b"content-type") or "").encode(),
            body))).hexdigest()
        owner = uuid.uuid4()
        try:
            found = await self._claim(ctx.pool, (actor, route, key), digest, owner)
        except Exception as exc:  # noqa: BLE001 - no claim, no run: the retry is safe
            log.warning("idempotency claim failed: %r", exc)
            await _refuse(send, 503, "the database is unavailable: the request was not run; "
                          "retry later with the same key", 5)
            return
        if found is not None:
            await self._answer_existing(send, found, digest)
            return
        await self._run(scope, receive, send, ctx.pool, (actor, route, key), owner)

    async def _claim(self, pool: Any, pk: tuple[str, str, str], digest: str,
                     owner: uuid.UUID) -> Any:
        """None when this request now holds the claim, else the existing row."""
        async with pool.acquire() as conn:
            transaction_only(conn)  # single statements: no session state to reset
            inserted = await conn.fetchval(
                "INSERT INTO idempotency_keys (actor, route, key, request_hash, owner, "
                "lease_until) VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6)) "
                "ON CONFLICT DO NOTHING RETURNING true", *pk, digest, owner, self.lease_s)
            if inserted:
                return None
            row = await conn.fetchrow(
                "SELECT k.*, lease_until < now() AS expired, EXISTS (SELECT 1 FROM "
                "idempotency_effects e WHERE e.owner = k.owner) AS committed "
                "FROM idempotency_keys k WHERE actor = $1 AND route = $2 AND key = $3", *pk)
            if row is None:  # released in between: claim it afresh
                return await self._claim(pool, pk, digest, owner)
            if (row["request_hash"] == digest and row["state"] == "in_progress"
                    and row["expired"] and not row["committed"]):
                # the first request's process died before it committed anything
                if await self._take_over(conn, pk, owner, row["owner"]):
                    return None
            return row

    async def _take_over(self, conn: Any, pk: tuple[str, str, str], owner: uuid.UUID,
                         previous: uuid.UUID) -> bool:
        """Take the expired claim of `previous` unless its command committed meanwhile: a
        committing command holds the claim row (`recording`), so this waits for it and then
        sees `committed`."""
        return bool(await conn.fetchval(
            "UPDATE idempotency_keys SET owner = $4, lease_until = now() + "
            "make_interval(secs => $5) WHERE actor = $1 AND route = $2 AND key = $3 "
            "AND owner = $6 AND state = 'in_progress' AND NOT committed "
            "AND lease_until < now() RETURNING true",
            *pk, owner, self.lease_s, previous))

    async def _answer_existing(self, send: Send, row: Any, digest: str) -> None:
        if row["request_hash"] != digest:
            await _refuse(send, 422, f"this {HEADER} was used for a different request (other "
                          "body or query); use a new key for a new request")
        elif row["state"] == "done":
            headers = [(k.encode("latin-1"), v.encode("latin-1"))
                       for k, v in orjson.loads(row["headers"])]
            await _answer(send, row["status"], row["body"],
                          [*headers, (REPLAYED.lower().encode(), b"true")])
        elif row["state"] == "lost" or (row["committed"] and row["expired"]):
            await _refuse(send, 409, f"the first request with this {HEADER} was carried out "
                          "(at least in part) but its answer was not recorded; read the "
                          "resource's state instead of retrying")
        else:
            await _refuse(send, 409, f"a request with this {HEADER} is still in progress; "
                          "retry shortly", 1)

    async def _run(self, scope: Scope, receive: Receive, send: Send, pool: Any,
                   pk: tuple[str, str, str], owner: uuid.UUID) -> None:
        status, headers, chunks = 0, [], []

        async def capture(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k.decode("latin-1"), v.decode("latin-1"))
                           for k, v in message.get("headers", ()) if k not in _NOT_REPLAYED]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        token = _claim.set((owner, pk))
        try:
            await self.app(scope, receive, capture)
        except BaseException:
            status = 500
            raise
        finally:
            _claim.reset(token)
            settle = self._settle(pool, pk, owner, status, headers, b"".join(chunks))
            try:
                await settle
            except Exception as exc:  # noqa: BLE001 - retried in the background
                log.warning("storing an idempotent answer failed, retrying: %r", exc)
                task = asyncio.get_running_loop().create_task(self._settle_later(
                    pool, pk, owner, status, headers, b"".join(chunks)))
                self.settling.add(task)
                task.add_done_callback(self.settling.discard)

    async def _settle(self, pool: Any, pk: tuple[str, str, str], owner: uuid.UUID,
                      status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        async with pool.acquire() as conn:
            transaction_only(conn)  # single statements: no session state to reset
            if 0 < status < 500 and status != 401:  # a 401 may pass with a fresh token
                await conn.execute(
                    "UPDATE idempotency_keys SET state = 'done', status = $5, headers = $6, "
                    "body = $7 WHERE actor = $1 AND route = $2 AND key = $3 AND owner = $4",
                    *pk, owner, status, orjson.dumps(headers).decode(), body)
                return
            # no answer to keep: release the claim unless a transaction of it committed
            await conn.execute(
                "WITH released AS (DELETE FROM idempotency_keys WHERE actor = $1 AND "
                "route = $2 AND key = $3 AND owner = $4 AND NOT EXISTS (SELECT 1 FROM "
                "idempotency_effects WHERE owner = $4) RETURNING 1) "
                "UPDATE idempotency_keys SET state = 'lost' WHERE actor = $1 AND route = $2 "
                "AND key = $3 AND owner = $4 AND NOT EXISTS (SELECT 1 FROM released)",
                *pk, owner)

    async def _settle_later(self, *args: Any) -> None:
        for _ in range(int(self.lease_s)):
            await asyncio.sleep(1)
            try:
                await self._settle(*args)
                return
            except Exception:  # noqa: BLE001 - the database is still away
                continue
        log.error("an idempotent answer could not be stored; its key waits for its lease")


def _actor(app: Any, scope: Scope) -> str | None:
    """The caller's actor id from its bearer token (None: no valid one), decoded once per
    request: the access log asks again."""
    try:
        return scope["tkm.actor"]
    except KeyError:
        actor = scope["tkm.actor"] = _decoded_actor(app, scope)
        return actor


def _decoded_actor(app: Any, scope: Scope) -> str | None:
    auth = _header(scope, b"authorization") or ""
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        return decode_token(app.state.signing_key, token.strip()).id
    except UnauthorizedError:
        return None


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body (the body-size limit, outside this middleware, bounds it) and a
    `receive` that hands it to the application again."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body, given = b"".join(chunks), False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


def install(app: FastAPI, *, lease_s: float) -> None:
    """The middleware (inside the body-size limit: install before it) and the header in the
    OpenAPI document of every write operation."""
    app.add_middleware(IdempotencyMiddleware, lease_s=lease_s)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        for operations in schema.get("paths", {}).values():
            for method, operation in operations.items():
                if method.upper() in WRITES:
                    parameters = operation.setdefault("parameters", [])
                    if not any(p.get("name") == HEADER for p in parameters):
                        parameters.append(PARAMETER)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


PARAMETER = {
    "name": HEADER, "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
    "description": (
        "Makes a retry safe: the first answer is kept for this caller, route and key; the same "
        "key with the same request gets it again (header `Idempotent-Replayed: true`) without "
        "running twice; with another request, 422; while the first is running, 409.")}


async def prune_keys(ctx: Any, stop: asyncio.Event) -> None:
    """Background job: every `housekeeping_interval_s`, delete keys older than
    `idempotency_retention_hours` (and then their effects), in batches."""
    settings = ctx.settings
    retention = settings.idempotency_retention_hours * 3600
    while not stop.is_set():
        try:
            for table, clock, extra in (
                    ("idempotency_keys", "created_at", ""),
                    ("idempotency_effects", "committed_at", " AND NOT EXISTS (SELECT 1 FROM "
                     "idempotency_keys k WHERE k.owner = t.owner)")):
                while not stop.is_set():
                    deleted = await ctx.pool.execute(
                        f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} "
                        f"t WHERE {clock} < now() - make_interval(secs => $1){extra} LIMIT $2))",
                        retention, settings.housekeeping_batch_size)
                    if deleted == "DELETE 0":
                        break
        except Exception as exc:  # noqa: BLE001 - tried again at the next round
            log.warning("pruning idempotency keys failed: %r", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.housekeeping_interval_s)
