"""The groups service's four-eyes rules (issue 18, item 1): a section of each year's programme
rules whose default itself requires four eyes, shipped for 2021 and 2023; and the migration that
holds the kernel's approval requests table."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.groups.config import (
    ACCEPT_LPJ,
    CHANGE_TRANCHE,
    FUND,
    GroupYearRules,
    default_four_eyes,
)
from services.groups.handlers import four_eyes_of, funding_command, is_pending
from services.groups.projections import REBUILD
from shared.approvals import APPROVAL_TABLES, APPROVALS_SCHEMA
from shared.auth import Role
from tests.groups.groups_support import RULES_2021, RULES_2023

MIGRATIONS = Path(__file__).parents[3] / "services" / "groups" / "migrations"


def test_the_migration_is_the_kernel_s_schema():
    assert (MIGRATIONS / "005_approvals.sql").read_text() == APPROVALS_SCHEMA


def test_the_shipped_years_need_four_eyes_on_every_money_command():
    for rules in (RULES_2021, RULES_2023):
        section = rules.four_eyes
        assert set(section.commands) == {FUND, CHANGE_TRANCHE, ACCEPT_LPJ}
        for command in (FUND, CHANGE_TRANCHE):
            rule = section.rule(command, 1)  # threshold 0: every amount
            assert rule is not None
            assert (rule.makers, rule.checkers) == ([Role.ADMIN, Role.PROVINCE], [Role.ADMIN])
        lpj = section.rule(ACCEPT_LPJ, None)
        assert lpj is not None and lpj.checkers == [Role.PROVINCE, Role.ADMIN]
        assert section.expires_after_days == 7
        assert section == default_four_eyes()


def test_a_version_adopted_before_the_section_existed_is_read_with_four_eyes():
    older = RULES_2023.model_dump(mode="json", exclude={"four_eyes"})
    rules = GroupYearRules.model_validate(older)
    assert rules.four_eyes == default_four_eyes()
    assert rules.four_eyes.rule(FUND, 20_000_000) is not None
    assert rules.four_eyes.rule(ACCEPT_LPJ) is not None


@pytest.mark.parametrize("commands, where", [
    ({"fund": {"makers": ["tks"], "checkers": ["ministry_admin"]}}, "makers"),
    ({"fund": {"makers": ["ministry_admin"], "checkers": ["auditor"]}}, "checkers"),
    ({"fund": {"makers": ["ministry_admin"], "checkers": []}}, "checkers"),
    ({"close_year": {"makers": ["ministry_admin"], "checkers": ["ministry_admin"]}}, "unknown"),
])
def test_only_deciding_roles_and_the_service_s_commands_are_adopted(commands, where):
    data = RULES_2023.model_dump(mode="json")
    data["four_eyes"]["commands"] = commands
    with pytest.raises(ValidationError) as refused:
        GroupYearRules.model_validate(data)
    assert where in str(refused.value)


def test_fundings_name_their_command_and_the_flow_carries_out_each():
    assert (funding_command(1), funding_command(2), funding_command(3)) == (
        FUND, CHANGE_TRANCHE, CHANGE_TRANCHE)
    assert set(four_eyes_of(None).executors) == {FUND, CHANGE_TRANCHE, ACCEPT_LPJ}
    assert is_pending({"state": "pending", "request_id": "r"})
    assert not is_pending({"status": "funded", "group_id": "g"})


def test_the_rebuild_swaps_the_approval_requests_in():
    assert set(APPROVAL_TABLES) <= set(REBUILD.tables)
