"""Four eyes on money, seen from the console (issue 18, docs/four-eyes.md): what the services
hold as approval requests, read through their `/approvals` API with the signed-in user's token.

Funding a group, accepting an LPJ and closing the year's evaluation may come back from the
owning service as `202 {"state": "pending", "request_id"}`: recorded, waiting for another
person with a checking role. The console lists what the user may decide (`checkable=true`),
what waits for someone else, and grants or rejects through the owning service, which enforces
who may check (never the maker, a checking role, the province). A service without four eyes
(no `/approvals`: 404) simply has nothing pending."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from services.console.backend import Answer, Backend
from services.console.users import User
from shared.approvals import DEFAULT_REASON_CODES
from shared.auth import Role

# the services that keep approval requests, and the command types each carries out
SERVICES = ("groups", "evaluation")
COMMAND_TYPES = {"fund": "groups", "change_tranche": "groups", "accept_lpj": "groups",
                 "close_year": "evaluation"}
LIST_LIMIT = 200
GROUP_TARGET = "group-"


def request_uuid(value: str) -> str | None:
    """The request id as the services spell it, or None for anything that is not a UUID."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None


def services_for(user: User) -> tuple[str, ...]:
    """Where this user may find requests to decide: a provincial officer checks its province's
    requests only, and the year-end close is national (ministry admins check it)."""
    return SERVICES if user.role is Role.ADMIN else ("groups",)


def group_of(item: dict[str, Any]) -> str | None:
    target = str(item.get("target") or "")
    return target[len(GROUP_TARGET):] if target.startswith(GROUP_TARGET) else None


@dataclass
class Listing:
    """One service's requests as the user sees them."""

    service: str
    checkable: list[dict[str, Any]] = field(default_factory=list)
    checkable_total: int = 0
    waiting: list[dict[str, Any]] = field(default_factory=list)
    waiting_total: int = 0
    recent: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def _items(answer: Answer) -> tuple[list[dict[str, Any]], int, str | None]:
    if answer.status == 404:  # a listing is never 404 where the route exists
        return [], 0, None  # the service has no four eyes (yet): nothing is pending there
    if not answer.ok or not isinstance(answer.body, dict):
        return [], 0, answer.message
    items = [i for i in answer.body.get("items", []) if isinstance(i, dict)]
    return items, int(answer.body.get("total", len(items))), None


async def pending(backend: Backend, user: User, service: str, *,
                  command_type: str | None = None, province: str | None = None,
                  checkable: bool = False, limit: int = LIST_LIMIT
                  ) -> tuple[list[dict[str, Any]], int, str | None]:
    """Pending requests of one service (oldest first), the province's only for an officer."""
    params: dict[str, Any] = {"state": "pending", "limit": limit}
    if user.role is Role.PROVINCE:
        params["province"] = user.province_code
    elif province:
        params["province"] = province
    if command_type:
        params["command_type"] = command_type
    if checkable:
        params["checkable"] = "true"
    return _items(await backend.call(user, "GET", service, "/approvals", params=params))


async def listings(backend: Backend, user: User) -> list[Listing]:
    """Per service: the requests this user may grant or reject, and the others still pending
    (their own, or for another role), each marked with whether its maker is this user."""
    me = backend.pseudonym_of(user)
    found = []
    for service in services_for(user):
        listing = Listing(service)
        listing.checkable, listing.checkable_total, listing.error = await pending(
            backend, user, service, checkable=True)
        if listing.error is None:
            ids = {i.get("request_id") for i in listing.checkable}
            others, total, listing.error = await pending(backend, user, service)
            listing.waiting = [i for i in others if i.get("request_id") not in ids]
            listing.waiting_total = max(total - listing.checkable_total, len(listing.waiting))
        if listing.error is None:
            listing.recent = await recent(backend, user, service)
        for item in listing.checkable + listing.waiting + listing.recent:
            _mark(item, service, me)
        found.append(listing)
    return found


def _mark(item: dict[str, Any], service: str, me: str) -> dict[str, Any]:
    item.update(service=service, group_id=group_of(item), by_me=item.get("maker") == me,
                checked_by_me=bool(item.get("checker")) and item.get("checker") == me)
    return item


async def recent(backend: Backend, user: User, service: str, count: int = 10
                 ) -> list[dict[str, Any]]:
    """The latest decided requests (granted, rejected, expired), newest first, with their maker
    and checker. The listing is oldest first: its total tells where its end is."""
    params: dict[str, Any] = {"state": "any", "limit": 1}
    if user.role is Role.PROVINCE:
        params["province"] = user.province_code
    _, total, error = _items(await backend.call(user, "GET", service, "/approvals",
                                                params=params))
    if error or not total:
        return []
    window = count * 3  # the newest requests, some of them still pending
    params.update(limit=window, offset=max(0, total - window))
    items, _, _ = _items(await backend.call(user, "GET", service, "/approvals", params=params))
    return [i for i in reversed(items) if i.get("state") != "pending"][:count]


async def reason_codes(backend: Backend, user: User, service: str, year: int | None,
                       cache: dict[tuple[str, int | None], list[str]]) -> list[str]:
    """The reason codes a rejection may cite: the request year's rules in force
    (`GET /rules/{year}`, section `four_eyes`), else the documented list."""
    key = (service, year)
    if key not in cache:
        codes: list[str] = []
        if year is not None:
            answer = await backend.call(user, "GET", service, f"/rules/{int(year)}")
            if answer.ok and isinstance(answer.body, dict):
                rules = answer.body.get("rules") or {}
                section = rules.get("four_eyes") if isinstance(rules, dict) else None
                if isinstance(section, dict):
                    codes = [str(c) for c in section.get("reason_codes") or []]
        cache[key] = codes or list(DEFAULT_REASON_CODES)
    return cache[key]


async def one(backend: Backend, user: User, service: str, request_id: str
              ) -> dict[str, Any] | None:
    """One request with its decision (maker, checker, result), or None when it cannot be read."""
    answer = await backend.call(user, "GET", service, f"/approvals/{request_id}")
    if not answer.ok or not isinstance(answer.body, dict):
        return None
    return _mark(dict(answer.body), service, backend.pseudonym_of(user))


async def waiting_for(backend: Backend, user: User, command_type: str, *,
                      province: str | None = None) -> list[dict[str, Any]]:
    """Pending requests of one command type (to mark what already waits for a checker, so it
    is not asked for twice): empty when the user may not list them or the service has none."""
    if user.role not in (Role.ADMIN, Role.PROVINCE):
        return []
    items, _, _ = await pending(backend, user, COMMAND_TYPES[command_type],
                                command_type=command_type, province=province, limit=1000)
    return items
