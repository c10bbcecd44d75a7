"""Four eyes on the year-end close as part of evaluation's rules per year (issue 18): the
migration is the kernel's schema, the default and the shipped years want a ministry admin to ask
and another to grant, and a version adopted before the section existed is read with the
default, never letting the close through alone."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.evaluation.app import REBUILD, build_spec
from services.evaluation.config import (
    CLOSE_YEAR,
    RULES_DIR,
    Policy,
    default_four_eyes,
    load_policy,
)
from shared.approvals import APPROVAL_TABLES, APPROVALS_SCHEMA
from shared.auth import Role

MIGRATIONS = Path(__file__).parents[3] / "services" / "evaluation" / "migrations"


def test_the_approvals_migration_is_the_kernels_schema():
    [migration] = MIGRATIONS.glob("*_approvals.sql")
    assert migration.read_text() == APPROVALS_SCHEMA


def test_the_default_wants_one_admin_to_ask_and_another_to_grant_the_close():
    rule = default_four_eyes().rule(CLOSE_YEAR)
    assert rule is not None
    assert (rule.makers, rule.checkers, rule.threshold) == ([Role.ADMIN], [Role.ADMIN], 0)
    assert default_four_eyes().expires_after_days == 7


@pytest.mark.parametrize("year", [2021, 2023])
def test_the_shipped_years_want_four_eyes_for_the_close_as_the_default(year):
    policy = load_policy(RULES_DIR / f"{year}.toml")
    assert policy.four_eyes == default_four_eyes()
    assert "other" in policy.four_eyes.reason_codes


def test_rules_adopted_before_the_section_existed_are_read_with_the_default():
    stored = load_policy().model_dump(mode="json")
    del stored["four_eyes"]
    assert Policy.model_validate(stored).four_eyes.rule(CLOSE_YEAR) is not None


def test_only_admins_and_provincial_officers_may_ask_or_check():
    stored = load_policy().model_dump(mode="json")
    stored["four_eyes"]["commands"][CLOSE_YEAR]["checkers"] = ["agency"]
    with pytest.raises(ValidationError, match="agency may not make or check"):
        Policy.model_validate(stored)


def test_the_service_mounts_the_approvals_routes_and_sweeper_and_rebuilds_the_requests():
    spec = build_spec()
    paths = {route.path for router in spec.routers for route in router.routes}
    assert {"/approvals", "/approvals/{request_id}/grant", "/approvals/{request_id}/reject",
            "/approvals/grant"} <= paths
    assert "approvals_sweeper" in [job.__name__ for job in spec.background]
    assert set(APPROVAL_TABLES) <= set(REBUILD.tables)
    # an operator's override policy decides every year, its four-eyes section too
    fixed = build_spec(policy=load_policy())
    assert "approvals_sweeper" in [job.__name__ for job in fixed.background]
