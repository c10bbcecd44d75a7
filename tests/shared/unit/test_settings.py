import pytest

from shared.settings import ServiceSettings, load_settings


def test_each_service_reads_its_own_database_url(monkeypatch):
    monkeypatch.setenv("GROUPS_DATABASE_URL", "postgresql://h/groups")
    monkeypatch.setenv("DATABASE_URL", "postgresql://h/wrong")
    settings = load_settings("groups")
    assert settings.database_url == "postgresql://h/groups"
    assert settings.http_port == 8102
    assert "GROUPS_DATABASE_URL" in ServiceSettings.env_names("groups")
    assert "DATABASE_URL" not in ServiceSettings.env_names("groups")


def test_the_dev_key_is_refused_on_a_reachable_address(monkeypatch):
    monkeypatch.delenv("TKM_AUTH_SIGNING_KEY", raising=False)
    assert load_settings("groups", database_url="postgresql://h/g").http_host == "127.0.0.1"
    monkeypatch.setenv("TKM_HTTP_HOST", "0.0.0.0")
    with pytest.raises(ValueError, match="dev key is accepted only"):
        load_settings("groups", database_url="postgresql://h/g")


def test_production_refuses_the_dev_signing_key(monkeypatch):
    monkeypatch.setenv("TKM_ENV", "production")
    with pytest.raises(ValueError, match="TKM_AUTH_SIGNING_KEY"):
        load_settings("groups", database_url="postgresql://h/groups")
    monkeypatch.setenv("TKM_AUTH_SIGNING_KEY", "a-real-production-secret-of-32-bytes-or-more")
    assert load_settings("groups", database_url="postgresql://h/groups").environment == "production"


def test_unknown_service_and_missing_database_are_errors(monkeypatch):
    monkeypatch.delenv("EVALUATION_DATABASE_URL", raising=False)
    with pytest.raises(ValueError, match="unknown service"):
        load_settings("payroll")
    with pytest.raises(ValueError, match="EVALUATION_DATABASE_URL is not set"):
        load_settings("evaluation")
