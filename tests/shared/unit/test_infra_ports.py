"""`infra up` after a crash brings the broker back on the address its services were given."""

from scripts.infra import _port_variable


def test_a_restart_keeps_the_saved_port_unless_a_variable_names_another(tmp_path, monkeypatch):
    saved = tmp_path / "kafka.bootstrap"
    monkeypatch.delenv("TKM_KAFKA_PORT", raising=False)
    assert _port_variable("TKM_KAFKA_PORT", saved, 19092) == 19092  # a fresh state
    saved.write_text("127.0.0.1:42269")
    assert _port_variable("TKM_KAFKA_PORT", saved, 19092) == 42269  # a restart
    monkeypatch.setenv("TKM_KAFKA_PORT", "29092")
    assert _port_variable("TKM_KAFKA_PORT", saved, 19092) == 29092  # the operator's choice


def test_free_ports_handed_out_by_one_process_never_repeat():
    from scripts.infra import free_port

    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
