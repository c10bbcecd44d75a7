"""The opt-in switch of scripts/infra.py, without starting a broker."""

from __future__ import annotations

import pytest

from scripts import infra


def test_secured_is_the_default_and_plaintext_properties_are_unchanged(monkeypatch, tmp_path):
    monkeypatch.delenv("TKM_KAFKA_SECURITY", raising=False)
    assert infra.security_mode() == infra.SASL_SSL
    monkeypatch.setenv("TKM_KAFKA_SECURITY", "plaintext")
    assert infra.security_mode() == infra.PLAINTEXT
    props = infra._kafka_properties(tmp_path, 19092, 19093)
    assert "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093" in props
    assert "sasl" not in props and "authorizer" not in props
    assert infra.kafka_client_env(tmp_path) == {"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
                                                "TKM_KAFKA_ALLOW_PLAINTEXT": "true"}
    monkeypatch.setenv("TKM_KAFKA_SECURITY", "SASL_SSL")
    assert infra.security_mode() == infra.SASL_SSL
    with pytest.raises(infra.InfraError, match="unknown Kafka security mode"):
        infra.security_mode("ssl")


def test_a_formatted_state_keeps_its_mode(tmp_path):
    (tmp_path / "kafka-data").mkdir()
    (tmp_path / "kafka-data" / "meta.properties").write_text("cluster.id=x\n")
    (tmp_path / "kafka.security").write_text(infra.SASL_SSL)
    with pytest.raises(infra.InfraError, match="formatted in sasl_ssl mode, not plaintext"):
        infra.start_kafka(tmp_path, infra.free_port(), security=infra.PLAINTEXT)


def test_secured_properties_deny_by_default_and_keep_the_controller_authenticated(tmp_path):
    props = infra._kafka_properties(tmp_path, 19092, 19093, infra.SASL_SSL)
    for line in ("listener.security.protocol.map=CLIENT:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
                 "sasl.mechanism.controller.protocol=PLAIN",
                 "listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512",
                 "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                 "allow.everyone.if.no.acl.found=false",
                 "super.users=User:broker;User:admin",
                 "ssl.keystore.type=PEM"):
        assert line in props.splitlines(), line
    assert "127.0.0.1:19093" in props and "0.0.0.0" not in props
