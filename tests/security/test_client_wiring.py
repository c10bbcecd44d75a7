"""How the project's own processes get their Kafka principal from the infrastructure's state,
without starting a broker (the suite's secured broker exercises the rest)."""

from __future__ import annotations

import pytest

from scripts import demo, infra
from scripts import services as service_processes
from scripts.services import own_kafka_env
from shared.kafka_security import kafka_security


def _secured_state(tmp_path):
    (tmp_path / "kafka.security").write_text(infra.SASL_SSL)
    infra._ensure_tls(tmp_path)
    for user in ("admin", *service_processes.SERVICES):
        infra.read_secret(tmp_path, user)
    return tmp_path


def test_a_service_process_is_handed_only_its_own_principal(tmp_path):
    env = {"PATH": "/bin", "KAFKA_USERNAME": "admin", "KAFKA_PASSWORD_FILE": "/a",
           **infra.kafka_client_env(_secured_state(tmp_path))}
    own = own_kafka_env(env, "groups")
    assert own["GROUPS_KAFKA_USERNAME"] == "groups"
    assert own["GROUPS_KAFKA_PASSWORD_FILE"].endswith("groups.password")
    assert own["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and own["KAFKA_CA_FILE"]
    assert not [k for k in own if k.startswith(("ADMIN_", "MENTORING_", "EVALUATION_",
                                                "RECRUITMENT_"))]
    assert "KAFKA_USERNAME" not in own and "KAFKA_PASSWORD_FILE" not in own
    assert own["PATH"] == "/bin"


def test_every_service_reads_its_own_principal_from_the_printed_env(tmp_path, monkeypatch):
    for key, value in infra.kafka_client_env(_secured_state(tmp_path)).items():
        monkeypatch.setenv(key, value)
    for name in ("KAFKA_USERNAME", "KAFKA_PASSWORD", "KAFKA_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    for service in service_processes.SERVICES:
        sec = kafka_security(service=service)
        assert sec.secured and sec.kafka_username == service
        assert sec.password() == infra.read_secret(tmp_path, service)
    assert kafka_security(service="admin").kafka_username == "admin"


def test_the_demo_reads_the_topics_as_the_admin(tmp_path, monkeypatch):
    monkeypatch.setenv("KAFKA_PASSWORD", "someone-else's")
    kwargs = demo._admin_client(_secured_state(tmp_path))
    assert kwargs["sasl_plain_username"] == "admin"
    assert kwargs["sasl_plain_password"] == infra.read_secret(tmp_path, "admin")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "kafka.security").write_text(infra.PLAINTEXT)
    assert demo._admin_client(plain) == {"security_protocol": "PLAINTEXT"}


def test_plaintext_needs_the_switch_that_infra_env_prints(tmp_path, monkeypatch):
    for name in ("KAFKA_SECURITY_PROTOCOL", "TKM_KAFKA_ALLOW_PLAINTEXT", "GROUPS_KAFKA_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    with pytest.raises(ValueError, match="TKM_KAFKA_ALLOW_PLAINTEXT"):
        kafka_security(service="groups")
    for key, value in infra.kafka_client_env(tmp_path).items():  # a plaintext state
        monkeypatch.setenv(key, value)
    assert kafka_security(service="groups").client_kwargs() == {"security_protocol": "PLAINTEXT"}


def test_infra_up_on_an_old_plaintext_state_says_how_to_get_the_secured_broker(
        tmp_path, monkeypatch, capsys):
    (tmp_path / "kafka-data").mkdir()
    (tmp_path / "kafka-data" / "meta.properties").write_text("cluster.id=x\n")
    monkeypatch.setenv("TKM_INFRA_DIR", str(tmp_path))
    monkeypatch.delenv("TKM_KAFKA_SECURITY", raising=False)
    monkeypatch.setattr(infra, "up", lambda *a, **k: (infra.Endpoints("127.0.0.1:1", "pg"), False))
    monkeypatch.setattr(infra, "kafka_version", lambda: "4.1.1")
    assert infra.main(["up"]) == 0
    err = capsys.readouterr().err
    assert "plaintext Kafka" in err and "make infra-down" in err and str(tmp_path) in err
    monkeypatch.setenv("TKM_KAFKA_SECURITY", "plaintext")
    assert infra.main(["up"]) == 0
    assert capsys.readouterr().err == ""
