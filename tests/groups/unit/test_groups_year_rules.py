"""Each group is decided by the rules of its own programme year (shipped 2021 and 2023)."""

from __future__ import annotations

from datetime import date

import pytest

from services.groups.config import load_config
from services.groups.domain import Group, group_header, member_from_input
from services.groups.handlers import funded
from shared.errors import RuleViolationError
from shared.nik import random_valid_nik
from tests.groups.groups_support import HASH, RULES_2021, RULES_2023, SEAL, rng

CONFIG = load_config()
RULES = {2021: RULES_2021, 2023: RULES_2023}


def header(year: int):
    return group_header(year, "pemula", "3201", "poultry", f"KUB {year}", CONFIG, RULES[year])


def aged(age: int, on: date):
    """A member `age` years old on `on` (born on 1 January; `on` is later in the year)."""
    nik = random_valid_nik(rng(), regency_code="3201", birth_date=date(on.year - age, 1, 1))
    return member_from_input(nik, "Anggota", None, on, HASH)


def people(n: int, on: date, age: int = 30):
    return [aged(age, on) for _ in range(n)]


def register(year: int, members, on: date) -> Group:
    return Group.register(header(year), members, seal=SEAL, external_ref=None,
                          rules=RULES[year],
                          registered_on=on, backdated=True)


def test_a_group_of_16_is_taken_in_2021_and_refused_in_2023():
    group = register(2021, people(16, date(2021, 3, 10)), date(2021, 3, 10))
    assert group.pending[0].member_count == 16
    with pytest.raises(RuleViolationError) as err:
        register(2023, people(16, date(2023, 3, 10)), date(2023, 3, 10))
    assert (err.value.field, err.value.reason) == ("members", "a 2023 group has 10 members, "
                                                              "not 16")


@pytest.mark.parametrize(("age", "in_2021", "in_2023"), [
    (17, False, True), (18, True, True), (55, True, True), (56, True, False), (60, True, False),
    (61, False, False)])
def test_ages_follow_the_year_measured_on_the_registration_date(age, in_2021, in_2023):
    for year, accepted, size in ((2021, in_2021, 16), (2023, in_2023, 10)):
        on = date(year, 3, 10)
        members = [*people(size - 1, on), aged(age, on)]
        if accepted:
            register(year, members, on)
        else:
            with pytest.raises(RuleViolationError) as err:
                register(year, members, on)
            assert err.value.field == f"members[{size - 1}].nik"
            assert f"is {age} years old on {on.isoformat()}" in err.value.reason


def test_a_56_year_old_of_2021_is_measured_in_2021_not_today():
    on = date(2021, 3, 10)
    members = [*people(15, on), aged(56, on)]
    register(2021, members, on)  # 56 then, ~61 today: accepted under 2021's 18-60


def test_funding_follows_the_year_ceiling_split_and_due_days():
    custom = RULES_2021.model_copy(update={"funding": RULES_2021.funding.model_copy(
        update={"ceiling_per_group": 15_000_000, "tools_percent": 70,
                "materials_percent": 30}),
        "lpj": RULES_2021.lpj.model_copy(update={"due_days": 30})})
    group = Group.register(header(2021), people(16, date(2021, 3, 1)), seal=SEAL,
                           external_ref=None,
                           rules=custom,
                           registered_on=date(2021, 3, 1), backdated=True)
    group.approve()
    with pytest.raises(RuleViolationError) as err:
        group.fund(tranche=1, amount=20_000_000, disbursed_on=date(2021, 4, 1),
                   budget_year=2021, rules=custom, today=date(2026, 1, 1))
    assert err.value.details["ceiling"] == 15_000_000
    event = group.fund(tranche=1, amount=15_000_000, disbursed_on=date(2021, 4, 1),
                       budget_year=2021, rules=custom, today=date(2026, 1, 1))
    assert event.lpj_due_on == date(2021, 5, 1)
    answer = funded(group, event, custom)
    assert (answer["planned_tools"], answer["planned_materials"]) == (10_500_000, 4_500_000)
    answer_2023 = funded(group, event, RULES_2023)
    assert (answer_2023["planned_tools"], answer_2023["planned_materials"]) == (9_000_000,
                                                                                6_000_000)


def test_the_registration_date_is_recorded_with_the_backdated_mark():
    group = register(2021, people(16, date(2021, 3, 10)), date(2021, 3, 10))
    roster = group.pending[1]
    assert (roster.registered_on, roster.backdated) == (date(2021, 3, 10), True)
