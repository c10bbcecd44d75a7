"""The consumed facts against a real Postgres, delivered in awkward orders (as separate topics
may deliver them), without the broker."""

import itertools
import random
import uuid
from datetime import date
from pathlib import Path

import asyncpg
import pytest

import services.evaluation
from services.evaluation import views
from services.evaluation.projections import HANDLERS
from shared.aggregate import UnitOfWork
from shared.consumer import apply_handler
from shared.contracts import groups as g
from shared.contracts import mentoring as m
from shared.contracts import recruitment as r
from shared.envelope import Envelope, parse_payload
from shared.eventstore import EventStore, migrate
from tests.evaluation.integration.evaluation_helpers import at, envelope

pytestmark = pytest.mark.integration
MIGRATIONS = Path(services.evaluation.__file__).parent / "migrations"


@pytest.fixture
async def conn(database_url):
    connection = await asyncpg.connect(database_url)
    await migrate(connection, "evaluation", MIGRATIONS)
    yield connection
    await connection.close()


async def _apply(conn: asyncpg.Connection, envelopes: list[Envelope]) -> None:
    """As the consumer applies a batch: each run of consecutive events of one handler in one
    call of that (set-based) handler."""
    async with conn.transaction():
        uow = UnitOfWork(conn, EventStore("evaluation"), "test", uuid.uuid4())
        for handler, run in itertools.groupby(envelopes, key=lambda e: HANDLERS[e.event_type]):
            await apply_handler(handler, uow, [(env, parse_payload(env)) for env in run])


def _report(group: str, tks: str, period: str, *, on_time=True, new_workers=0, revenue=1_000):
    return m.ReportFiled(group_id=group, tks_id=tks, period=period, revenue=revenue,
                         production_units=1, production_unit="pcs", members_active=10,
                         new_workers=new_workers, on_time=on_time)


async def test_group_facts_go_to_the_mentor_of_the_day_whatever_the_arrival_order(conn):
    year = random.randint(2030, 2090)
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    kept, dissolved = f"kept-{uuid.uuid4().hex[:6]}", f"gone-{uuid.uuid4().hex[:6]}"
    funded = [g.GroupFunded(group_id=group, tranche=1, amount=20_000_000,
                            disbursed_on=date(year, 2, 1), budget_year=year, year=year,
                            province_code="61", regency_code="6171",
                            lpj_due_on=date(year, 8, 1)) for group in (kept, dissolved)]
    await _apply(conn, [
        # groups events before the mentoring events that say who mentored them
        envelope(g.AccountabilityReportAccepted(group_id=kept, report_id="l1"), kept,
                 at(year, 5, 20)),
        envelope(g.GroupDissolved(group_id=dissolved, reason_code="members_left"), dissolved,
                 at(year, 4, 1)),
        envelope(funded[0], kept), envelope(funded[1], dissolved),
        envelope(m.MentorAssigned(group_id=kept, tks_id=a, province_code="61",
                                  regency_code="6171", assigned_on=date(year, 1, 10)), kept),
        envelope(m.MentorUnassigned(group_id=kept, tks_id=a, reason="reassigned",
                                    unassigned_on=date(year, 6, 30)), kept),
        envelope(m.MentorAssigned(group_id=kept, tks_id=b, province_code="61",
                                  regency_code="6171", assigned_on=date(year, 7, 1)), kept),
        envelope(m.MentorAssigned(group_id=dissolved, tks_id=a, province_code="61",
                                  regency_code="6171", assigned_on=date(year, 1, 10)),
                 dissolved),
        envelope(r.TksRecruited(tks_id=a, round_id="r", year=year, stage=1,
                                province_code="61", regency_code="6171",
                                contract_start=date(year, 1, 1),
                                contract_end=date(year, 12, 31)), a),
        envelope(r.TksRecruited(tks_id=b, round_id="r", year=year, stage=2,
                                province_code="61", regency_code="6171",
                                contract_start=date(year, 6, 1),
                                contract_end=date(year, 12, 31)), b),
    ])
    facts = {f.tks_id: f for f in await views.tks_facts(conn, year)}
    # the LPJ was accepted while A mentored the group; at year end B did
    assert (facts[a].funded_groups, facts[a].lpj_accepted) == (2, 1)
    assert (facts[b].funded_groups, facts[b].lpj_accepted) == (0, 0)
    assert (facts[a].year_end_groups, facts[a].active_groups) == (1, 0)
    assert (facts[b].year_end_groups, facts[b].active_groups) == (1, 1)
    assert (facts[a].months_served, facts[b].months_served) == (12, 7)
    [only_b] = await views.tks_facts(conn, year, b)
    assert only_b == facts[b]


async def test_reports_count_once_per_group_and_month(conn):
    year = random.randint(2030, 2090)
    tks, group = f"t-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    on_time = envelope(_report(group, tks, f"{year}-03", new_workers=2, revenue=1_000), group)
    await _apply(conn, [
        # reports before the TKS's recruitment is known: they still count for the TKS they name
        on_time,
        envelope(m.ReportOverdue(group_id=group, tks_id=tks, period=f"{year}-03"), group),
        envelope(m.ReportOverdue(group_id=group, tks_id=tks, period=f"{year}-04"), group),
        envelope(_report(group, tks, f"{year}-04", on_time=False, new_workers=1), group),
        envelope(m.ReportOverdue(group_id=group, tks_id=tks, period=f"{year}-05"), group),
        envelope(_report(group, tks, f"{year}-11", revenue=1_300), group),
        envelope(m.ReportAmended(group_id=group, tks_id=tks, period=f"{year}-11",
                                 revenue=1_500, production_units=1, production_unit="pcs",
                                 members_active=10, new_workers=0, on_time=False), group),
        # the same report published again under a new event id replaces, never adds
        envelope(_report(group, tks, f"{year}-03", new_workers=2, revenue=1_000), group),
        envelope(r.TksRecruited(tks_id=tks, round_id="r", year=year, stage=1,
                                province_code="94", regency_code="9471",
                                contract_start=date(year, 1, 1),
                                contract_end=date(year, 12, 31)), tks),
    ])
    [facts] = await views.tks_facts(conn, year, tks)
    assert (facts.reports_due, facts.reports_on_time) == (4, 2)  # overdue May; April was late
    assert facts.new_workers == 3
    assert facts.groups_reported == 1
    assert (facts.quarters_filed, facts.first_quarter_revenue, facts.last_quarter_revenue) == \
        (3, 1_000.0, 1_500.0)


async def test_exits_and_renewals_whatever_the_arrival_order(conn):
    year = random.randint(2030, 2090)
    leaver, mover = f"l-{uuid.uuid4().hex[:6]}", f"m-{uuid.uuid4().hex[:6]}"
    await _apply(conn, [
        envelope(r.TksResigned(tks_id=leaver, year=year, province_code="73",
                               regency_code="7371", effective_date=date(year, 5, 31)), leaver),
        envelope(r.TksRecruited(tks_id=leaver, round_id="r", year=year, stage=1,
                                province_code="73", regency_code="7371",
                                contract_start=date(year, 1, 1),
                                contract_end=date(year, 12, 31)), leaver),
        envelope(r.TksRecruited(tks_id=mover, round_id="r", year=year - 1, stage=1,
                                province_code="73", regency_code="7371",
                                contract_start=date(year - 1, 7, 1),
                                contract_end=date(year, 3, 31)), mover),
        envelope(r.TksContractRenewed(tks_id=mover, year=year, province_code="73",
                                      regency_code="7302", contract_start=date(year, 4, 1),
                                      contract_end=date(year, 12, 31)), mover),
        # released the year before: no bearing on this year
        envelope(r.TksReleased(tks_id=mover, year=year - 1, province_code="73",
                               regency_code="7371", reason="other",
                               effective_date=date(year - 1, 6, 30)), mover),
    ])
    facts = {f.tks_id: f for f in await views.tks_facts(conn, year)}
    assert facts[leaver].left_programme is True
    assert facts[mover].left_programme is False
    assert (facts[mover].months_served, facts[mover].regency_code) == (12, "7302")


async def test_a_contract_ending_before_it_starts_is_refused(conn):
    bad = envelope(r.TksRecruited(tks_id="x", round_id="r", year=2040, stage=1,
                                  province_code="11", regency_code="1101",
                                  contract_start=date(2040, 6, 1),
                                  contract_end=date(2040, 1, 1)), "x")
    with pytest.raises(ValueError, match="ends before it starts"):
        await _apply(conn, [bad])
    assert await conn.fetchval("SELECT count(*) FROM tks_contracts") == 0


async def test_facts_about_a_closed_year_are_kept_as_late_but_its_own_releases_are_not(conn):
    year = random.randint(2030, 2090)
    await conn.execute("INSERT INTO evaluation_cycles (year, status, policy_version, opened_at, "
                       "opened_by) VALUES ($1, 'closed', 'p', now(), 'test')", year)
    tks, group = f"t-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    late_report = envelope(_report(group, tks, f"{year}-12"), group)
    resigned = envelope(r.TksResigned(tks_id=tks, year=year, province_code="11",
                                      regency_code="1101", effective_date=date(year, 12, 1)),
                        tks)
    replaced = envelope(r.TksReleased(tks_id=f"{tks}-2", year=year, province_code="11",
                                      regency_code="1101", reason="evaluation",
                                      effective_date=date(year, 12, 31)), f"{tks}-2")
    next_year = envelope(_report(group, tks, f"{year + 1}-01"), group)
    await _apply(conn, [late_report, resigned, replaced, next_year])
    late = await conn.fetch("SELECT event_id, event_type, tks_id, group_id FROM late_events "
                            "WHERE year = $1 ORDER BY event_type", year)
    assert [(r["event_id"], r["event_type"]) for r in late] == [
        (late_report.event_id, "ReportFiled"), (resigned.event_id, "TksResigned")]
    # kept as facts all the same
    assert await conn.fetchval("SELECT count(*) FROM report_facts WHERE group_id = $1",
                               group) == 2
