"""Request bodies are bounded before any work: the real recruitment service, in process with its
lifespan against real Kafka and Postgres."""

import asyncio
import dataclasses
import time
import uuid

import httpx
import pytest

from services.recruitment.app import build_spec
from shared.service import create_app
from shared.settings import load_settings
from tests.recruitment.recruitment_helpers import ADMIN, applicant
from tests.support.databases import create_database

pytestmark = pytest.mark.integration

FIFTY_MB = 50 * 1024 * 1024


@pytest.fixture(scope="module")
async def client(infra):
    url = await create_database(infra, "t_limits")
    spec = dataclasses.replace(build_spec(),
                               consumer_group=f"recruitment-test-limits-{uuid.uuid4().hex}")
    app = create_app(spec, load_settings("recruitment", database_url=url,
                                         kafka_bootstrap_servers=infra.kafka_bootstrap))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://svc", timeout=30) as http:
            yield http


def refused_413(response: httpx.Response) -> dict:
    assert response.status_code == 413, response.text[:300]
    error = response.json()["error"]
    assert error["status"] == 413 and error["field"] is None
    assert "1048576 bytes" in error["reason"]
    return error


async def test_a_50_mb_body_without_a_token_is_refused_at_once_while_healthz_answers(client):
    body = b'{"full_name": "' + b"x" * FIFTY_MB + b'"}'

    async def healthz_times() -> list[float]:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            assert (await client.get("/healthz")).status_code == 200
            times.append(time.perf_counter() - started)
        return times

    started = time.perf_counter()
    refused_413(await client.post("/applicants", content=body,
                                  headers={"content-type": "application/json"}))
    print(f"\none 50 MB body without a token refused in "
          f"{(time.perf_counter() - started) * 1000:.1f} ms")
    started = time.perf_counter()
    responses = await asyncio.gather(
        *(client.post("/applicants", content=body,
                      headers={"content-type": "application/json"}) for _ in range(4)),
        healthz_times())
    elapsed = time.perf_counter() - started
    print(f"\nfour 50 MB bodies refused in {elapsed * 1000:.1f} ms; healthz took "
          f"{max(responses[-1]) * 1000:.1f} ms at most")
    for response in responses[:4]:
        refused_413(response)
    # bounds that hold on a loaded 2-core CI machine; before the limit this took 5-22 s
    assert elapsed < 3.0
    assert max(responses[-1]) < 1.5


async def test_a_chunked_body_over_the_cap_is_refused_as_soon_as_it_passes_it(client):
    sent = 0

    async def chunks():
        nonlocal sent
        for _ in range(1000):  # 64 MB if it were all read
            sent += 1
            yield b"x" * 65536

    response = await client.post("/applicants", content=chunks(), headers=ADMIN)
    refused_413(response)
    # 1 MiB is 16 chunks: the rest were never asked for
    assert sent <= 18


async def test_a_chunked_body_under_the_cap_goes_through(client):
    data = httpx.Request("POST", "/", json=applicant()).content

    async def chunks():
        for i in range(0, len(data), 16):
            yield data[i:i + 16]

    response = await client.post("/applicants", content=chunks(),
                                 headers={**ADMIN, "content-type": "application/json"})
    assert response.status_code == 201, response.text


async def test_a_declared_length_over_the_cap_is_refused_before_authentication(client):
    response = await client.post("/applicants", content=b"{}" + b" " * (1024 * 1024),
                                 headers={"content-type": "application/json",
                                          "Authorization": "Bearer not-a-token"})
    refused_413(response)
    # just under the cap the request goes on to authentication
    response = await client.post("/applicants", content=b"{}" + b" " * 1000,
                                 headers={"content-type": "application/json"})
    assert response.status_code == 401


async def test_a_body_of_unknown_keys_gets_a_small_422(client):
    # just under the cap: some 30,000 unknown keys, one of them with a 100,000-character name
    junk = {f"k{i}": 0 for i in range(30_000)}
    junk["x" * 100_000] = 0
    body = httpx.Request("POST", "/", json={**applicant(), **junk}).content
    assert len(body) < 1024 * 1024
    started = time.perf_counter()
    response = await client.post("/applicants", content=body,
                                 headers={**ADMIN, "content-type": "application/json"})
    took = time.perf_counter() - started
    print(f"\n{len(body)} bytes of unknown keys: a {len(response.content)}-byte 422 "
          f"in {took:.2f}s")
    assert response.status_code == 422
    reply = response.json()
    assert len(reply["errors"]) == 100 and reply["error"]["errors_total"] == 30_001
    assert len(response.content) < 40_000
    assert took < 5
