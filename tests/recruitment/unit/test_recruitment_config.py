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


def test_a_programme_may_require_contact_fields_and_they_are_checked_when_given():
    from services.recruitment.commands import RegisterApplicant
    from services.recruitment.handlers import _registration
    from shared.errors import DomainError
    from tests.recruitment.recruitment_helpers import applicant

    body = applicant(2023, "3201")
    del body["phone"], body["email"]
    stock = load_config()
    assert stock.contact.required == ()
    registration = _registration(RegisterApplicant(**body), stock)
    assert (registration.phone, registration.email) == (None, None)
    strict = stock.model_copy(update={"contact": stock.contact.model_copy(
        update={"required": ("phone",)})})
    with pytest.raises(DomainError) as refused:
        _registration(RegisterApplicant(**body), strict)
    assert refused.value.field == "phone"
    given = _registration(RegisterApplicant(**body, phone="0812 3456 7890"), strict)
    assert given.phone == "+6281234567890"
