"""The body-size middleware on a bare ASGI app: what it lets through and what it answers."""

import json

from shared.limits import MAX_REASON_CHARS, BodySizeLimit, bounded_errors


def echo_app(log: list):
    async def app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        log.append(len(body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
    return app


async def call(app, body_chunks, headers=(), path="/x", query=b""):
    sent, chunks = [], list(body_chunks)
    pulled = 0

    async def receive():
        nonlocal pulled
        pulled += 1
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "query_string": query,
             "headers": [(k.encode(), v.encode()) for k, v in headers]}
    await app(scope, receive, send)
    status = sent[0]["status"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return status, body, pulled


async def test_a_declared_length_over_the_cap_is_refused_without_reading():
    log = []
    app = BodySizeLimit(echo_app(log), max_body_bytes=1000, max_csv_bytes=5000)
    status, body, pulled = await call(app, [b"x" * 2000], [("content-length", "2000")])
    assert (status, pulled, log) == (413, 0, [])
    assert json.loads(body)["error"] == {"status": 413, "field": None, "max_bytes": 1000,
                                         "reason": "the request body is larger than 1000 bytes"}


async def test_a_streamed_body_is_cut_off_once_past_the_cap():
    log = []
    app = BodySizeLimit(echo_app(log), max_body_bytes=1000, max_csv_bytes=5000)
    status, _, pulled = await call(app, [b"x" * 400] * 10)
    assert (status, pulled, log) == (413, 3, [])


async def test_csv_gets_its_own_cap_and_bodies_under_the_cap_go_through():
    log = []
    app = BodySizeLimit(echo_app(log), max_body_bytes=1000, max_csv_bytes=5000)
    assert (await call(app, [b"x" * 400] * 10, [("content-type", "text/csv")]))[0] == 200
    assert (await call(app, [b"x" * 400] * 2))[0] == 200
    assert log == [4000, 800]


async def test_nul_in_the_path_or_query_is_a_422():
    app = BodySizeLimit(echo_app([]), max_body_bytes=1000, max_csv_bytes=5000)
    status, body, _ = await call(app, [b""], path="/groups/a\x00b")
    assert (status, json.loads(body)["error"]["field"]) == (422, "path")
    status, body, _ = await call(app, [b""], query=b"name=%00")
    assert (status, json.loads(body)["error"]["field"]) == (422, "query")


def test_error_lists_are_capped_and_long_reasons_cut():
    errors, total = bounded_errors([{"field": "f" * 10_000, "reason": "r"}] * 500)
    assert (len(errors), total) == (100, 500)
    assert len(errors[0]["field"]) == MAX_REASON_CHARS + 1
