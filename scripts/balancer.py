"""Client-side round-robin over the instances of each service: an httpx transport for the
simulator, the tests and the fault suite, where a deployment has a load balancer in front.

A client addresses a service by a virtual base URL (`http://<service>.balanced.invalid`,
`balanced_urls`); the transport sends each request to the next instance of that service in turn
and passes requests for any other host through untouched. When an instance cannot be reached,
the request goes to the next instance, and that instance is passed over for `cooldown_s` -
but only when sending it again cannot apply it twice:
- the connection was never made (`ConnectError`, `ConnectTimeout`): nothing was sent;
- the request carries an `Idempotency-Key` (shared.idempotency): the services keep its claim
  in the database all instances share, so the second instance answers the first one's stored
  answer, or 409 while the first attempt still holds the claim, or runs it if it never ran;
- a GET, HEAD or OPTIONS, which change nothing.
Any other failure (a POST without a key cut off after it was sent) is raised to the caller:
only the caller can tell whether to send it again. Answers are never retried here, whatever
their status: a 5xx or a 409 "still in progress" is the caller's (scripts.api_client.Api) to
retry.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence

import httpx

DOMAIN = "balanced.invalid"  # .invalid never resolves: a request that escapes fails at once
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
IDEMPOTENCY_HEADER = "Idempotency-Key"


def balanced_urls(instances: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """The virtual base URL of each service, for a client on a `RoundRobinTransport`."""
    return {name: f"http://{name}.{DOMAIN}" for name in instances}


def may_resend(request: httpx.Request, exc: Exception) -> bool:
    """Whether `request`, which failed with `exc` before an answer came, can go to another
    instance without the risk of being applied twice."""
    return (isinstance(exc, NOT_SENT) or request.method in SAFE_METHODS
            or IDEMPOTENCY_HEADER in request.headers)


class _Ring:
    """The instances of one service, taken in turn; one that failed is tried last until its
    cool-down has passed."""

    def __init__(self, urls: Sequence[str], cooldown_s: float):
        if not urls:
            raise ValueError("a service needs at least one instance")
        self.targets = [httpx.URL(u) for u in urls]
        self.cooldown_s = cooldown_s
        self._turn = itertools.count()
        self._down_until = [0.0] * len(urls)

    def order(self) -> list[int]:
        """The instances to try for the next request: the healthy ones in turn (a cooling
        one's share goes to all the others, not to its successor alone), then the others."""
        now = time.monotonic()
        up = [i for i in range(len(self.targets)) if self._down_until[i] <= now]
        down = [i for i in range(len(self.targets)) if self._down_until[i] > now]
        if not up:
            return down
        first = next(self._turn) % len(up)
        return up[first:] + up[:first] + down

    def failed(self, i: int) -> None:
        self._down_until[i] = time.monotonic() + self.cooldown_s

    def point(self, request: httpx.Request, i: int) -> None:
        target = self.targets[i]
        request.url = request.url.copy_with(scheme=target.scheme, host=target.host,
                                            port=target.port)
        request.headers["Host"] = target.netloc.decode("ascii")


class _Balancer:
    def __init__(self, instances: Mapping[str, Sequence[str]], cooldown_s: float):
        self.rings = {f"{name}.{DOMAIN}": _Ring(urls, cooldown_s)
                      for name, urls in instances.items()}
        self.resent = 0  # requests sent again to another instance (for tests and reports)

    def ring(self, request: httpx.Request) -> _Ring | None:
        return self.rings.get(request.url.host)


class RoundRobinTransport(httpx.AsyncBaseTransport):
    """Async round-robin over `instances` (service name -> base URLs of its instances)."""

    def __init__(self, instances: Mapping[str, Sequence[str]], *, cooldown_s: float = 1.0,
                 transport: httpx.AsyncBaseTransport | None = None):
        self._balancer = _Balancer(instances, cooldown_s)
        self._inner = transport or httpx.AsyncHTTPTransport()

    @property
    def resent(self) -> int:
        return self._balancer.resent

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        ring = self._balancer.ring(request)
        if ring is None:
            return await self._inner.handle_async_request(request)
        order = ring.order()
        await request.aread()  # a body that can be sent again
        for attempt, i in enumerate(order):
            ring.point(request, i)
            try:
                return await self._inner.handle_async_request(request)
            except httpx.TransportError as exc:
                ring.failed(i)
                if attempt == len(order) - 1 or not may_resend(request, exc):
                    raise
                self._balancer.resent += 1
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self._inner.aclose()


class SyncRoundRobinTransport(httpx.BaseTransport):
    """The same for a synchronous httpx.Client."""

    def __init__(self, instances: Mapping[str, Sequence[str]], *, cooldown_s: float = 1.0,
                 transport: httpx.BaseTransport | None = None):
        self._balancer = _Balancer(instances, cooldown_s)
        self._inner = transport or httpx.HTTPTransport()

    @property
    def resent(self) -> int:
        return self._balancer.resent

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        ring = self._balancer.ring(request)
        if ring is None:
            return self._inner.handle_request(request)
        order = ring.order()
        request.read()
        for attempt, i in enumerate(order):
            ring.point(request, i)
            try:
                return self._inner.handle_request(request)
            except httpx.TransportError as exc:
                ring.failed(i)
                if attempt == len(order) - 1 or not may_resend(request, exc):
                    raise
                self._balancer.resent += 1
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._inner.close()


def round_robin_client(instances: Mapping[str, Sequence[str]], *, cooldown_s: float = 1.0,
                       **client_kwargs) -> tuple[httpx.AsyncClient, dict[str, str]]:
    """An AsyncClient spreading requests over `instances`, and the base URL of each service to
    call it with (`await client.post(urls["groups"] + "/groups", ...)`). `client_kwargs` go to
    httpx.AsyncClient (headers, timeout); `limits` to the pooled transport underneath."""
    limits = client_kwargs.pop("limits", None)
    inner = httpx.AsyncHTTPTransport(limits=limits) if limits else None
    transport = RoundRobinTransport(instances, cooldown_s=cooldown_s, transport=inner)
    return httpx.AsyncClient(transport=transport, **client_kwargs), balanced_urls(instances)
