from pathlib import Path

import pytest
from pydantic import ValidationError

from services.recruitment.config import DEFAULT_FILE, ENV_VAR, load_config


def test_the_packaged_configuration_loads():
    config = load_config()
    assert config.eligibility.minimum_education in config.eligibility.education_levels
    assert config.eligibility.min_age <= config.eligibility.max_age
    assert "other" in config.screening.rejection_reasons


def test_an_environment_variable_names_another_file(tmp_path: Path, monkeypatch):
    other = tmp_path / "recruitment.toml"
    other.write_text(DEFAULT_FILE.read_text().replace('minimum_education = "D3"',
                                                      'minimum_education = "SMA"'))
    monkeypatch.setenv(ENV_VAR, str(other))
    assert load_config().eligibility.minimum_education == "SMA"


def test_a_minimum_education_that_is_no_level_is_refused(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text(DEFAULT_FILE.read_text().replace('minimum_education = "D3"',
                                                    'minimum_education = "PhD"'))
    with pytest.raises(ValidationError, match="not a level"):
        load_config(bad)
