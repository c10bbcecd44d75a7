"""Every operation of the four services documents its success and every error status it may
answer, each error with the one error shape."""

from __future__ import annotations

import pytest

from shared.errors import ERROR_RESPONSES, error_body
from tests.support.edge import SERVICES, build_app

OPERATIONS = ("/healthz", "/readyz", "/metrics")
METHODS = {"get", "post", "put", "patch", "delete"}


def operations(service: str):
    document = build_app(service).openapi()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


@pytest.mark.parametrize("service", SERVICES)
def test_every_operation_declares_a_success_schema_and_the_error_statuses(service):
    missing: list[str] = []
    for path, method, operation in operations(service):
        responses = operation["responses"]
        success = [s for s in responses if s.startswith("2")]
        if len(success) != 1:
            missing.append(f"{method} {path}: success statuses {success}")
            continue
        content = responses[success[0]].get("content", {})
        schema = next(iter(content.values()), {}).get("schema")
        if path != "/metrics" and (not schema or schema == {}):
            missing.append(f"{method} {path}: no response schema")
        if path in OPERATIONS:
            continue
        for status in ERROR_RESPONSES:
            ref = (responses.get(str(status), {}).get("content", {})
                   .get("application/json", {}).get("schema", {}).get("$ref", ""))
            if not ref.endswith("/ErrorBody"):
                missing.append(f"{method} {path}: {status} not declared with ErrorBody")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("service", SERVICES)
def test_untyped_dict_answers_are_gone(service):
    untyped = [f"{method} {path}" for path, method, op in operations(service)
               for status, response in op["responses"].items() if status.startswith("2")
               for media in response.get("content", {}).values()
               if untyped_schema(media.get("schema", {}))]
    assert not untyped, untyped


def untyped_schema(schema: dict) -> bool:
    if schema.get("type") == "array":
        return untyped_schema(schema.get("items", {}))
    return schema.get("type") == "object" and "properties" not in schema and (
        schema.get("additionalProperties") in (None, True, {}))


def test_a_detail_never_overwrites_the_status_field_or_reason():
    body = error_body(409, "already reviewed", "report_id",
                      {"status": "accepted", "field": "x", "reason": "y", "report_id": "r1"})
    assert body == {"error": {"status": 409, "field": "report_id", "reason": "already reviewed",
                              "detail_status": "accepted", "detail_field": "x",
                              "detail_reason": "y", "report_id": "r1"}}
