"""The console's settings, read from the environment (the services' names where they overlap)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import DEV_SIGNING_KEY, LOOPBACK, SERVICE_PORTS

SERVICES = tuple(SERVICE_PORTS)
CONSOLE_PORT = 8105


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=True, populate_by_name=True)

    environment: Literal["dev", "test", "production"] = Field("production",
                                                              validation_alias="TKM_ENV")
    database_url: str = Field("", validation_alias="CONSOLE_DATABASE_URL")
    http_host: str = Field("127.0.0.1", validation_alias="TKM_HTTP_HOST")
    http_port: int = Field(CONSOLE_PORT, validation_alias="CONSOLE_HTTP_PORT")
    kafka_bootstrap_servers: str = Field("127.0.0.1:19092",
                                         validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    # the console reads like an agency: its principal's groups begin with "<principal>."
    # (default "<CONSOLE_KAFKA_USERNAME>.read-model")
    group_id: str | None = Field(None, validation_alias="CONSOLE_GROUP_ID")
    auth_signing_key: SecretStr = Field(SecretStr(DEV_SIGNING_KEY),
                                        validation_alias="TKM_AUTH_SIGNING_KEY")
    # the service tokens minted for a signed-in user live this long (one page's calls)
    service_token_minutes: float = Field(5, gt=0, le=60,
                                         validation_alias="CONSOLE_SERVICE_TOKEN_MINUTES")
    session_hours: float = Field(8, gt=0, le=24, validation_alias="CONSOLE_SESSION_HOURS")
    # Secure cookies: browsers accept them from https and from http://localhost/127.0.0.1
    cookie_secure: bool = Field(True, validation_alias="CONSOLE_COOKIE_SECURE")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias="TKM_LOG_LEVEL")
    service_urls: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _checks(self) -> ConsoleSettings:
        if not self.database_url:
            base = os.environ.get("TKM_POSTGRES_URL")
            if not base:
                raise ValueError("CONSOLE_DATABASE_URL is not set")
            self.database_url = f"{base.rstrip('/')}/console"
        if self.auth_signing_key.get_secret_value() == DEV_SIGNING_KEY and (
                self.environment == "production" or self.http_host not in LOOPBACK):
            raise ValueError("TKM_AUTH_SIGNING_KEY must be set: the dev key is accepted only "
                             "with TKM_ENV=dev or test, on a loopback address")
        if len(self.auth_signing_key.get_secret_value()) < 32:
            raise ValueError("TKM_AUTH_SIGNING_KEY must be at least 32 characters (HS256)")
        if not self.group_id:
            principal = os.environ.get("CONSOLE_KAFKA_USERNAME") or os.environ.get(
                "KAFKA_USERNAME") or "console"
            self.group_id = f"{principal}.read-model"
        for name in SERVICES:
            if name not in self.service_urls:
                given = os.environ.get(f"{name.upper()}_URL")
                port = os.environ.get(f"{name.upper()}_HTTP_PORT") or SERVICE_PORTS[name]
                self.service_urls[name] = (given or f"http://127.0.0.1:{port}").rstrip("/")
        return self


def load_settings(**overrides) -> ConsoleSettings:
    """Raises ValueError naming the variable at fault (never a secret's value)."""
    from pydantic import ValidationError

    try:
        return ConsoleSettings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
                             for e in exc.errors(include_input=False, include_url=False))
        raise ValueError(f"invalid console settings: {problems}") from None
