import pytest

from services.evaluation.config import INDICATORS, POLICY_FILE_ENV, PolicyError, load_policy

VALID = """
version = "test-7"
threshold = 55
minimum_months = 4
[indicators.reporting_compliance]
weight = 0.4
cap = 1
[indicators.revenue_growth]
weight = 0.2
cap = 0.5
[indicators.new_workers]
weight = 0.2
cap = 3
[indicators.lpj_completion]
weight = 0.1
cap = 1
[indicators.groups_active]
weight = 0.1
cap = 1
"""


def test_the_packaged_policy_is_valid_and_names_every_indicator():
    policy = load_policy()
    assert policy.version
    assert set(policy.indicators) == set(INDICATORS)
    assert sum(r.weight for r in policy.indicators.values()) == pytest.approx(1.0)


def test_an_environment_variable_names_another_policy_file(tmp_path, monkeypatch):
    path = tmp_path / "policy.toml"
    path.write_text(VALID)
    monkeypatch.setenv(POLICY_FILE_ENV, str(path))
    policy = load_policy()
    assert (policy.version, policy.threshold, policy.minimum_months) == ("test-7", 55, 4)
    assert policy.indicators["new_workers"].cap == 3


@pytest.mark.parametrize(("text", "reason"), [
    (VALID.replace("weight = 0.4", "weight = 0.5"), "add up to 1"),
    (VALID.split("[indicators.groups_active]")[0].replace("weight = 0.4", "weight = 0.5"),
     "groups_active"),
    (VALID.replace("cap = 0.5", "cap = 0"), "cap"),
    (VALID.replace("threshold = 55", "threshold = 120"), "threshold"),
    (VALID + "\n[indicators.charm]\nweight = 0\ncap = 1\n", "charm"),
    ("version = ", "cannot read"),
])
def test_an_invalid_policy_is_refused_with_the_reason(tmp_path, text, reason):
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=reason):
        load_policy(path)


def test_a_missing_policy_file_is_refused(tmp_path):
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "nowhere.toml")
