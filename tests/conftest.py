"""Shared fixtures: the real Kafka broker and Postgres server, started once per test run on free
ports (or taken from KAFKA_BOOTSTRAP_SERVERS and TKM_POSTGRES_URL when those are set: the
caller's environment then also says how to authenticate, e.g. `eval "$(python -m scripts.infra
env)"`).

The broker the suite starts is the secured one (SASL_SSL, ACLs denying by default): its client
variables (`scripts.infra.kafka_client_env`) go into the environment, so a service run in-process
authenticates as itself (`<SERVICE>_KAFKA_*`), and whatever has no principal of its own (the
tests' readers and producers, the kernel tests' made-up services) as the admin, through the plain
`KAFKA_USERNAME`/`KAFKA_PASSWORD_FILE`."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from scripts import infra as local_infra
from tests.support.databases import create_database

# the suite runs services on loopback with the repository's dev signing key: the explicit switch
# (shared.settings refuses that key otherwise)
os.environ.setdefault("TKM_ENV", "test")


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory):
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("TKM_POSTGRES_URL"):
        # the caller's environment says how to authenticate; only the admin fallback is added
        for key, value in _admin_fallback(os.environ).items():
            os.environ.setdefault(key, value)
        yield local_infra.Endpoints(os.environ["KAFKA_BOOTSTRAP_SERVERS"],
                                    os.environ["TKM_POSTGRES_URL"])
        return
    # a directory of its own, not pytest's numbered temp dirs: a concurrent pytest run on the
    # same machine prunes those, and a server whose data vanished dies mid-run
    state = Path(tempfile.mkdtemp(prefix="tkm-test-infra-"))
    endpoints, _ = local_infra.up(state)
    env = local_infra.kafka_client_env(state)
    os.environ.update({**env, **_admin_fallback(env)})
    try:
        yield endpoints
    finally:
        local_infra.down(state)
        shutil.rmtree(state, ignore_errors=True)


def _admin_fallback(env) -> dict[str, str]:
    """The plain `KAFKA_USERNAME`/`KAFKA_PASSWORD_FILE`: the admin's, when `env` has them."""
    if not env.get("ADMIN_KAFKA_USERNAME") or not env.get("ADMIN_KAFKA_PASSWORD_FILE"):
        return {}
    return {"KAFKA_USERNAME": env["ADMIN_KAFKA_USERNAME"],
            "KAFKA_PASSWORD_FILE": env["ADMIN_KAFKA_PASSWORD_FILE"]}


@pytest.fixture
async def database_url(infra: local_infra.Endpoints) -> str:
    """A new, empty database of its own for one test."""
    return await create_database(infra)


# Tests that mostly wait (outages held for seconds, kill -9 and restarts, whole small years on
# infrastructure of their own): `make test` runs them in a second pytest process beside the
# others, each process with its own broker and Postgres, so their waiting overlaps the rest.
LONG_MODULES = frozenset({
    "tests/bench/test_bench_smoke.py",
    "tests/faults/test_fault_suite_short.py",
    "tests/demo/integration/test_simulate_same_seed.py",
    "tests/e2e/test_multi_instance.py",
    "tests/shared/integration/test_operations_signals.py",
    "tests/shared/integration/test_kafka_cluster.py",
    "tests/shared/integration/test_relay_broker_restart.py",
    # not waiting but long, to even the two processes out: headless Chromium against the
    # console and the services; infrastructure started and stopped; a year through four services
    "tests/console/test_console_browser.py",
    "tests/shared/integration/test_infra.py",
    "tests/e2e/test_programme_year.py",
})


def pytest_collection_modifyitems(config, items) -> None:
    root = Path(str(config.rootpath))
    for item in items:
        if Path(str(item.path)).relative_to(root).as_posix() in LONG_MODULES:
            item.add_marker(pytest.mark.long)
