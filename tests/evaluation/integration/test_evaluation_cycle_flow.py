import json
import random
import uuid
from datetime import date

import pytest

from shared.auth import Role
from shared.contracts import groups as g
from shared.contracts import mentoring as m
from shared.contracts import recruitment as r
from shared.topics import EVALUATION
from tests.evaluation.integration.evaluation_helpers import (
    ADMIN,
    AGENCY,
    at,
    close_year,
    end_offsets,
    envelope,
    headers,
    publish,
    read_from,
    running_service,
)
from tests.support.kafka import eventually

pytestmark = pytest.mark.integration


def _recruited(tks_id: str, year: int, province: str, regency: str, start: date,
               end: date) -> r.TksRecruited:
    return r.TksRecruited(tks_id=tks_id, round_id=f"round-{year}", year=year, stage=1,
                          province_code=province, regency_code=regency, contract_start=start,
                          contract_end=end)


def _report(group_id: str, tks_id: str, period: str, *, revenue: int, on_time: bool = True,
            new_workers: int = 0, amended: bool = False) -> m.ReportFiled | m.ReportAmended:
    cls = m.ReportAmended if amended else m.ReportFiled
    return cls(group_id=group_id, tks_id=tks_id, period=period, revenue=revenue,
               production_units=40, production_unit="kg", members_active=10,
               new_workers=new_workers, on_time=on_time)


def _funded(group_id: str, year: int, province: str, regency: str) -> g.GroupFunded:
    return g.GroupFunded(group_id=group_id, tranche=1, amount=20_000_000,
                         disbursed_on=date(year, 2, 1), budget_year=year, year=year,
                         province_code=province, regency_code=regency,
                         lpj_due_on=date(year, 8, 1))


async def test_close_decides_each_evaluable_tks_once_and_keeps_late_events_out(infra,
                                                                               database_url):
    year = random.randint(2030, 2090)
    run = uuid.uuid4().hex[:8]
    good, poor, short, leaver = (f"{name}-{run}" for name in ("good", "poor", "short", "left"))
    g_good, g_poor, g_short = (f"grp-{name}-{run}" for name in ("good", "poor", "short"))
    jan1, dec31 = date(year, 1, 1), date(year, 12, 31)

    recruitment = [
        envelope(_recruited(good, year, "32", "3273", jan1, dec31), f"tks-{good}"),
        envelope(_recruited(poor, year, "33", "3374", jan1, dec31), f"tks-{poor}"),
        envelope(_recruited(short, year, "32", "3204", date(year, 10, 1), dec31),
                 f"tks-{short}"),
        envelope(_recruited(leaver, year, "32", "3273", jan1, dec31), f"tks-{leaver}"),
        envelope(r.TksReleased(tks_id=leaver, year=year, province_code="32",
                               regency_code="3273", reason="misconduct",
                               effective_date=date(year, 8, 31)), f"tks-{leaver}"),
    ]
    groups = [
        envelope(_funded(g_good, year, "32", "3273"), f"group-{g_good}"),
        envelope(g.AccountabilityReportSubmitted(
            group_id=g_good, report_id="lpj-1", tools=12_000_000, materials=8_000_000, other=0,
            remaining_balance=0, evidence_count=14), f"group-{g_good}", at(year, 7, 1)),
        envelope(g.AccountabilityReportAccepted(group_id=g_good, report_id="lpj-1"),
                 f"group-{g_good}", at(year, 7, 15)),
        envelope(_funded(g_poor, year, "33", "3374"), f"group-{g_poor}"),
        envelope(g.AccountabilityReportReturned(group_id=g_poor, report_id="lpj-2",
                                                reason_code="evidence_missing"),
                 f"group-{g_poor}", at(year, 9, 1)),
    ]
    good_stream, poor_stream = f"group-{g_good}", f"group-{g_poor}"
    mentoring = [
        envelope(m.MentorAssigned(group_id=g_good, tks_id=good, province_code="32",
                                  regency_code="3273", assigned_on=date(year, 1, 5)),
                 good_stream),
        envelope(m.MentorAssigned(group_id=g_poor, tks_id=poor, province_code="33",
                                  regency_code="3374", assigned_on=date(year, 1, 5)),
                 poor_stream),
        envelope(m.MentorAssigned(group_id=g_short, tks_id=short, province_code="32",
                                  regency_code="3204", assigned_on=date(year, 10, 1)),
                 f"group-{g_short}"),
    ]
    # the good TKS: every report on time, revenue up 40% from Q1 to Q4, a new worker a quarter
    for month in range(1, 13):
        revenue = 1_000_000 + 100_000 * ((month - 1) // 3) + (40_000 if month > 9 else 0)
        mentoring.append(envelope(_report(g_good, good, f"{year}-{month:02d}", revenue=revenue,
                                          new_workers=1 if month % 3 == 0 else 0), good_stream))
    last_filed = mentoring[-1]
    # December corrected to two new workers, then the original filing is delivered again: it
    # must not undo the correction (nor count twice); a later event on the same partition shows
    # that the duplicate has been consumed
    mentoring.append(envelope(_report(g_good, good, f"{year}-12", revenue=1_340_000,
                                      new_workers=2, amended=True), good_stream))
    mentoring.append(last_filed)
    mentoring.append(envelope(m.ReportOverdue(group_id=g_good, tks_id=good,
                                              period=f"{year + 1}-01"), good_stream))
    # the poor TKS: two reports on time, ten overdue
    for month in range(1, 13):
        period = f"{year}-{month:02d}"
        mentoring.append(envelope(
            _report(g_poor, poor, period, revenue=900_000) if month <= 2
            else m.ReportOverdue(group_id=g_poor, tks_id=poor, period=period), poor_stream))
    for month in (10, 11, 12):
        mentoring.append(envelope(_report(g_short, short, f"{year}-{month:02d}",
                                          revenue=500_000), f"group-{g_short}"))

    async with running_service(infra.kafka_bootstrap, database_url) as (_, client):
        assert (await client.post(f"/evaluations/{year}/open",
                                  headers=headers(Role.PROVINCE, province_code="32"))
                ).status_code == 403
        opened = await client.post(f"/evaluations/{year}/open", headers=ADMIN)
        assert opened.status_code == 201, opened.text
        assert opened.json()["status"] == "open"
        policy = opened.json()["policy"]
        assert opened.json()["policy_version"] == policy["version"]

        # cross-topic order is not guaranteed: mentoring first, recruitment last
        await publish(infra.kafka_bootstrap, mentoring + groups + recruitment)

        async def indicators_caught_up():
            preview = await client.get(f"/evaluations/{year}/preview", headers=ADMIN,
                                       params={"limit": 500})
            assert preview.status_code == 200, preview.text
            items = {i["tks_id"]: i for i in preview.json()["items"]}
            if not {good, poor, short, leaver} <= set(items):
                return None
            basis = {name: {i["name"]: i["basis"] for i in items[name]["indicators"]}
                     for name in (good, poor)}
            ready = (basis[good]["reporting_compliance"] == {"on_time": 12, "due": 12}
                     and basis[good]["new_workers"]["new_workers"] == 5
                     and basis[good]["lpj_completion"] == {"accepted": 1, "funded_groups": 1}
                     and basis[poor]["reporting_compliance"] == {"on_time": 2, "due": 12}
                     and basis[poor]["lpj_completion"]["funded_groups"] == 1
                     and items[leaver]["reason"] == "left_programme")
            sentinel = await client.get(f"/evaluations/{year + 1}/tks/{good}", headers=ADMIN)
            due_next_year = {i["name"]: i["basis"] for i in sentinel.json()["indicators"]}
            return items if ready and due_next_year["reporting_compliance"]["due"] == 1 else None

        items = await eventually(indicators_caught_up, timeout=60)
        assert items[good]["decision"] == "continue"
        assert items[poor]["decision"] == "replace"
        assert (items[short]["evaluable"], items[short]["reason"]) == (False, "too_few_months")
        assert items[short]["months_served"] == 3

        before_close = await end_offsets(infra.kafka_bootstrap, EVALUATION)
        first = await close_year(client, year)
        outcomes = {o["tks_id"]: o for o in first["outcomes"]}
        assert outcomes[good]["decision"] == "continue"
        assert outcomes[good]["score"] == 100.0
        assert outcomes[poor]["decision"] == "replace"
        assert outcomes[poor]["score"] == pytest.approx(100 * (0.30 * 2 / 12 + 0.15))
        assert short not in outcomes and leaver not in outcomes
        excluded = {x["tks_id"]: x["reason"] for x in first["not_evaluated"]}
        assert excluded[short] == "too_few_months"
        assert excluded[leaver] == "left_programme"
        summary = first["summary"]
        assert summary["status"] == "closed"
        assert summary["evaluated"] == len(first["outcomes"])
        assert summary["continued"] + summary["replaced"] == summary["evaluated"]
        by_name = {i["name"]: i for i in outcomes[good]["indicators"]}
        assert by_name["new_workers"]["value"] == 5.0  # the duplicate did not undo the amendment

        mine = {good, poor, short, leaver}

        def published(records) -> bool:
            values = [json.loads(rec.value) for rec in records]
            return any(v["event_type"] == "EvaluationClosed" and v["payload"]["year"] == year
                       for v in values) and \
                {v["payload"].get("tks_id") for v in values if v["event_type"] == "TksEvaluated"
                 and v["payload"]["year"] == year} >= {good, poor}

        records = await read_from(infra.kafka_bootstrap, before_close, published)
        evaluated = [rec for rec in records if json.loads(rec.value)["event_type"] == "TksEvaluated"
                     and json.loads(rec.value)["payload"]["tks_id"] in mine]
        assert sorted(json.loads(rec.value)["payload"]["tks_id"] for rec in evaluated) == \
            sorted([good, poor])
        for rec in evaluated:
            payload = json.loads(rec.value)["payload"]
            assert rec.key == f"tks-{payload['tks_id']}".encode()
            assert payload["policy_version"] == policy["version"]
            assert payload["decision"] == outcomes[payload["tks_id"]]["decision"]
            assert set(payload) == {"year", "tks_id", "province_code", "regency_code", "score",
                                    "decision", "indicators", "policy_version"}
        [closing] = [json.loads(rec.value) for rec in records
                     if json.loads(rec.value)["event_type"] == "EvaluationClosed"
                     and json.loads(rec.value)["payload"]["year"] == year]
        assert closing["stream_id"] == f"evaluation-{year}"
        assert (closing["payload"]["evaluated"], closing["payload"]["replaced"]) == \
            (summary["evaluated"], summary["replaced"])

        again = await client.post(f"/evaluations/{year}/close", headers=ADMIN)
        assert again.status_code == 409
        assert again.json()["error"]["result"] == first

        # after the close: a late filing for the poor TKS is kept and listed, results stay
        late = envelope(_report(g_poor, poor, f"{year}-05", revenue=2_000_000, on_time=False),
                        poor_stream)
        await publish(infra.kafka_bootstrap, [late])

        async def listed_as_late():
            page = await client.get(f"/evaluations/{year}/late-events", headers=AGENCY)
            assert page.status_code == 200, page.text
            return [e for e in page.json()["items"] if e["event_id"] == str(late.event_id)]

        [listed] = await eventually(listed_as_late)
        assert (listed["event_type"], listed["tks_id"], listed["group_id"]) == \
            ("ReportFiled", poor, g_poor)
        poor_now = await client.get(f"/evaluations/{year}/tks/{poor}", headers=ADMIN)
        assert poor_now.status_code == 200
        assert poor_now.json()["provisional"] is False
        assert poor_now.json()["score"] == outcomes[poor]["score"]
        results = await client.get(f"/evaluations/{year}/results", headers=ADMIN,
                                   params={"decision": "replace", "limit": 500})
        assert {i["tks_id"]: i["score"] for i in results.json()["items"]}[poor] == \
            outcomes[poor]["score"]
        assert (await client.get(f"/evaluations/{year}/preview", headers=ADMIN)).status_code \
            == 409

        # who may read what
        west_java = headers(Role.PROVINCE, "dinas-32", province_code="32")
        mine_only = await client.get(f"/evaluations/{year}/results", headers=west_java,
                                     params={"limit": 500})
        assert mine_only.status_code == 200
        assert {i["province_code"] for i in mine_only.json()["items"]} == {"32"}
        assert good in {i["tks_id"] for i in mine_only.json()["items"]}
        assert (await client.get(f"/evaluations/{year}/results", headers=west_java,
                                 params={"province_code": "33"})).status_code == 403
        assert (await client.get(f"/evaluations/{year}/tks/{poor}",
                                 headers=west_java)).status_code == 403
        as_good = headers(Role.TKS, good, tks_id=good)
        own = await client.get(f"/evaluations/{year}/tks/{good}", headers=as_good)
        assert own.status_code == 200
        assert own.json()["decision"] == "continue"
        assert sum(i["contribution"] for i in own.json()["indicators"]) == pytest.approx(100)
        assert (await client.get(f"/evaluations/{year}/tks/{poor}",
                                 headers=as_good)).status_code == 403
        short_view = await client.get(f"/evaluations/{year}/tks/{short}", headers=ADMIN)
        assert (short_view.json()["evaluated"], short_view.json()["reason"]) == \
            (False, "too_few_months")
        spread = await client.get(f"/evaluations/{year}/distribution", headers=AGENCY,
                                  params={"bucket_width": 20})
        assert spread.status_code == 200
        buckets = spread.json()["buckets"]
        assert len(buckets) == 5
        assert sum(b["count"] for b in buckets) == summary["evaluated"]
        assert buckets[-1]["count"] >= 1 and buckets[1]["count"] >= 1  # 100 and 20
