"""Any of the four services in-process with its real lifespan, for tests of the HTTP edge."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI

from shared.auth import Role, mint_token
from shared.kafka_security import KafkaSecurity
from shared.service import create_app
from shared.settings import DEV_SIGNING_KEY, load_settings
from tests.support.databases import create_database, drop_database

SERVICES = ("recruitment", "groups", "mentoring", "evaluation")


def build_app(service: str, *, extra: APIRouter | None = None, **settings: Any) -> FastAPI:
    """The service's app as `create_app` builds it (no lifespan run: for its OpenAPI);
    `extra` routes are added to the service's own. Without a broker (`kafka_bootstrap_servers`)
    it never connects, so it needs no Kafka principal either."""
    spec = importlib.import_module(f"services.{service}.app").build_spec()
    # the group of a test run: under the service's name, the prefix its principal may use
    spec = dataclasses.replace(spec, consumer_group=f"{service}-test-{uuid.uuid4().hex}",
                               routers=[*spec.routers, *([extra] if extra else [])])
    security = (None if "kafka_bootstrap_servers" in settings
                else KafkaSecurity(kafka_security_protocol="PLAINTEXT",
                                   tkm_kafka_allow_plaintext=True))
    return create_app(spec, load_settings(service, **{"database_url": "postgresql://unused/x",
                                                      **settings}), security=security)


@contextlib.asynccontextmanager
async def running(infra, service: str, *, extra: APIRouter | None = None,
                  ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    database_url = await create_database(infra, f"t_edge_{service[:4]}")
    app = build_app(service, extra=extra, database_url=database_url,
                    kafka_bootstrap_servers=infra.kafka_bootstrap, relay_poll_interval_s=0.05)
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(
                app=app, raise_app_exceptions=False),
                                         base_url=f"http://{service}", timeout=60) as client:
                yield app, client
    finally:
        await drop_database(infra, database_url)


def bearer(role: Role, key: str = DEV_SIGNING_KEY, **scope: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(key, f'edge-{role.value}', role, **scope)}"}
