"""Errors a command can end in. Each maps to an HTTP status and names the field and the reason."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 400

    def __init__(self, reason: str, *, field: str | None = None, **details: Any):
        super().__init__(reason)
        self.reason, self.field, self.details = reason, field, details

    def body(self) -> dict[str, Any]:
        return {"error": {"status": self.status, "field": self.field, "reason": self.reason,
                          **self.details}}


class NotFoundError(DomainError):
    status = 404


class ConflictError(DomainError):
    status = 409


class RuleViolationError(DomainError):
    """The request is well formed but a programme rule refuses it (quota, eligibility...)."""

    status = 422


class ForbiddenError(DomainError):
    status = 403


class UnauthorizedError(DomainError):
    status = 401
