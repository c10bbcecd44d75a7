"""Property-based requests against every operation of the four running services, as the
ministry and as an agency: no answer is a 5xx, and every answer matches what the OpenAPI
document declares (status, content type, schema). Few examples, derandomized, in `make test`;
many in `make fuzz`."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.auth import Role
from tests.fuzz.tally import EXAMPLES, TALLY, THOROUGH
from tests.support.edge import SERVICES, bearer, build_app

pytestmark = pytest.mark.integration

TOKENS = {"ministry_admin": bearer(Role.ADMIN), "agency": bearer(Role.AGENCY)}
if THOROUGH:  # `make fuzz`: the scoped roles too
    TOKENS |= {"provincial_officer": bearer(Role.PROVINCE, province_code="32"),
               "tks": bearer(Role.TKS, tks_id="00000000-0000-4000-8000-000000000001")}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
RUN = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
               suppress_health_check=list(HealthCheck), print_blob=False,
               phases=[Phase.explicit, Phase.generate] if THOROUGH else [Phase.generate])


def schema(service: str):
    """The document the service serves at /openapi.json, as `create_app` builds it."""
    return schemathesis.openapi.from_dict(build_app(service).openapi())


recruitment, groups, mentoring, evaluation = (schema(s) for s in SERVICES)


def exercise(case, running, service: str) -> None:
    TALLY.operations.add(f"{service} {case.operation.label}")
    TALLY.cases += 1
    for who, headers in TOKENS.items():
        response = case.call(base_url=running.urls[service], headers=headers, timeout=30)
        TALLY.examples += 1
        TALLY.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except AssertionError as exc:
            TALLY.failures.append(f"{who} {case.method.upper()} {case.path} -> "
                                  f"{response.status_code}: {str(exc).splitlines()[0][:200]}")
            raise


@recruitment.parametrize()
@RUN
def test_recruitment_answers_as_documented_and_never_5xx(case, fuzzed_services):
    exercise(case, fuzzed_services, "recruitment")


@groups.parametrize()
@RUN
def test_groups_answers_as_documented_and_never_5xx(case, fuzzed_services):
    exercise(case, fuzzed_services, "groups")


@mentoring.parametrize()
@RUN
def test_mentoring_answers_as_documented_and_never_5xx(case, fuzzed_services):
    exercise(case, fuzzed_services, "mentoring")


@evaluation.parametrize()
@RUN
def test_evaluation_answers_as_documented_and_never_5xx(case, fuzzed_services):
    exercise(case, fuzzed_services, "evaluation")
