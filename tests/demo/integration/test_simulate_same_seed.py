"""The same seed gives the same year, figure for figure (issue 17): a small year simulated twice,
each on a fresh broker and fresh databases with the four services as processes (as `tkm
simulate` runs it), and the tables read back from the services compared."""

from __future__ import annotations

import asyncio

import pytest
from rich.console import Console

from scripts import infra
from scripts import services as service_processes
from scripts.demo import _admin_client, _simulate
from scripts.scenario import build
from scripts.simulate import Options

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]  # two whole years
SEED, GROUPS = 17, 60
# half the TKS careless: both regencies with two TKS have one diligent and one careless TKS, so
# which of them a tie hands a group to changes the reports filed (the bug this test guards)
POOR_SHARE = 0.5


def _year(state) -> dict:
    """One run of the year on infrastructure of its own under `state`: its results."""
    endpoints, _ = infra.up(state, None, None)
    running = None
    try:
        running = service_processes.start(
            endpoints, state / "logs", ports={n: infra.free_port() for n in
                                              service_processes.SERVICES},
            kafka_env=infra.kafka_client_env(state), extra_env={"TKM_LOG_LEVEL": "WARNING"})
        scenario = build(seed=SEED, groups=GROUPS, poor_share=POOR_SHARE)
        results, _ = asyncio.run(_simulate(running.urls, scenario, Options(),
                                           endpoints.kafka_bootstrap, Console(quiet=True),
                                           _admin_client(state)))
        return results
    finally:
        if running is not None:
            running.stop()
        infra.down(state)


def test_two_runs_of_one_seed_give_identical_tables(tmp_path):
    first, second = _year(tmp_path / "first"), _year(tmp_path / "second")
    # the year did happen: reports, overdue ones, both evaluation decisions or a resignation
    stages = first["by_stage"]
    assert sum(s["reports_filed"] for s in stages) > 0
    assert sum(s["groups_mentored"] for s in stages) == GROUPS
    for table in ("by_stage", "by_province", "next_year", "vacancies_in_year"):
        assert first[table] == second[table], table
    assert first["events_per_topic"] == second["events_per_topic"]
