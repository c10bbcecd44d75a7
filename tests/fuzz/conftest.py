"""The four services as processes on the session's real Kafka and Postgres (fresh databases),
their OpenAPI documents loaded for schemathesis, and a tally printed at the end."""

from __future__ import annotations

import pytest

from scripts import services as service_processes
from tests.fuzz.tally import TALLY
from tests.support.databases import create_database



def pytest_terminal_summary(terminalreporter) -> None:
    if TALLY.examples:
        terminalreporter.section("schemathesis")
        for line in [TALLY.summary(), *TALLY.failures[:20]]:
            terminalreporter.write_line(line)


# module scope: the processes join the services' own consumer groups on the shared broker, so
# they must be gone before anything else (the e2e run) starts processes of the same names
@pytest.fixture(scope="module")
async def fuzzed_services(infra, tmp_path_factory):
    databases = {name: await create_database(infra, f"fuzz_{name}")
                 for name in service_processes.SERVICES}
    running = service_processes.start(infra, tmp_path_factory.mktemp("fuzz-logs"),
                                      databases=databases,
                                      extra_env={"TKM_LOG_LEVEL": "ERROR"})
    try:
        yield running
    finally:
        running.stop()
