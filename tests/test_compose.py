"""docker-compose.yml, infra/postgres/init.sql and the Dockerfile checked against shared.settings.

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

from shared.settings import DEV_SIGNING_KEY, SERVICE_PORTS, ServiceSettings, load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
INIT_SQL = ROOT / "infra" / "postgres" / "init.sql"
DOCKERFILE = ROOT / "Dockerfile"

APP_SERVICES = tuple(SERVICE_PORTS)  # recruitment, groups, mentoring, evaluation
INFRA_SERVICES = ("kafka", "postgres")
KAFKA_BOOTSTRAP = "kafka:9092"

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


def settings_env_names() -> set[str]:
    """Every variable ServiceSettings could read, for any service, scoped or not."""
    names = {"TKM_SERVICE_NAME", "SERVICE_NAME", "DATABASE_URL", "HTTP_PORT"}
    for name in APP_SERVICES:
        names |= ServiceSettings.env_names(name)
    return names


# --- the checks -------------------------------------------------------------------------------

def check_services_exist(doc: dict) -> list[str]:
    services = doc.get("services") or {}
    return [f"service {name!r} is missing" for name in (*INFRA_SERVICES, *APP_SERVICES)
            if name not in services]


def check_env_names(doc: dict, name: str) -> list[str]:
    allowed = ServiceSettings.env_names(name)
    return [f"{name}: {var} is not read by ServiceSettings (misspelt?)"
            for var in sorted(raw_environment(doc["services"][name])) if var not in allowed]


def check_required_env(doc: dict, name: str) -> list[str]:
    problems = []
    try:
        env = environment(doc["services"][name])
    except ComposeError as e:
        return [f"{name}: {e}"]
    if env.get("KAFKA_BOOTSTRAP_SERVERS") != KAFKA_BOOTSTRAP:
        problems.append(f"{name}: KAFKA_BOOTSTRAP_SERVERS is not {KAFKA_BOOTSTRAP}")
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


def check_depends_on_healthy(doc: dict, name: str) -> list[str]:
    depends = doc["services"][name].get("depends_on") or {}
    if isinstance(depends, list):  # the short form waits for a start only
        depends = {dep: {"condition": "service_started"} for dep in depends}
    return [f"{name}: does not wait for {dep} to be healthy" for dep in INFRA_SERVICES
            if (depends.get(dep) or {}).get("condition") != "service_healthy"]


def check_service_runtime(doc: dict, name: str) -> list[str]:
    service = doc["services"][name]
    problems = []
    if service.get("build") not in (".", {"context": "."}):
        problems.append(f"{name}: not built from the root Dockerfile")
    if service.get("command") != ["python", "-m", f"services.{name}"]:
        problems.append(f"{name}: command is {service.get('command')!r}")
    if service.get("restart") != "unless-stopped":
        problems.append(f"{name}: restart is {service.get('restart')!r}")
    health = healthcheck_command(service)
    if f"http://localhost:{SERVICE_PORTS[name]}/healthz" not in health:
        problems.append(f"{name}: health check does not hit its own /healthz: {health!r}")
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
    if env.get("KAFKA_ADVERTISED_LISTENERS") != f"PLAINTEXT://{KAFKA_BOOTSTRAP}":
        problems.append("kafka: the advertised listener is not the one the services use")
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
    return problems


def check_postgres(doc: dict) -> list[str]:
    postgres = doc["services"]["postgres"]
    problems = []
    if "pg_isready" not in healthcheck_command(postgres):
        problems.append("postgres: no pg_isready health check")
    if not any(str(v).split(":")[:2] == ["./infra/postgres/init.sql",
                                          "/docker-entrypoint-initdb.d/init.sql"]
               for v in postgres.get("volumes") or []):
        problems.append("postgres: infra/postgres/init.sql is not mounted into "
                        "/docker-entrypoint-initdb.d/")
    if not raw_environment(postgres).get("POSTGRES_PASSWORD"):
        problems.append("postgres: POSTGRES_PASSWORD is not set")
    return problems


def check_settings_validate(doc: dict, name: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """ServiceSettings built from exactly the compose environment, as the container would."""
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
        try:
            settings = load_settings(name)
        except ValueError as e:  # load_settings names what is wrong, never the values
            return [f"{name}: ServiceSettings rejects the compose environment: {e}"]
    expected = {"database_url": env.get(f"{name.upper()}_DATABASE_URL"),
                "http_port": SERVICE_PORTS[name], "http_host": "0.0.0.0",
                "kafka_bootstrap_servers": KAFKA_BOOTSTRAP}
    return [f"{name}: settings.{field} is {getattr(settings, field)!r}, not {value!r}"
            for field, value in expected.items() if getattr(settings, field) != value]


def all_problems(doc: dict, init_sql: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    problems = check_services_exist(doc)
    if problems:
        return problems
    problems += check_kafka(doc) + check_postgres(doc)
    for name in APP_SERVICES:
        problems += check_env_names(doc, name) + check_required_env(doc, name)
        if problems:
            continue
        problems += (check_database_created(doc, name, init_sql) + check_port(doc, name)
                     + check_depends_on_healthy(doc, name) + check_service_runtime(doc, name)
                     + check_settings_validate(doc, name, monkeypatch))
    return problems


# --- the real files ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def init_sql() -> str:
    return INIT_SQL.read_text(encoding="utf-8")


def test_the_six_services_exist(compose):
    assert check_services_exist(compose) == []
    assert set(compose["services"]) == {*INFRA_SERVICES, *APP_SERVICES}


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
    assert check_postgres(compose) == []


@pytest.mark.parametrize("name", APP_SERVICES)
def test_settings_validate_from_the_compose_environment(compose, name, monkeypatch):
    assert check_settings_validate(compose, name, monkeypatch) == []


def test_compose_demands_a_signing_key_and_runs_in_production_mode(compose, monkeypatch):
    env = environment(compose["services"]["groups"])
    assert env["TKM_ENV"] == "production"
    assert env["TKM_AUTH_SIGNING_KEY"] == REQUIRED["TKM_AUTH_SIGNING_KEY"]
    for var in list(os.environ):
        if var.upper() in settings_env_names():
            monkeypatch.delenv(var)
    for var, value in {**env, "TKM_AUTH_SIGNING_KEY": DEV_SIGNING_KEY}.items():
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
    assert lines[0] == "FROM python:3.11-slim"
    assert any(line.startswith("RUN pip install .") for line in lines)
    copied = " ".join(line for line in lines if line.startswith("COPY"))
    for part in ("pyproject.toml", "shared/", "services/", "scripts/"):
        assert part in copied
    users = [line.split()[1] for line in lines if line.startswith("USER")]
    assert users and users[-1] not in ("root", "0")
    assert "EXPOSE 8101-8104" in lines
    assert "CMD" not in instructions and "ENTRYPOINT" not in instructions
    assert "HEALTHCHECK" not in instructions


def test_the_whole_checker_passes_on_the_real_files(compose, init_sql, monkeypatch):
    assert all_problems(compose, init_sql, monkeypatch) == []


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
    ("localhost:8102/healthz", "localhost:8101/healthz", "groups: health check"),
]


@pytest.mark.parametrize(("old", "new", "expected"), BREAKAGES,
                         ids=[b[2] for b in BREAKAGES])
def test_the_checker_catches_a_broken_copy(tmp_path, monkeypatch, init_sql, old, new, expected):
    text = COMPOSE.read_text(encoding="utf-8")
    assert old in text, f"the breakage no longer applies: {old!r}"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    problems = all_problems(load_compose(broken), init_sql, monkeypatch)
    assert any(expected in p for p in problems), problems


def test_the_checker_catches_a_database_missing_from_init_sql(compose, init_sql, monkeypatch):
    broken = init_sql.replace("CREATE DATABASE evaluation;", "")
    problems = all_problems(compose, broken, monkeypatch)
    assert problems == [
        "evaluation: database 'evaluation' is not created by infra/postgres/init.sql"]
