"""A small programme year through the four services running as processes on the real broker and
database, then conservation checks across services (issues: the evaluation loop, the main job)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from calendar import monthrange
from datetime import date

import pytest

from scripts.api_client import Api
from scripts.demo import audit_example
from scripts.results import collect
from scripts.scenario import build
from scripts.simulate import Options, Simulation, progress_bar
from shared.topics import GROUPS
from tests.groups.groups_support import registration
from tests.support.kafka import read_topic

pytestmark = pytest.mark.integration
YEAR = 2023


@pytest.fixture(scope="module")
async def year(running_services, infra):
    api = Api(running_services.urls)
    scenario = build(seed=42, groups=240, poor_share=0.25)
    with progress_bar(disable=True) as progress:
        run = await Simulation(api, scenario, Options(resignations=2), progress).execute()
    results = await collect(api, YEAR, infra.kafka_bootstrap)
    yield api, run, results
    await api.close()


async def test_next_years_roster_holds_the_continued_and_a_vacancy_per_replaced(year):
    api, _, _ = year
    outcomes = await api.get_all("evaluation", f"/evaluations/{YEAR}/results")
    continued = {o["tks_id"] for o in outcomes if o["decision"] == "continue"}
    replaced = {o["tks_id"] for o in outcomes if o["decision"] == "replace"}
    assert continued and replaced, "the scenario must exercise both decisions"

    roster = await api.get_all("recruitment", "/tks", year=YEAR + 1)
    assert {t["tks_id"] for t in roster} == continued
    assert all(t["contract_start"] == f"{YEAR + 1}-01-01" for t in roster)

    vacancies = await api.get_all("recruitment", "/vacancies", year=YEAR + 1)
    assert sorted(v["replaces_tks_id"] for v in vacancies) == sorted(replaced)
    assert all(v["status"] == "open" and v["reason"] == "replacement" for v in vacancies)
    regency = {o["tks_id"]: o["regency_code"] for o in outcomes}
    assert all(v["regency_code"] == regency[v["replaces_tks_id"]] for v in vacancies)


async def test_evaluation_covers_every_tks_active_at_year_end(year):
    api, run, _ = year
    outcomes = await api.get_all("evaluation", f"/evaluations/{YEAR}/results")
    active = set(run.tks_of) - set(run.resigned)
    assert {o["tks_id"] for o in outcomes} == active
    assert len(outcomes) == len(active)


async def test_every_funded_group_is_known_to_mentoring(year):
    api, run, _ = year
    funded = [g for g in await api.get_all("groups", "/groups", year=YEAR)
              if g["funded_total"] > 0]
    assert {g["group_id"] for g in funded} == set(run.funded_on)
    for group in funded:
        view = await api.get("mentoring", f"/groups/{group['group_id']}")
        assert view["funded_on"] == run.funded_on[group["group_id"]].isoformat()


async def test_reports_due_equal_groups_times_months_mentored(year):
    api, run, results = year
    expected_due = sum(12 - funded.month + 1 for funded in run.funded_on.values())
    due = sum(s["reports_filed"] + s["reports_overdue"] for s in results["by_stage"])
    assert due == expected_due
    filed = sum(s["reports_filed"] for s in results["by_stage"])
    assert filed == run.reports_filed
    for month in range(1, 13):
        period = f"{YEAR}-{month:02d}"
        closure = await api.get("mentoring", f"/periods/{period}")
        last_day = date(YEAR, month, monthrange(YEAR, month)[1])
        assert closure["due"] == sum(f <= last_day for f in run.funded_on.values())
        overdue = await api.get("mentoring", f"/periods/{period}/overdue")
        assert len(overdue["overdue"]) == closure["due"] - closure["filed"] == closure["overdue"]


async def test_rupiah_agree_between_the_groups_projection_and_the_topic(year, infra):
    api, run, results = year
    keys = {f"group-{g}" for g in run.funded_on}

    def funded_events(records):
        return [json.loads(r.value) for r in records
                if r.key and r.key.decode() in keys and b'"GroupFunded"' in r.value]

    records = await read_topic(infra.kafka_bootstrap, GROUPS,
                               until=lambda recs: len(funded_events(recs)) >= len(keys))
    events = {e["event_id"]: e["payload"]["amount"] for e in funded_events(records)}
    on_topic = sum(events.values())
    funding = await api.get("groups", "/reports/funding", budget_year=YEAR)
    assert sum(row["amount_disbursed"] for row in funding) == on_topic
    assert sum(row["rupiah_disbursed"] for row in results["by_province"]) == on_topic
    assert sum(row["rupiah_disbursed"] for row in results["by_stage"]) == on_topic
    assert on_topic == 20_000_000 * len(run.funded_on)


async def test_people_reached_and_topics_carry_no_personal_data(year, infra):
    _, run, results = year
    members = sum(len(p.members) for p in run.plans.values())
    assert sum(s["people_reached"] for s in results["by_stage"]) == members
    niks = {m.nik for p in run.plans.values() for m in p.members}
    records = await read_topic(infra.kafka_bootstrap, GROUPS, until=lambda recs: len(recs) > 0)
    text = b"".join(r.value for r in records)
    assert not any(nik.encode() in text for nik in list(niks)[:200])


async def test_money_went_maker_then_checker(year):
    """Four eyes (issue 18): every funding and LPJ acceptance of the year, and the close, was
    asked by the simulator's admin and granted by another person; nothing is left pending."""
    api, run, _ = year
    funded = len(run.funded_on)
    for service, command, expected in (("groups", "fund", funded),
                                       ("groups", "accept_lpj", funded),
                                       ("evaluation", "close_year", 1)):
        granted = await api.get_all(service, "/approvals", state="granted", command_type=command)
        assert len(granted) == expected, (service, command)
        assert all(r["checker"] and r["checker"] != r["maker"] and r["result"] is not None
                   for r in granted), granted[:1]
        assert len({r["maker"] for r in granted}) == 1  # the simulator's one admin asked
        pending = await api.get(service, "/approvals", state="pending", limit=1)
        assert pending["total"] == 0, (service, pending["items"])
        if command == "fund":  # a batch per bulk funding call: 500 groups of a stage each
            assert len({r["batch_id"] for r in granted}) == sum(
                -(-s.group_count // 500) for s in run.scenario.stages)


async def test_the_demos_audit_query_shows_a_province_funding_decisions_with_both_actors(year):
    """What `make demo` prints at its end (scripts.demo.audit_example): asked as an auditor,
    the month's funding decisions of one province, and one followed from maker to checker."""
    api, _, results = year
    example = await audit_example(api, results)
    assert "error" not in example, example
    code = example["province"][-3:-1]
    funded = next(r["groups_funded"] for r in results["by_province"] if r["province_code"] == code)
    assert example["funding_decisions"] == funded > 0  # this month: the year was run just now
    assert example["requests_made"] == 2 * funded  # its fundings and its LPJ acceptances
    trail = [(r["event_type"], r["who"], r["actor"]) for r in example["rows"]]
    assert [t for t, _, _ in trail] == ["approvals.ApprovalRequested",
                                        "approvals.ApprovalGranted", "GroupFunded"], trail
    maker, checker, funder = (actor for _, _, actor in trail)
    assert maker != checker == funder and trail[0][1] == "maker" and trail[1][1] == "checker"
    assert "command_type=fund" in example["rows"][0]["summary"]
    assert "amount=20000000" in example["rows"][2]["summary"]


def _tkm(urls: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ".", **{f"{n.upper()}_URL": u for n, u in urls.items()}}
    return subprocess.run([sys.executable, "-m", "scripts.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env)


async def test_tkm_approvals_lists_grants_and_rejects(year, running_services):
    """`tkm approvals` by hand (runs last: it funds two groups of its own): the maker cannot
    grant its own request (exit 1, one line naming the checker field), another admin grants one
    (the group funded once), a third rejects the other with a reason code."""
    api, _, _ = year
    asked = []
    for _ in range(2):
        group = await api.post("groups", "/groups", registration("3201"))
        await api.post("groups", f"/groups/{group['group_id']}/approval")
        answer = await api.post("groups", f"/groups/{group['group_id']}/funding", {
            "tranche": 1, "amount": 20_000_000, "disbursed_on": "2023-06-01",
            "budget_year": 2023})
        assert answer["state"] == "pending", answer
        asked.append((group["group_id"], answer["request_id"]))
    urls = running_services.urls
    run = lambda *a: asyncio.to_thread(_tkm, urls, *a)  # noqa: E731

    listed = await run("approvals", "list", "-s", "groups", "--checkable", "--json")
    assert listed.returncode == 0, listed.stderr
    ids = {r["request_id"] for r in json.loads(listed.stdout)["items"]}
    assert {rid for _, rid in asked} <= ids

    (funded, first), (_, second) = asked
    own = await run("approvals", "grant", first, "-s", "groups", "--subject",
                    "programme-simulator")
    assert own.returncode == 1 and "checker" in own.stderr, own.stderr
    assert len(own.stderr.strip().splitlines()) == 1 and "Traceback" not in own.stderr

    granted = await run("approvals", "grant", first, "-s", "groups")
    assert granted.returncode == 0, granted.stderr
    assert f"{first}  granted" in granted.stdout
    again = await run("approvals", "grant", first, "-s", "groups")
    assert again.returncode == 1 and "409" in again.stderr  # granted once
    view = await api.get("groups", f"/groups/{funded}")
    assert view["funded_total"] == 20_000_000

    rejected = await run("approvals", "reject", second, "-s", "groups", "--reason-code",
                         "missing_evidence", "--subject", "direktur@kemnaker.go.id")
    assert rejected.returncode == 0, rejected.stderr
    assert rejected.stdout.split() == [second, "rejected", "missing_evidence"]
    decided = await run("approvals", "list", "-s", "groups", "--state", "rejected", "--json")
    assert second in {r["request_id"] for r in json.loads(decided.stdout)["items"]}
