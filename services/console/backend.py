"""The console's write side (and the few reads its read model cannot answer, such as a group's
members, which never travel on a topic): the owning service's HTTP API, called with a token
minted for the signed-in user only (their role and scope, minutes long), and every command with
an Idempotency-Key, so a resubmitted form or a replayed offline draft is applied once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from services.console.users import User
from shared.auth import mint_token, pseudonym


@dataclass
class Answer:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def pending(self) -> str | None:
        """The request id when the service recorded the command as a four-eyes request waiting
        for a checker (202 {"state": "pending"}) instead of carrying it out; None otherwise."""
        body = self.body
        if self.status == 202 and isinstance(body, dict) and body.get("state") == "pending":
            return str(body.get("request_id") or "")
        return None

    @property
    def field(self) -> str | None:
        """The field a refusal names (e.g. "checker" for a maker checking their own request)."""
        body = self.body
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else body if isinstance(body, dict) else {}
        field = error.get("field")
        return str(field) if field else None

    @property
    def message(self) -> str:
        """The service's reason for a refusal, one line."""
        body = self.body
        if isinstance(body, dict):
            error = body.get("error") if isinstance(body.get("error"), dict) else body
            text = error.get("reason") or error.get("message") or error.get("detail") or body
            field = error.get("field")
            return (f"{field}: {text}" if field else str(text))[:300]
        return str(body)[:300]


class Backend:
    def __init__(self, urls: dict[str, str], signing_key: str, token_minutes: float,
                 timeout: float = 30):
        self.urls = urls
        self._key = signing_key
        self._ttl = timedelta(minutes=token_minutes)
        self.client = httpx.AsyncClient(timeout=timeout)

    async def close(self) -> None:
        await self.client.aclose()

    @staticmethod
    def subject_of(user: User) -> str:
        # the subject names the console and the user: the services' audit pseudonym is per user
        return f"console:{user.email}"

    def pseudonym_of(self, user: User) -> str:
        """What the services record as this user (a maker's or a checker's pseudonym): lets a
        page say "you" without resolving anyone else's pseudonym."""
        return pseudonym(self._key, self.subject_of(user))

    def token_for(self, user: User) -> str:
        return mint_token(self._key, self.subject_of(user), user.role,
                          province_code=user.province_code, tks_id=user.tks_id, ttl=self._ttl)

    async def call(self, user: User, method: str, service: str, path: str, *,
                   json: Any = None, content: bytes | None = None,
                   content_type: str | None = None, params: dict | None = None,
                   idempotency_key: str | None = None) -> Answer:
        headers = {"Authorization": f"Bearer {self.token_for(user)}"}
        if content_type:
            headers["Content-Type"] = content_type
        if method != "GET":
            if not idempotency_key:
                raise ValueError("a command needs an idempotency key")
            headers["Idempotency-Key"] = idempotency_key
        try:
            response = await self.client.request(method, self.urls[service] + path,
                                                 headers=headers, json=json, content=content,
                                                 params=params)
        except httpx.HTTPError as exc:
            return Answer(503, {"message": f"{service} is unreachable: {type(exc).__name__}"})
        try:
            body = response.json()
        except ValueError:
            body = response.text
        return Answer(response.status_code, body)
