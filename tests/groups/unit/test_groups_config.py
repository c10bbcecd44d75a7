from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.groups.config import DEFAULT_FILE, load_config


def test_the_default_configuration_carries_the_2023_norms():
    config = load_config()
    assert (config.members.min_count, config.members.max_count) == (10, 16)
    assert (config.members.min_age, config.members.max_age) == (17, 55)
    assert config.funding.ceiling_per_group == 20_000_000
    assert (config.funding.tools_percent, config.funding.materials_percent) == (60, 40)
    assert {"poultry", "welding", "bridal_makeup"} <= config.business_type_codes()
    assert config.next_stage("pemula") == "lanjutan" and config.next_stage("pengembangan") is None


def test_an_environment_variable_names_another_file(tmp_path, monkeypatch):
    other = tmp_path / "small.toml"
    other.write_text(DEFAULT_FILE.read_text().replace("min_count = 10", "min_count = 3"))
    monkeypatch.setenv("GROUPS_CONFIG_FILE", str(other))
    assert load_config().members.min_count == 3


def test_an_inconsistent_file_is_refused(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(DEFAULT_FILE.read_text().replace("tools_percent = 60", "tools_percent = 70"))
    with pytest.raises(ValidationError, match="must be 100"):
        load_config(bad)
