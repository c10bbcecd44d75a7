"""The repository's dev signing key signs only behind an explicit development switch, and no
refused secret reaches an error message."""

import pytest

from shared.settings import DEV_SIGNING_KEY, load_settings

URL = "postgresql://tkm:db-password-123@h/groups"


def test_the_dev_key_needs_the_explicit_development_switch(monkeypatch):
    monkeypatch.delenv("TKM_AUTH_SIGNING_KEY", raising=False)
    monkeypatch.delenv("TKM_ENV", raising=False)
    with pytest.raises(ValueError, match="TKM_ENV=dev or test"):
        load_settings("groups", database_url=URL)
    for env in ("dev", "test"):
        monkeypatch.setenv("TKM_ENV", env)
        assert load_settings("groups", database_url=URL).environment == env
    monkeypatch.setenv("TKM_HTTP_HOST", "0.0.0.0")  # even in dev: not where others reach it
    with pytest.raises(ValueError, match="loopback"):
        load_settings("groups", database_url=URL)


def test_a_refused_key_or_setting_is_named_never_echoed(monkeypatch):
    monkeypatch.setenv("TKM_ENV", "production")
    weak = "hunter2-weak-signing-key"
    monkeypatch.setenv("TKM_AUTH_SIGNING_KEY", weak)
    with pytest.raises(ValueError) as refused:
        load_settings("groups", database_url=URL)
    message = str(refused.value) + repr(refused.value.__cause__) + repr(refused.value.__context__)
    assert "TKM_AUTH_SIGNING_KEY" in message
    assert weak not in message and "db-password-123" not in message
    monkeypatch.setenv("TKM_AUTH_SIGNING_KEY", DEV_SIGNING_KEY)
    with pytest.raises(ValueError) as refused:
        load_settings("groups", database_url=URL)
    assert DEV_SIGNING_KEY not in str(refused.value) and "db-password-123" not in str(refused.value)
    monkeypatch.setenv("TKM_AUTH_SIGNING_KEY", "x" * 40)
    monkeypatch.setenv("TKM_TOKEN_MAX_HOURS", "9999")
    with pytest.raises(ValueError, match="TKM_TOKEN_MAX_HOURS") as refused:
        load_settings("groups", database_url=URL)
    assert "9999" not in str(refused.value)
