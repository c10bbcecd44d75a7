"""The client settings helper and the ACL declaration, without a broker."""

from __future__ import annotations

import ast
import ssl
from pathlib import Path

import pytest

from shared import kafka_acls as acls
from shared.kafka_security import KafkaSecurity, kafka_security

ROOT = Path(__file__).resolve().parents[2]
_ENV = ("KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM", "KAFKA_USERNAME", "KAFKA_PASSWORD",
        "KAFKA_PASSWORD_FILE", "KAFKA_CA_FILE", "TKM_KAFKA_ALLOW_PLAINTEXT")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"GROUPS_{name}", raising=False)


def _ca(tmp_path: Path) -> Path:
    from scripts.infra import _ensure_tls

    return _ensure_tls(tmp_path)["ca"]


def test_plaintext_needs_the_explicit_development_switch(monkeypatch):
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    with pytest.raises(ValueError, match="TKM_KAFKA_ALLOW_PLAINTEXT"):
        kafka_security()
    monkeypatch.setenv("TKM_KAFKA_ALLOW_PLAINTEXT", "true")
    sec = kafka_security()
    assert sec.client_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert sec.faststream_kwargs() == {}


def test_the_default_is_sasl_ssl_and_refuses_missing_credentials(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="KAFKA_USERNAME"):
        kafka_security()
    monkeypatch.setenv("KAFKA_USERNAME", "groups")
    with pytest.raises(ValueError, match="KAFKA_PASSWORD"):
        kafka_security()
    monkeypatch.setenv("KAFKA_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="cannot be read"):
        kafka_security()


def test_kwargs_for_aiokafka_and_faststream(monkeypatch, tmp_path):
    from faststream.security import SASLScram512

    ca = _ca(tmp_path)
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_USERNAME", "someone")
    monkeypatch.setenv("KAFKA_PASSWORD", "shared-one")
    monkeypatch.setenv("KAFKA_CA_FILE", str(ca))
    # a service's own variables win over the shared ones
    monkeypatch.setenv("GROUPS_KAFKA_USERNAME", "groups")
    monkeypatch.setenv("GROUPS_KAFKA_PASSWORD_FILE", str(pw))
    sec = kafka_security(service="groups")
    kwargs = sec.producer_kwargs()
    assert {k: v for k, v in kwargs.items() if k != "ssl_context"} == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "groups", "sasl_plain_password": "s3cret"}
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert sec.consumer_kwargs().keys() == sec.admin_kwargs().keys() == kwargs.keys()
    broker_security = sec.faststream_kwargs()["security"]
    assert isinstance(broker_security, SASLScram512)
    assert (broker_security.username, broker_security.password) == ("groups", "s3cret")
    assert broker_security.use_ssl and broker_security.ssl_context is not None
    # the password is not in the model's repr
    assert "shared-one" not in repr(kafka_security())
    with pytest.raises(ValueError):
        KafkaSecurity(kafka_username="x", kafka_password="y", kafka_sasl_mechanism="PLAIN")


def test_declared_consumes_match_the_services():
    from shared import topics

    names = {"RECRUITMENT": topics.RECRUITMENT, "GROUPS": topics.GROUPS,
             "MENTORING": topics.MENTORING, "EVALUATION": topics.EVALUATION}
    assert acls.CONTRACT_TOPICS == topics.CONTRACT_TOPICS
    for service, declared in acls.SERVICES.items():
        tree = ast.parse((ROOT / "services" / service / "app.py").read_text())
        consumes: tuple[str, ...] = ()
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "consumes":
                consumes = tuple(names[e.id] for e in node.value.elts)
        assert set(consumes) == set(declared), service
        assert acls.dead_letter_topic(service) == topics.dead_letter_topic(service)


def test_agencies_never_write_and_never_see_internal_topics():
    for binding in acls.agency_acls("bps"):
        assert binding.operation in (acls.Operation.READ, acls.Operation.DESCRIBE)
        if binding.resource_type is acls.ResourceType.TOPIC:
            assert binding.resource_name in acls.CONTRACT_TOPICS
            assert binding.pattern is acls.PatternType.LITERAL
        else:
            assert (binding.resource_type, binding.resource_name, binding.pattern) == (
                acls.ResourceType.GROUP, "bps.", acls.PatternType.PREFIXED)
    for bad in ("groups", "groups-x", "admin", "Bps", "b", "bps.x", "tkm-bps", "x" * 40):
        with pytest.raises(ValueError):
            acls.check_agency_name(bad)


def test_services_write_only_their_own_topics_and_create_nothing():
    for service in acls.SERVICES:
        own = {acls.own_topic(service), acls.dead_letter_topic(service)}
        for b in acls.service_acls(service):
            assert b.operation not in (acls.Operation.CREATE, acls.Operation.ALL,
                                       acls.Operation.ALTER, acls.Operation.DELETE)
            if b.operation is acls.Operation.WRITE:
                assert b.resource_name in own
            assert b.resource_type is not acls.ResourceType.CLUSTER
    assert all(t.config["retention.ms"] == "-1" for t in acls.declared_topics(partitions=3))
