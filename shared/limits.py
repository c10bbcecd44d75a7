"""Bounds on what a request may cost before any work is done for it.

`BodySizeLimit` is a pure ASGI middleware installed outermost by `create_app`, so it runs before
the body is read, before authentication and before any handler: a declared Content-Length over
the cap is answered 413 without reading a byte; a chunked (or lying) body is counted as it
streams and answered 413 as soon as the count passes the cap, whatever the application was doing
with it. CSV uploads (`Content-Type: text/csv`) have their own, larger cap.

A path or query string holding a NUL character is refused (422) here too: no route could use
it, and Postgres refuses it in text.

`bounded_errors` keeps a validation reply small whatever the request held: at most
`MAX_REPORTED_ERRORS` entries, each reason cut to `MAX_REASON_CHARS`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_REPORTED_ERRORS = 100
MAX_REASON_CHARS = 300


class BodyTooLargeError(Exception):
    """Raised from `receive` inside the application once the body passes its cap."""


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_csv_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_csv_bytes = max_csv_bytes

    def cap_for(self, scope: Scope) -> int:
        for name, value in scope.get("headers", ()):
            if name == b"content-type":
                if value.split(b";", 1)[0].strip().lower() == b"text/csv":
                    return self.max_csv_bytes
                break
        return self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b"").lower():
            # Postgres refuses NUL in text: an id or filter holding one can match nothing
            await _reply(send, 422, {"error": {
                "status": 422, "field": "path" if "\x00" in scope.get("path", "") else "query",
                "reason": "must not contain NUL characters"}})
            return
        cap = self.cap_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > cap:
            await _refuse(send, cap)
            return
        received = 0
        exceeded = started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    exceeded = True
                    raise BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # whatever the application makes of the error, the answer is ours
            started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            await _refuse(send, cap)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # counted as it streams instead
    return None


async def _refuse(send: Send, cap: int) -> None:
    await _reply(send, 413, {"error": {"status": 413, "field": None,
                                       "reason": f"the request body is larger than {cap} bytes",
                                       "max_bytes": cap}})


async def _reply(send: Send, status: int, content: dict[str, Any]) -> None:
    body = orjson.dumps(content)
    # no "Connection: close": a client that sends the whole body before reading (httpx does)
    # would then see a reset instead of the 413; the server discards what still arrives
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def bounded_errors(errors: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The first MAX_REPORTED_ERRORS errors with their reasons cut short, and how many there
    were in all."""
    kept = [{key: _cut(value) if isinstance(value, str) else value for key, value in e.items()}
            for e in errors[:MAX_REPORTED_ERRORS]]
    return kept, len(errors)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS] + "…"
