"""Settings for every service, read from the environment (the same names locally, in tests and in
docker-compose). A service's own database URL is `<SERVICE>_DATABASE_URL` and its port
`<SERVICE>_HTTP_PORT`; every variable is matched by its exact name, so a generic `DATABASE_URL`
that a hosting platform injects is never picked up by mistake."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, create_model, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.pii import KEY_FILE_ENV, Keyring

DEV_SIGNING_KEY = "tkm-dev-signing-key-not-for-production-use"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# default HTTP ports of the local run; docker-compose maps the same ones
SERVICE_PORTS = {"recruitment": 8101, "groups": 8102, "mentoring": 8103, "evaluation": 8104}
# each service's policy/configuration file (read by services/<name>/config.py, not by this model;
# unset = the packaged default); listed here so docker-compose's checker knows them
CONFIG_FILE_ENV = {"recruitment": "RECRUITMENT_CONFIG_FILE", "groups": "GROUPS_CONFIG_FILE",
                   "mentoring": "MENTORING_CONFIG_FILE", "evaluation": "EVALUATION_POLICY_FILE"}
# a secret `NAME` may instead be read from the file named by `NAME_FILE` (compose secrets,
# /run/secrets/...); the file wins over the variable
FILE_SUFFIX = "_FILE"


def database_url_with_password(url: str, password: str | None, user: str | None = None) -> str:
    """`url` with `password` (and `user`) put in, percent-encoded, so any characters work
    (`s3cr/t+p@ss`); asyncpg and libpq decode them. No password: `url` unchanged."""
    if not password and not user:
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise ValueError("the database URL is not postgresql://host/database")
    host = parts.netloc.rpartition("@")[2]
    user = user if user is not None else parts.username
    if not user:
        raise ValueError("the database URL names no user for its password")
    credentials = quote(user, safe="")
    if password:
        credentials += ":" + quote(password, safe="")
    return urlunsplit((parts.scheme, f"{credentials}@{host}", parts.path, parts.query,
                       parts.fragment))


class ServiceSettings(BaseSettings):
    """Use `load_settings(service)`: the per-service subclass knows its variable names."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=True, populate_by_name=True)
    service_name: ClassVar[str] = ""

    # fail closed: only an explicit TKM_ENV=dev or test (the local scripts and the test suite
    # set it) lets the repository's dev signing key sign anything
    environment: Literal["dev", "test", "production"] = Field("production",
                                                              validation_alias="TKM_ENV")
    kafka_bootstrap_servers: str = Field("127.0.0.1:19092", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    database_url: str = ""
    # the database password apart from the URL (`<SERVICE>_DATABASE_PASSWORD`, or better its
    # `_FILE`): put into database_url, encoded
    database_password: SecretStr | None = None
    http_port: int = 0
    http_host: str = Field("127.0.0.1", validation_alias="TKM_HTTP_HOST")
    topic_partitions: int = Field(6, ge=1, validation_alias="TKM_TOPIC_PARTITIONS")
    # 3 on the three-broker cluster (`scripts.infra env` says so; docs/cluster.md): the topics a
    # service creates itself then get min.insync.replicas=2 too (shared.topics)
    topic_replication_factor: int = Field(1, ge=1, validation_alias="TKM_TOPIC_REPLICATION_FACTOR")
    auth_signing_key: SecretStr = Field(SecretStr(DEV_SIGNING_KEY),
                                        validation_alias="TKM_AUTH_SIGNING_KEY")
    # the longest a bearer token may live (shared.auth refuses longer ones); only lowers the 24 h
    token_max_hours: float = Field(24, gt=0, le=24, validation_alias="TKM_TOKEN_MAX_HOURS")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias="TKM_LOG_LEVEL")
    consumer_max_retries: int = Field(3, ge=0, validation_alias="TKM_CONSUMER_MAX_RETRIES")
    consumer_batch_size: int = Field(500, ge=1, validation_alias="TKM_CONSUMER_BATCH_SIZE")
    relay_batch_size: int = Field(500, ge=1, validation_alias="TKM_RELAY_BATCH_SIZE")
    relay_poll_interval_s: float = Field(0.2, gt=0, validation_alias="TKM_RELAY_POLL_INTERVAL_S")
    db_pool_max: int = Field(10, ge=2, validation_alias="TKM_DB_POOL_MAX")
    # overload (shared.shedding): requests in flight at once, how long one more may wait for a
    # slot, how long a command waits for a pooled connection; beyond them a 503
    max_in_flight: int = Field(64, ge=1, validation_alias="TKM_MAX_IN_FLIGHT")
    queue_wait_s: float = Field(0.5, ge=0, validation_alias="TKM_QUEUE_WAIT_S")
    db_acquire_timeout_s: float = Field(5.0, gt=0, validation_alias="TKM_DB_ACQUIRE_TIMEOUT_S")
    # an Idempotency-Key claim whose process died is taken over after this (shared.idempotency)
    idempotency_lease_s: float = Field(120, gt=0, validation_alias="TKM_IDEMPOTENCY_LEASE_S")
    idempotency_retention_hours: float = Field(
        24, gt=0, validation_alias="TKM_IDEMPOTENCY_RETENTION_HOURS")
    # housekeeping (shared.housekeeping explains why the inbox is kept so much longer)
    outbox_retention_hours: float = Field(168, gt=0, validation_alias="TKM_OUTBOX_RETENTION_HOURS")
    inbox_retention_days: float = Field(30, gt=0, validation_alias="TKM_INBOX_RETENTION_DAYS")
    housekeeping_interval_s: float = Field(3600, gt=0,
                                           validation_alias="TKM_HOUSEKEEPING_INTERVAL_S")
    housekeeping_batch_size: int = Field(1000, ge=1,
                                         validation_alias="TKM_HOUSEKEEPING_BATCH_SIZE")
    # shared.health: how often lag, backlog and dependencies are measured; past how many seconds
    # an unsent outbox row means "relay not publishing" and lag that does not go down "stuck"
    health_interval_s: float = Field(5.0, gt=0, validation_alias="TKM_HEALTH_INTERVAL_S")
    # start-up waits this long for Postgres and Kafka before serving anyway (the rest of the
    # start-up carries on in the background; /readyz says 503 until the database is migrated)
    startup_wait_s: float = Field(10.0, ge=0, validation_alias="TKM_STARTUP_WAIT_S")
    relay_stale_s: float = Field(60.0, gt=0, validation_alias="TKM_RELAY_STALE_S")
    consumer_stuck_s: float = Field(60.0, gt=0, validation_alias="TKM_CONSUMER_STUCK_S")
    # request bodies are refused (413) past these sizes before being read (shared.limits)
    max_body_bytes: int = Field(1024 * 1024, ge=1024, validation_alias="TKM_MAX_BODY_BYTES")
    max_csv_bytes: int = Field(32 * 1024 * 1024, ge=1024, validation_alias="TKM_MAX_CSV_BYTES")
    # the master key file of personal data (shared.pii; a compose secret): unset, the dev key,
    # only with TKM_ENV=dev or test
    pii_master_key_file: str | None = Field(None, validation_alias="TKM_PII_MASTER_KEY_FILE")

    def keyring(self) -> Keyring:
        """The personal-data keyring (read the key file once per process: shared.service).
        Raises PiiKeyError when the file is missing, malformed or refused."""
        return Keyring.from_environment({"TKM_ENV": self.environment,
                                         KEY_FILE_ENV: self.pii_master_key_file or ""})

    @property
    def kafka_bootstrap_list(self) -> list[str]:
        """KAFKA_BOOTSTRAP_SERVERS as a list: aiokafka splits a comma-separated string itself,
        but faststream's KafkaBroker takes a string for one single address (the three-broker
        cluster's `127.0.0.1:19092,127.0.0.1:19093,...` then fails to resolve)."""
        return [a.strip() for a in self.kafka_bootstrap_servers.split(",") if a.strip()]

    @model_validator(mode="after")
    def _checks(self) -> ServiceSettings:
        if not self.database_url:
            raise ValueError(f"{self.service_name.upper()}_DATABASE_URL is not set")
        if self.database_password is not None:
            self.database_url = database_url_with_password(
                self.database_url, self.database_password.get_secret_value())
        # the dev key is in the repository: it may only sign tokens for a service nobody else
        # can reach
        if self.auth_signing_key.get_secret_value() == DEV_SIGNING_KEY and (
                self.environment == "production" or self.http_host not in LOOPBACK):
            raise ValueError("TKM_AUTH_SIGNING_KEY must be set: the dev key is accepted only "
                             "with TKM_ENV=dev or test, on a loopback address")
        if len(self.auth_signing_key.get_secret_value()) < 32:
            raise ValueError("TKM_AUTH_SIGNING_KEY must be at least 32 characters (HS256)")
        return self

    @classmethod
    def env_names(cls, service: str) -> set[str]:
        """Every environment variable the service reads (checked against docker-compose.yml)."""
        model = settings_class(service)
        names = {f.validation_alias for f in model.model_fields.values()
                 if isinstance(f.validation_alias, str)}
        return names | {name + FILE_SUFFIX for name in secret_env_names(service)} | {
            CONFIG_FILE_ENV[service]}


@cache
def settings_class(service: str) -> type[ServiceSettings]:
    """The settings model of one service. Raises ValueError for an unknown service."""
    if service not in SERVICE_PORTS:
        raise ValueError(f"unknown service {service!r}; known: {', '.join(SERVICE_PORTS)}")
    prefix = service.upper()
    model = create_model(
        f"{service.title()}Settings", __base__=ServiceSettings,
        database_url=(str, Field("", validation_alias=f"{prefix}_DATABASE_URL")),
        database_password=(SecretStr | None,
                           Field(None, validation_alias=f"{prefix}_DATABASE_PASSWORD")),
        http_port=(int, Field(SERVICE_PORTS[service], validation_alias=f"{prefix}_HTTP_PORT")))
    model.service_name = service
    return model


def secret_env_names(service: str) -> set[str]:
    """The variables of secrets (SecretStr fields): each may come from a `<NAME>_FILE`."""
    model = settings_class(service)
    return {f.validation_alias for f in model.model_fields.values()
            if isinstance(f.validation_alias, str) and SecretStr in (
                f.annotation, *getattr(f.annotation, "__args__", ()))}


def _secrets_from_files(service: str, environ: Any = os.environ) -> dict[str, str]:
    """{field name: value} of the secrets whose `<NAME>_FILE` is set (trailing newline off)."""
    model = settings_class(service)
    found = {}
    for field_name, field in model.model_fields.items():
        name = field.validation_alias
        if name not in secret_env_names(service) or not environ.get(name + FILE_SUFFIX):
            continue
        try:
            found[field_name] = Path(environ[name + FILE_SUFFIX]).read_text(
                encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"invalid {service} settings: {name}{FILE_SUFFIX}: "
                             f"cannot read the file ({exc.strerror})") from None
    return found


def load_settings(service: str, **overrides: Any) -> ServiceSettings:
    """Settings of `service` from the environment (secrets from their `*_FILE` first); keyword
    overrides (by field name) win. Raises ValueError naming the variables at fault, never their
    values (a refused signing key or a database URL with its password must not reach a log)."""
    try:
        return settings_class(service)(**{**_secrets_from_files(service), **overrides})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False))
        raise ValueError(f"invalid {service} settings: {problems}") from None
