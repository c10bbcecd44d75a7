"""Errors a command can end in. Each maps to an HTTP status and names the field and the reason.

Every error the HTTP edge answers has one shape, `ErrorBody`: `{"error": {"status", "field",
"reason", ...details}}` (a validation error adds `errors`, one per field). `status` is always the
HTTP status: a detail named like one of the three fixed keys is renamed `detail_<name>`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

RESERVED = ("status", "field", "reason")


class DomainError(Exception):
    status = 400

    def __init__(self, reason: str, *, field: str | None = None, **details: Any):
        super().__init__(reason)
        self.reason, self.field, self.details = reason, field, details

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.reason, self.field, self.details)


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


def error_body(status: int, reason: str, field: str | None = None,
               details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one error shape. Details never overwrite `status`, `field` or `reason`."""
    extra = {(f"detail_{k}" if k in RESERVED else k): v for k, v in (details or {}).items()}
    return {"error": {**extra, "status": status, "field": field, "reason": reason}}


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: int = Field(description="the HTTP status, repeated")
    field: str | None = Field(description="the request field at fault, when there is one")
    reason: str


class FieldError(BaseModel):
    field: str | None
    reason: str


class ErrorBody(BaseModel):
    error: ErrorDetail
    errors: list[FieldError] | None = Field(None, description="every invalid field (422)")


_WHY = {400: "Bad request (malformed body, invalid JSON, refused value)",
        401: "Missing, invalid or expired bearer token",
        403: "The caller's role or scope does not allow this",
        404: "Not found",
        409: "Conflict with the current state (duplicate, already done)",
        413: "Request body too large",
        415: "Unsupported media type",
        422: "Invalid field or a programme rule refuses the request",
        503: "Temporarily unavailable (database down or overloaded); retry later"}

# declared on every router (`app.include_router(..., responses=ERROR_RESPONSES)`): each status
# the edge may answer is in the OpenAPI document, with its one shape
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": why} for status, why in _WHY.items()}
