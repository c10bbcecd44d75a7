"""Readable results (issue 17): one paging convention, and a year's national and per-province
totals in one call (provisional while open, final once closed)."""

import random
import uuid
from datetime import date

import pytest

from shared.auth import Role
from shared.contracts import groups as g
from shared.contracts import mentoring as m
from shared.contracts import recruitment as r
from tests.evaluation.integration.evaluation_helpers import (
    ADMIN,
    at,
    close_year,
    envelope,
    headers,
    publish,
    running_service,
)
from tests.support.kafka import eventually

pytestmark = pytest.mark.integration


def _report(group_id: str, tks_id: str, period: str, revenue: int,
            new_workers: int = 0) -> m.ReportFiled:
    return m.ReportFiled(group_id=group_id, tks_id=tks_id, period=period, revenue=revenue,
                         production_units=40, production_unit="kg", members_active=10,
                         new_workers=new_workers, on_time=True)


def _year(year: int, run: str) -> tuple[list, dict[str, str]]:
    """A good TKS (score 100) and a short-serving one in 32, a poor one (score 20) in 33."""
    tks = {name: f"{name}-{run}" for name in ("good", "short", "poor")}
    place = {"good": ("32", "3273"), "short": ("32", "3204"), "poor": ("33", "3374")}
    events = []
    for name, t in tks.items():
        province, regency = place[name]
        start = date(year, 10, 1) if name == "short" else date(year, 1, 1)
        group, stream = f"grp-{t}", f"group-grp-{t}"
        events += [
            envelope(r.TksRecruited(tks_id=t, round_id=f"round-{year}", year=year, stage=1,
                                    province_code=province, regency_code=regency,
                                    contract_start=start, contract_end=date(year, 12, 31)),
                     f"tks-{t}"),
            envelope(g.GroupFunded(group_id=group, tranche=1, amount=20_000_000,
                                   disbursed_on=date(year, 2, 1), budget_year=year, year=year,
                                   province_code=province, regency_code=regency,
                                   lpj_due_on=date(year, 8, 1)), stream),
            envelope(m.MentorAssigned(group_id=group, tks_id=t, province_code=province,
                                      regency_code=regency, assigned_on=start), stream)]
        for month in range(start.month, 13):
            period = f"{year}-{month:02d}"
            if name == "good":
                events.append(envelope(_report(
                    group, t, period, 1_000_000 + 100_000 * ((month - 1) // 3),
                    new_workers=1 if month % 3 == 0 else 0), stream))
            elif name == "poor" and month > 2:
                events.append(envelope(m.ReportOverdue(group_id=group, tks_id=t, period=period),
                                       stream))
            else:
                events.append(envelope(_report(group, t, period, 900_000), stream))
        if name == "good":
            events += [
                envelope(g.AccountabilityReportSubmitted(
                    group_id=group, report_id=f"lpj-{t}", tools=12_000_000, materials=8_000_000,
                    other=0, remaining_balance=0, evidence_count=14), stream, at(year, 7, 1)),
                envelope(g.AccountabilityReportAccepted(group_id=group, report_id=f"lpj-{t}"),
                         stream, at(year, 7, 15))]
    return events, tks


async def test_stats_give_national_and_per_province_totals_open_then_closed(infra,
                                                                            database_url):
    year, run = random.randint(2030, 2090), uuid.uuid4().hex[:8]
    events, tks = _year(year, run)
    async with running_service(infra.kafka_bootstrap, database_url) as (_, client):
        assert (await client.get(f"/evaluations/{year}/stats", headers=ADMIN)).status_code == 404
        assert (await client.post(f"/evaluations/{year}/open", headers=ADMIN)).status_code == 201
        await publish(infra.kafka_bootstrap, events)
        expected = {
            "32": {"province_code": "32", "evaluated": 1, "continued": 1, "replaced": 0,
                   "not_evaluated": 1, "mean_score": 100.0},
            "33": {"province_code": "33", "evaluated": 1, "continued": 0, "replaced": 1,
                   "not_evaluated": 0, "mean_score": 20.0}}

        async def provisional():
            r = await client.get(f"/evaluations/{year}/stats", headers=ADMIN)
            assert r.status_code == 200, r.text
            body = r.json()
            by = {p["province_code"]: p for p in body["provinces"]}
            return body if by == expected else None

        body = await eventually(provisional, timeout=60)
        assert (body["status"], body["provisional"]) == ("open", True)
        assert body["national"] == {"evaluated": 2, "continued": 1, "replaced": 1,
                                    "not_evaluated": 1, "mean_score": 60.0}

        closed = await close_year(client, year)
        final = (await client.get(f"/evaluations/{year}/stats", headers=ADMIN)).json()
        assert (final["status"], final["provisional"]) == ("closed", False)
        assert {p["province_code"]: p for p in final["provinces"]} == expected
        assert final["national"] == body["national"]
        summary = closed["summary"]
        assert (final["national"]["continued"], final["national"]["replaced"]) == (
            summary["continued"], summary["replaced"])

        officer = await client.get(f"/evaluations/{year}/stats",
                                   headers=headers(Role.PROVINCE, province_code="33"))
        assert officer.json()["provinces"] == [expected["33"]]
        assert officer.json()["national"]["evaluated"] == 1

        # one paging convention: limit/offset, {items,total,limit,offset}, at most 1000
        seen = []
        for offset in (0, 1):
            page = (await client.get(f"/evaluations/{year}/results", headers=ADMIN,
                                     params={"limit": 1, "offset": offset})).json()
            assert (page["total"], page["limit"], page["offset"]) == (2, 1, offset)
            seen += [o["tks_id"] for o in page["items"]]
        assert seen == [tks["good"], tks["poor"]]  # best score first
        default = (await client.get(f"/evaluations/{year}/results", headers=ADMIN)).json()
        assert default["limit"] == 100
        for path in ("results", "late-events"):
            top = await client.get(f"/evaluations/{year}/{path}", headers=ADMIN,
                                   params={"limit": 1000})
            assert top.status_code == 200, top.text
            over = await client.get(f"/evaluations/{year}/{path}", headers=ADMIN,
                                    params={"limit": 1001})
            assert over.status_code == 422, over.text
