"""A small async client for the four services' HTTP APIs, used by the simulator and e2e tests."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from scripts.balancer import RoundRobinTransport, balanced_urls
from shared.auth import Role, mint_token
from shared.settings import DEV_SIGNING_KEY


class ApiError(RuntimeError):
    def __init__(self, method: str, url: str, status: int, body: Any):
        super().__init__(f"{method} {url} -> {status}: {body}")
        self.status, self.body = status, body


class Api:
    """Calls one of the services by name. Connection failures, 5xx answers and a retry that
    finds its first attempt still running are retried a few times; every command carries one
    Idempotency-Key for all its attempts, so a retry never applies it twice. 4xx raise
    ApiError.

    `urls`: a service's base URL, or the list of its instances' (`RunningServices.
    instance_urls`): then its requests go round-robin over them (scripts.balancer), a command
    that cannot reach one going to the next under the same key."""

    def __init__(self, urls: Mapping[str, str | Sequence[str]], *,
                 signing_key: str = DEV_SIGNING_KEY, concurrency: int = 8, timeout: float = 120):
        several = {name: list(u) for name, u in urls.items() if not isinstance(u, str)}
        self.urls = {name: u for name, u in urls.items() if isinstance(u, str)}
        self.urls.update(balanced_urls(several))
        token = mint_token(signing_key, "programme-simulator", Role.ADMIN)
        limits = httpx.Limits(max_connections=concurrency * 4)
        self.transport = (RoundRobinTransport(several, transport=httpx.AsyncHTTPTransport(
            limits=limits)) if several else None)
        self.client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=timeout, limits=limits,
            transport=self.transport)
        self.gate = asyncio.Semaphore(concurrency)
        self.calls = 0
        self.signing_key = signing_key

    def person(self, subject: str, role: Role = Role.ADMIN) -> Api:
        """This client as another person (token subject), on the same services, connections
        and concurrency: e.g. the checker who grants what this client asked for (four eyes,
        docs/four-eyes.md). Closing the original closes both."""
        other = copy.copy(self)
        token = mint_token(self.signing_key, subject, role)
        other.client = _AsPerson(self.client, {"Authorization": f"Bearer {token}"})  # type: ignore[assignment]
        return other

    async def close(self) -> None:
        await self.client.aclose()

    async def get(self, service: str, path: str, **params: Any) -> Any:
        params = {k: v for k, v in params.items() if v is not None}
        return await self._call("GET", service, path, params=params)

    async def post(self, service: str, path: str, body: Any = None, *, content: bytes | None = None,
                   content_type: str | None = None, ok: tuple[int, ...] = ()) -> Any:
        headers = {"Content-Type": content_type} if content_type else None
        return await self._call("POST", service, path, json=body if content is None else None,
                                content=content, headers=headers, ok=ok)

    async def get_all(self, service: str, path: str, *, page_style: str = "offset",
                      page_size: int = 500, **params: Any) -> list[dict]:
        """Every item of a paginated listing: limit/offset, the one convention of the four
        services (shared.paging). `page_style` is ignored (every listing pages by offset now;
        kept for one release so older callers still run)."""
        items: list[dict] = []
        while True:
            page = await self.get(service, path, limit=page_size, offset=len(items), **params)
            batch = page["items"]
            items.extend(batch)
            if len(batch) < page_size or len(items) >= page.get("total", 1 << 62):
                return items

    async def _call(self, method: str, service: str, path: str, *, ok: tuple[int, ...] = (),
                    **kwargs: Any) -> Any:
        url = self.urls[service] + path
        if method != "GET":
            kwargs["headers"] = {**(kwargs.get("headers") or {}),
                                 "Idempotency-Key": str(uuid.uuid4())}
        async with self.gate:
            for attempt in range(5):
                try:
                    response = await self.client.request(method, url, **kwargs)
                except httpx.TransportError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                self.calls += 1
                if (response.status_code >= 500 or _in_progress(response)) and attempt < 4:
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                body = _body(response)
                if response.status_code >= 400 and response.status_code not in ok:
                    raise ApiError(method, url, response.status_code, body)
                return body
        raise AssertionError("unreachable")


class _AsPerson:
    """An httpx client's `request` with another person's headers (`Api.person`)."""

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str]):
        self.inner, self.headers = client, headers

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        kwargs["headers"] = {**self.headers, **(kwargs.get("headers") or {})}
        return await self.inner.request(method, url, **kwargs)

    async def aclose(self) -> None:  # the original's connections: closed with it
        pass


def _in_progress(response: httpx.Response) -> bool:
    # the attempt before this one (cut off by a timeout) still runs under the same key
    return response.status_code == 409 and "still in progress" in response.text


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text
