"""`tkm load-history` on the real services (issue 17, item 2): the 2021 shape scaled down (27 TKS,
250 groups of 16) loads through the four services as processes on the session's broker and
Postgres with the stock rules, the figures read back from each service equal the files', a
second run loads nothing twice, a run cut off part-way is finished by the next, and a member the
groups service refuses is reported alone."""

from __future__ import annotations

import shutil

import pytest
from rich.console import Console

from scripts import services as service_processes
from scripts.history_example import generate
from scripts.load_history import (
    EXIT_OK,
    EXIT_REFUSED,
    HistoryClient,
    Loader,
    load,
    read_history,
)
from tests.support.databases import create_database

pytestmark = pytest.mark.integration
YEAR, SCALE = 2021, 0.04


@pytest.fixture(scope="module")
async def running_services(infra, tmp_path_factory):
    databases = {name: await create_database(infra, f"hist_{name}")
                 for name in service_processes.SERVICES}
    running = service_processes.start(infra, tmp_path_factory.mktemp("history-logs"),
                                      databases=databases, extra_env={"TKM_LOG_LEVEL": "WARNING"})
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = tmp_path_factory.mktemp("history-2021")
    figures = generate(out, year=YEAR, scale=SCALE, seed=2021)
    assert (figures["tks"], figures["groups"], figures["members"]) == (27, 250, 4000)
    return out


@pytest.fixture(scope="module")
async def first_run(running_services, files):
    code, summary = await load(files, YEAR, running_services.urls, console=Console(quiet=True))
    return code, summary


async def test_the_scaled_2021_shape_loads_with_stock_rules_and_reads_back(first_run):
    code, summary = first_run
    assert summary["refused"] == [], summary["refused"][:5]
    assert code == EXIT_OK, summary["table"]
    files, services = summary["in_files"], summary["services"]
    assert files == {"tks": 27, "regencies": files["regencies"], "groups": 250, "people": 4000,
                     "groups_funded": 250, "people_funded": 4000, "rupiah": 250 * 20_000_000,
                     "mentored": 250, "reports": 0}
    # each service's own figure, not the loader's count
    assert services["tks"]["recruitment"] == services["tks"]["mentoring"] == 27
    assert services["regencies"]["recruitment"] == files["regencies"]
    assert services["groups"]["groups"] == 250
    assert services["people"]["groups"] == services["people_funded"]["groups"] == 4000
    assert services["groups_funded"]["groups"] == services["groups_funded"]["mentoring"] == 250
    assert services["rupiah"]["groups"] == 5_000_000_000
    assert services["mentored"]["mentoring"] == 250
    assert summary["new"] == {"tks": 27, "groups": 250, "fundings": 250, "mentors": 250}


async def test_groups_carry_their_2021_dates(first_run, running_services, files):
    """Registered on the day the files say (admin-only backdating, flagged), not on the day
    of the load."""
    history = read_history(files, YEAR)
    by_name = {g.name: g.registered_on.isoformat() for g in history.groups.values()}
    api = HistoryClient(running_services.urls)
    try:
        page = await api.get("groups", "/groups", year=YEAR, limit=500, page_size=500)
    finally:
        await api.close()
    rows = page["items"]
    assert len(rows) == 250
    assert {r["name"]: str(r["registered_on"])[:10] for r in rows} == by_name
    assert all(r["registration_backdated"] for r in rows)


async def test_a_second_run_loads_nothing_twice(first_run, running_services, files, tmp_path):
    again = tmp_path / "again"
    shutil.copytree(files, again)
    code, summary = await load(again, YEAR, running_services.urls, console=Console(quiet=True))
    assert code == EXIT_OK, summary["table"]
    assert summary["new"] == {}, summary["new"]
    assert summary["replayed"] > 0
    assert summary["services"] == first_run[1]["services"]


async def test_a_member_the_service_refuses_is_reported_alone(running_services, tmp_path):
    """A NIK of 16 digits whose region no table knows: the groups service refuses that member,
    the loader reports its line and registers the group with the other fifteen."""
    out = tmp_path / "2019"
    generate(out, year=2019, scale=0.005, seed=19)
    members = out / "members.csv"
    lines = members.read_text().splitlines()
    cells = lines[5].split(",")  # line 6 of the file: the first group's fifth member
    cells[1] = "99" + cells[1][2:]  # province 99 does not exist
    lines[5] = ",".join(cells)
    members.write_text("\n".join(lines) + "\n")
    code, summary = await load(out, 2019, running_services.urls, console=Console(quiet=True))
    assert code == EXIT_REFUSED, summary["table"]
    assert [(r["file"], r["line"], r["field"]) for r in summary["refused"]] == \
        [("members.csv", 6, "nik")]
    in_files, services = summary["in_files"], summary["services"]
    assert services["people"]["groups"] == in_files["people"] - 1
    assert services["groups"]["groups"] == in_files["groups"]
    assert all(row["agree"] for row in summary["table"])


async def test_a_run_cut_off_part_way_is_finished_by_the_next(running_services, tmp_path,
                                                              monkeypatch):
    """A run dies after registering the groups (before any funding); the next run takes what
    is there as loaded and does only the rest."""
    out = tmp_path / "2020"
    figures = generate(out, year=2020, scale=0.005, seed=20)

    async def cut_off(self):
        raise ConnectionError("the loader's machine went down")

    with monkeypatch.context() as patch:
        patch.setattr(Loader, "fund", cut_off)
        with pytest.raises(ConnectionError):
            await load(out, 2020, running_services.urls, console=Console(quiet=True))
    code, summary = await load(out, 2020, running_services.urls, console=Console(quiet=True))
    assert code == EXIT_OK, summary["table"]
    assert summary["new"] == {"fundings": figures["fundings"], "mentors": figures["mentors"]}
    assert summary["already"] == {"tks": figures["tks"], "groups": figures["groups"]}
    assert summary["services"]["people"]["groups"] == figures["members"]
    assert summary["services"]["rupiah"]["groups"] == figures["fundings"] * 20_000_000


async def test_a_run_cut_off_between_asking_and_granting_is_granted_by_the_next(
        running_services, tmp_path, monkeypatch):
    """Four eyes: a run dies after the fundings were asked for (pending) and before the
    checker granted them; the next run gets the asking calls' first answers again (the same
    request ids) and grants them: each group funded once, nothing left pending."""
    out = tmp_path / "2022"
    figures = generate(out, year=2022, scale=0.005, seed=22)

    async def cut_off(self, answer):
        raise ConnectionError("the loader's machine went down before the checker granted")

    with monkeypatch.context() as patch:
        patch.setattr(Loader, "_granted", cut_off)
        with pytest.raises(ConnectionError):
            await load(out, 2022, running_services.urls, console=Console(quiet=True))
    api = HistoryClient(running_services.urls)
    try:
        waiting = await api.get("groups", "/approvals", state="pending", command_type="fund")
        assert waiting["total"] == figures["fundings"]
        code, summary = await load(out, 2022, running_services.urls, console=Console(quiet=True))
        assert code == EXIT_OK, summary["table"]
        assert summary["new"] == {"fundings": figures["fundings"], "mentors": figures["mentors"]}
        assert summary["services"]["rupiah"]["groups"] == figures["fundings"] * 20_000_000
        left = await api.get("groups", "/approvals", state="pending", command_type="fund")
        assert left["total"] == 0
        granted = await api.get("groups", "/approvals", state="granted", command_type="fund",
                                limit=1000)
        ours = {r["request_id"] for r in waiting["items"]}
        assert ours <= {r["request_id"] for r in granted["items"]}  # the first run's requests
    finally:
        await api.close()
