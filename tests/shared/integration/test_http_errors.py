"""Every answer that is not a success has one JSON shape, whoever produced it: our handlers,
FastAPI's validation, starlette's routing, or a bug."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter

from shared.auth import Role
from shared.errors import ConflictError
from tests.support.edge import bearer, running

pytestmark = pytest.mark.integration

ADMIN = bearer(Role.ADMIN)
broken = APIRouter()


@broken.get("/test-only/conflict-with-status-detail")
async def conflict_with_status_detail() -> dict:
    raise ConflictError("already reviewed", field="report_id", status="accepted")


@broken.get("/test-only/bug")
async def bug() -> dict:
    raise RuntimeError("secret internals: postgresql://user:pw@db/x")


@pytest.fixture(scope="module")
async def client(infra) -> AsyncIterator[httpx.AsyncClient]:
    async with running(infra, "groups", extra=broken) as (_, client):
        yield client


def assert_one_shape(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["status"] == status
    assert {"field", "reason"} <= error.keys() and error["reason"]
    return error


async def test_invalid_json_is_a_400_in_the_one_shape(client):
    response = await client.post("/groups", content=b'{"year": 2023, "name": ',
                                 headers={**ADMIN, "Content-Type": "application/json"})
    error = assert_one_shape(response, 400)
    assert error["field"] == "body"


async def test_an_unknown_route_is_a_404_in_the_one_shape(client):
    assert_one_shape(await client.get("/no/such/route", headers=ADMIN), 404)


async def test_a_wrong_method_is_a_405_in_the_one_shape_with_allow(client):
    response = await client.delete("/business-types", headers=ADMIN)
    assert_one_shape(response, 405)
    assert "GET" in response.headers["allow"]


async def test_a_validation_error_names_the_field_and_lists_them_all(client):
    response = await client.get("/groups", params={"year": "soon", "page": 0}, headers=ADMIN)
    error = assert_one_shape(response, 422)
    assert error["field"] == "query.year"
    assert {e["field"] for e in response.json()["errors"]} == {"query.year", "query.page"}


async def test_a_missing_token_is_a_401_in_the_one_shape(client):
    assert_one_shape(await client.get("/groups"), 401)


async def test_a_detail_named_status_never_changes_the_http_status(client):
    response = await client.get("/test-only/conflict-with-status-detail", headers=ADMIN)
    error = assert_one_shape(response, 409)
    assert error["detail_status"] == "accepted"
    assert error["field"] == "report_id" and error["reason"] == "already reviewed"


async def test_a_bug_is_a_500_in_the_one_shape_without_internals(client):
    response = await client.get("/test-only/bug", headers=ADMIN)
    error = assert_one_shape(response, 500)
    assert "postgresql" not in response.text and "RuntimeError" not in response.text
    assert error["correlation_id"]


async def test_the_correlation_id_is_echoed_or_made(client):
    given = "1f0e6a4c-2b7d-4c1e-9a55-0d3c2e1b4a77"
    response = await client.get("/healthz", headers={"X-Correlation-ID": given})
    assert response.headers["x-correlation-id"] == given
    made = (await client.get("/healthz", headers={"X-Correlation-ID": "junk"}))
    assert made.headers["x-correlation-id"] not in ("", "junk")
