"""How a Kafka client of the project authenticates: one settings model, read from the
environment, and the keyword arguments it gives aiokafka's clients and faststream's broker.

Variables (each may be given per service as `<SERVICE>_KAFKA_...`, e.g. `GROUPS_KAFKA_USERNAME`,
which wins over the plain name, so four services can run from one shell):

    KAFKA_SECURITY_PROTOCOL   SASL_SSL (default) or PLAINTEXT
    KAFKA_SASL_MECHANISM      SCRAM-SHA-512 (the only one the broker offers)
    KAFKA_USERNAME            the principal (a service's name, an agency's name)
    KAFKA_PASSWORD            the password, or
    KAFKA_PASSWORD_FILE       a file holding it (preferred: `infra env` prints file paths only)
    KAFKA_CA_FILE             PEM of the CA that signed the broker's certificate (the system's
                              trust store when unset)
    TKM_KAFKA_ALLOW_PLAINTEXT true allows PLAINTEXT: the explicit development switch, which the
                              local plaintext infra prints in `python -m scripts.infra env`

Refused at start-up (a `ValueError` naming the variable): PLAINTEXT without the switch, SASL_SSL
without a username or password, a password file or CA file that cannot be read.

Wiring it (for the lead; nothing in the kernel uses it yet):

    from shared.kafka_security import kafka_security
    sec = kafka_security(service=spec.name)          # once per process, fails fast

    # shared/service.py, the faststream broker:
    KafkaBroker(settings.kafka_bootstrap_servers, **sec.faststream_kwargs(), ...)
    # shared/outbox.py OutboxRelay._new_producer and the DLQ producer:
    AIOKafkaProducer(bootstrap_servers=..., acks="all", enable_idempotence=True,
                     **sec.producer_kwargs(), ...)
    # shared/projections.py, shared/dlq.py, scripts/rebuild.py consumers:
    AIOKafkaConsumer(..., **sec.consumer_kwargs())
    # shared/topics.py ensure_topics, the lag gauges, readiness probes:
    AIOKafkaAdminClient(bootstrap_servers=..., **sec.admin_kwargs())

In production the topics already exist (the admin creates them from shared/kafka_acls.py), so
`ensure_topics` only lists them; a service principal has no Create right.
"""

from __future__ import annotations

import os
import ssl
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class KafkaSecurity(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore",
                                      frozen=True)

    kafka_security_protocol: SecurityProtocol = SecurityProtocol.SASL_SSL
    kafka_sasl_mechanism: str = Field("SCRAM-SHA-512", pattern=r"^SCRAM-SHA-512$")
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    kafka_password_file: Path | None = None
    kafka_ca_file: Path | None = None
    tkm_kafka_allow_plaintext: bool = False

    @model_validator(mode="after")
    def _check(self) -> KafkaSecurity:
        if self.kafka_security_protocol is SecurityProtocol.PLAINTEXT:
            if not self.tkm_kafka_allow_plaintext:
                raise ValueError("KAFKA_SECURITY_PROTOCOL=PLAINTEXT is for local development "
                                 "only: set TKM_KAFKA_ALLOW_PLAINTEXT=true to allow it")
            return self
        if not self.kafka_username:
            raise ValueError("KAFKA_USERNAME is not set (SASL_SSL needs a principal)")
        if self.kafka_password is None and self.kafka_password_file is None:
            raise ValueError("neither KAFKA_PASSWORD nor KAFKA_PASSWORD_FILE is set")
        if self.kafka_password_file is not None and not os.access(self.kafka_password_file,
                                                                  os.R_OK):
            raise ValueError(f"KAFKA_PASSWORD_FILE {self.kafka_password_file} cannot be read")
        if self.kafka_ca_file is not None and not os.access(self.kafka_ca_file, os.R_OK):
            raise ValueError(f"KAFKA_CA_FILE {self.kafka_ca_file} cannot be read")
        return self

    @property
    def secured(self) -> bool:
        return self.kafka_security_protocol is SecurityProtocol.SASL_SSL

    def password(self) -> str:
        if self.kafka_password is not None:
            return self.kafka_password.get_secret_value()
        assert self.kafka_password_file is not None
        # read at each connection set-up: a rotated file is picked up by the next client
        return self.kafka_password_file.read_text().strip()

    def ssl_context(self) -> ssl.SSLContext:
        from aiokafka.helpers import create_ssl_context

        return create_ssl_context(cafile=str(self.kafka_ca_file) if self.kafka_ca_file else None)

    def client_kwargs(self) -> dict[str, Any]:
        """kwargs for any aiokafka client (producer, consumer, admin)."""
        if not self.secured:
            return {"security_protocol": "PLAINTEXT"}
        return {"security_protocol": "SASL_SSL", "sasl_mechanism": self.kafka_sasl_mechanism,
                "sasl_plain_username": self.kafka_username,
                "sasl_plain_password": self.password(), "ssl_context": self.ssl_context()}

    def producer_kwargs(self) -> dict[str, Any]:
        return self.client_kwargs()

    def consumer_kwargs(self) -> dict[str, Any]:
        return self.client_kwargs()

    def admin_kwargs(self) -> dict[str, Any]:
        return self.client_kwargs()

    def faststream_security(self) -> Any:
        """`security=` for faststream's KafkaBroker (None in plaintext)."""
        if not self.secured:
            return None
        from faststream.security import SASLScram512

        return SASLScram512(username=self.kafka_username or "", password=self.password(),
                            ssl_context=self.ssl_context(), use_ssl=True)

    def faststream_kwargs(self) -> dict[str, Any]:
        """kwargs for `KafkaBroker(bootstrap, **...)`."""
        security = self.faststream_security()
        return {"security": security} if security is not None else {}


_FIELDS = ("KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM", "KAFKA_USERNAME", "KAFKA_PASSWORD",
           "KAFKA_PASSWORD_FILE", "KAFKA_CA_FILE")


def kafka_security(service: str | None = None, **overrides: Any) -> KafkaSecurity:
    """The settings from the environment; `<SERVICE>_KAFKA_*` variables of `service` win over
    the plain ones; `overrides` (field names) win over both (tests)."""
    values: dict[str, Any] = {}
    if service:
        prefix = service.upper().replace("-", "_") + "_"
        for name in _FIELDS:
            if (value := os.environ.get(prefix + name)) is not None:
                values[name.lower()] = value
        # a service's own password file replaces a shared KAFKA_PASSWORD, and vice versa
        if "kafka_password_file" in values and "kafka_password" not in values:
            values["kafka_password"] = None
        if "kafka_password" in values and "kafka_password_file" not in values:
            values["kafka_password_file"] = None
    values.update(overrides)
    return KafkaSecurity(**values)
