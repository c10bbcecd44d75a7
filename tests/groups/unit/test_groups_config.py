from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from services.groups.config import (
    DEFAULT_FILE,
    RULES_DIR,
    GroupYearRules,
    MemberRules,
    load_config,
    load_year_rules,
)


def test_the_operational_configuration_carries_the_catalogues_and_limits():
    config = load_config()
    assert {"poultry", "welding", "bridal_makeup"} <= config.business_type_codes()
    assert config.bulk.max_csv_rows == 250_000
    assert config.expo("other") is not None


def test_the_shipped_2023_rules_are_the_2023_guideline():
    rules = load_year_rules(RULES_DIR / "2023.toml")
    assert (rules.members.min_count, rules.members.max_count) == (10, 10)
    assert (rules.members.min_age, rules.members.max_age) == (17, 55)
    assert rules.members.age_reference == "registration_date"
    assert rules.funding.ceiling_per_group == 20_000_000
    assert (rules.funding.tools_percent, rules.funding.materials_percent) == (60, 40)
    assert rules.next_stage("pemula") == "lanjutan" and rules.next_stage("pengembangan") is None


def test_the_shipped_2021_rules_take_groups_of_16():
    rules = load_year_rules(RULES_DIR / "2021.toml")
    assert rules.members.max_count == 16
    assert (rules.members.min_age, rules.members.max_age) == (18, 60)
    assert rules.funding.ceiling_per_group == 20_000_000


def test_an_environment_variable_names_another_file(tmp_path, monkeypatch):
    other = tmp_path / "small.toml"
    other.write_text(DEFAULT_FILE.read_text().replace("max_items = 5_000", "max_items = 3"))
    monkeypatch.setenv("GROUPS_CONFIG_FILE", str(other))
    assert load_config().bulk.max_items == 3


def test_inconsistent_rules_are_refused(tmp_path):
    bad = tmp_path / "2023.toml"
    bad.write_text((RULES_DIR / "2023.toml").read_text().replace("tools_percent = 60",
                                                                  "tools_percent = 70"))
    with pytest.raises(ValidationError, match="must be 100"):
        load_year_rules(bad)
    data = load_year_rules(RULES_DIR / "2023.toml").model_dump()
    data["stages"] = ["pemula", "pemula"]
    with pytest.raises(ValidationError, match="each once"):
        GroupYearRules.model_validate(data)


@pytest.mark.parametrize(("reference", "registered", "day"), [
    ("registration_date", date(2021, 3, 9), date(2021, 3, 9)),
    ("year_start", date(2021, 3, 9), date(2021, 1, 1)),
    ("07-01", date(2021, 3, 9), date(2021, 7, 1)),
    ("02-29", date(2021, 3, 9), date(2021, 2, 28)),  # not a leap year
    ("02-29", date(2024, 3, 9), date(2024, 2, 29)),
])
def test_the_day_ages_are_measured_on(reference, registered, day):
    members = MemberRules(min_count=1, max_count=2, min_age=1, max_age=2, age_reference=reference)
    assert members.age_day(registered.year, registered) == day


@pytest.mark.parametrize("reference", ["today", "13-01", "02-30", "1-1"])
def test_an_unknown_age_reference_is_refused(reference):
    with pytest.raises(ValidationError, match="age_reference"):
        MemberRules(min_count=1, max_count=2, min_age=1, max_age=2, age_reference=reference)
