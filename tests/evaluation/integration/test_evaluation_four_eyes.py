"""Four eyes on the year-end close (issue 18, docs/four-eyes.md), on the real service, Postgres
and Kafka: one ministry admin asks (202 pending, the year stays open, nothing is published),
another grants (the close is carried out once, its answer is the grant's result); the maker
cannot grant, a provincial officer can neither ask nor check, racing grants close once, a
rejected close is never carried out, and the approval requests rebuild as they are live."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import date

import asyncpg
import pytest

from services.evaluation.app import project_all
from services.evaluation.projections import HANDLERS, OWN_TABLES
from shared.aggregate import UnitOfWork
from shared.approvals import APPROVAL_TABLES
from shared.auth import Role
from shared.consumer import apply_handler
from shared.contracts import mentoring as m
from shared.contracts import recruitment as r
from shared.envelope import parse_payload
from shared.projections import rebuild
from shared.topics import EVALUATION
from tests.evaluation.integration.evaluation_helpers import (
    ADMIN,
    AGENCY,
    CHECKER,
    end_offsets,
    envelope,
    headers,
    read_from,
    running_service,
)
from tests.shared.integration.rebuild_support import table_rows

pytestmark = pytest.mark.integration

OFFICER = headers(Role.PROVINCE, "officer", province_code="32")


async def _seed_year(app, year: int, run: str, count: int = 3) -> list[str]:
    """Facts of `count` TKS serving the whole year in West Java, written as the consumer
    handlers write them (the broker is not what is tested here)."""
    tks = [f"fe-{run}-{n}" for n in range(count)]
    events = []
    for n, tks_id in enumerate(tks):
        group = f"fe-grp-{run}-{n}"
        events.append(envelope(r.TksRecruited(
            tks_id=tks_id, round_id="r", year=year, stage=1, province_code="32",
            regency_code="3273", contract_start=date(year, 1, 1),
            contract_end=date(year, 12, 31)), f"tks-{tks_id}"))
        for month in range(1, 13):
            events.append(envelope(m.ReportFiled(
                group_id=group, tks_id=tks_id, period=f"{year}-{month:02d}",
                revenue=1_000_000 + 100_000 * month * n, production_units=1,
                production_unit="pcs", members_active=10, new_workers=n,
                on_time=month % (n + 1) == 0), f"group-{group}"))
    ctx = app.state.ctx
    async with ctx.pool.acquire() as conn, conn.transaction():
        uow = UnitOfWork(conn, ctx.store, "test", uuid.uuid4())
        for env in events:
            await apply_handler(HANDLERS[env.event_type], uow, [(env, parse_payload(env))])
    return tks


async def _fetch(database_url: str, sql: str, *args):
    conn = await asyncpg.connect(database_url)
    try:
        return [dict(row) for row in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def _written(database_url: str) -> tuple[int, int]:
    [row] = await _fetch(database_url, "SELECT (SELECT count(*) FROM events) AS events, "
                                       "(SELECT count(*) FROM outbox) AS outbox")
    return row["events"], row["outbox"]


async def test_a_close_needs_a_maker_and_another_admin_who_grants_it_once(infra, database_url):
    year, run = random.randint(2030, 2090), uuid.uuid4().hex[:8]
    async with running_service(infra.kafka_bootstrap, database_url) as (app, api):
        tks = await _seed_year(app, year, run)
        assert (await api.post(f"/evaluations/{year}/open", headers=ADMIN)).status_code == 201
        before = await end_offsets(infra.kafka_bootstrap, EVALUATION)

        # a provincial officer cannot ask (the close is national), an agency neither
        for outsider in (OFFICER, AGENCY):
            refused = await api.post(f"/evaluations/{year}/close", headers=outsider)
            assert refused.status_code == 403, refused.text
        written = await _written(database_url)

        # the maker asks: 202 pending, the year stays open, nothing is published
        asked = await api.post(f"/evaluations/{year}/close", headers=ADMIN)
        assert asked.status_code == 202, asked.text
        pending = asked.json()
        assert (pending["state"], pending["command_type"], pending["target"], pending["year"],
                pending["checker_roles"]) == ("pending", "close_year", f"evaluation-{year}",
                                              year, ["ministry_admin"])
        request_id = pending["request_id"]
        cycle = (await api.get(f"/evaluations/{year}", headers=ADMIN)).json()
        assert (cycle["status"], cycle["closed_at"], cycle["evaluated"]) == ("open", None, None)
        assert (await api.get(f"/evaluations/{year}/results", headers=ADMIN)).status_code == 404
        assert await _fetch(database_url, "SELECT event_type FROM events WHERE stream_id = $1 "
                                          "ORDER BY stream_version", f"evaluation-{year}") == [
            {"event_type": "EvaluationOpened"}, {"event_type": "evaluation.PolicyAdopted"}]
        events_after, outbox_after = await _written(database_url)
        assert (events_after, outbox_after) == (written[0] + 1, written[1])  # the request only

        assert pending["already_pending"] is False
        # asking again while it waits (a lost answer, another admin): the same request,
        # nothing written
        for who in (ADMIN, CHECKER):
            again = await api.post(f"/evaluations/{year}/close", headers=who)
            assert again.status_code == 202, again.text
            assert again.json() == {**pending, "already_pending": True}
        assert await _written(database_url) == (events_after, outbox_after)

        # the request as a checker sees it: national (no province), the maker's pseudonym
        listed = (await api.get("/approvals", headers=CHECKER,
                                params={"checkable": "true", "command_type": "close_year"})).json()
        [item] = [i for i in listed["items"] if i["request_id"] == request_id]
        assert (item["province_code"], item["payload"], item["state"]) == (
            None, {"year": year}, "pending")
        # not checkable by its maker, invisible to a provincial officer
        mine = (await api.get("/approvals", headers=ADMIN, params={"checkable": "true"})).json()
        assert request_id not in [i["request_id"] for i in mine["items"]]
        theirs = (await api.get("/approvals", headers=OFFICER)).json()
        assert request_id not in [i["request_id"] for i in theirs["items"]]
        assert (await api.get(f"/approvals/{request_id}", headers=OFFICER)).status_code == 404

        # the maker can neither grant nor reject; an officer or an agency cannot check
        for attempt in ("grant", "reject"):
            body = {"reason_code": "other"} if attempt == "reject" else None
            self_check = await api.post(f"/approvals/{request_id}/{attempt}", headers=ADMIN,
                                        json=body)
            assert self_check.status_code == 403, self_check.text
            assert self_check.json()["error"]["field"] == "checker"
            officer = await api.post(f"/approvals/{request_id}/{attempt}", headers=OFFICER,
                                     json=body)
            assert officer.status_code == 403, officer.text
            assert (await api.post(f"/approvals/{request_id}/{attempt}", headers=AGENCY,
                                   json=body)).status_code == 403
        assert await _written(database_url) == (events_after, outbox_after)
        assert (await api.get(f"/evaluations/{year}", headers=ADMIN)).json()["status"] == "open"

        # another admin grants: the close is carried out, its answer is the grant's result
        granted = await api.post(f"/approvals/{request_id}/grant", headers=CHECKER)
        assert granted.status_code == 200, granted.text
        assert (granted.json()["request_id"], granted.json()["state"]) == (request_id, "granted")
        result = granted.json()["result"]
        assert set(result) == {"summary", "outcomes", "not_evaluated"}
        assert result["summary"] == (await api.get(f"/evaluations/{year}",
                                                   headers=ADMIN)).json()
        assert result["summary"]["status"] == "closed"
        assert sorted(o["tks_id"] for o in result["outcomes"]) == sorted(tks)
        assert result["summary"]["evaluated"] == len(tks)

        # once: a second grant answers 409 with the first result, asking again 409 as before
        second = await api.post(f"/approvals/{request_id}/grant", headers=CHECKER)
        assert second.status_code == 409, second.text
        assert (second.json()["error"]["state"], second.json()["error"]["result"]) == (
            "granted", result)
        closed_again = await api.post(f"/evaluations/{year}/close", headers=ADMIN)
        assert closed_again.status_code == 409
        assert closed_again.json()["error"]["result"] == result  # what close answered before
        decided = (await api.get(f"/approvals/{request_id}", headers=CHECKER)).json()
        assert (decided["state"], decided["checker_role"], decided["result"]) == (
            "granted", "ministry_admin", result)
        assert decided["checker"] != decided["maker"]

        # who did what: the maker asked, the checker granted and closed, caused by the request
        rows = await _fetch(
            database_url, "SELECT stream_id, event_type, event_id, causation_id, actor "
            "FROM events WHERE stream_id IN ($1, $2) ORDER BY global_position",
            f"approval-{request_id}", f"evaluation-{year}")
        by_type = {row["event_type"]: row for row in rows}
        asked_event = by_type["approvals.ApprovalRequested"]
        closing = by_type["EvaluationClosed"]
        assert asked_event["actor"] != closing["actor"]
        assert closing["actor"] == by_type["approvals.ApprovalGranted"]["actor"]
        assert closing["causation_id"] == asked_event["event_id"]
        assert [row["event_type"] for row in rows].count("EvaluationClosed") == 1

        # on the topic: the close's outcomes and one EvaluationClosed, no approval event
        def closed_published(records) -> bool:
            return any(json.loads(rec.value)["event_type"] == "EvaluationClosed"
                       and json.loads(rec.value)["payload"]["year"] == year for rec in records)

        values = [json.loads(rec.value) for rec in
                  await read_from(infra.kafka_bootstrap, before, closed_published)]
        ours = [v for v in values if v["payload"].get("year") == year]
        assert sorted(v["event_type"] for v in ours) == \
            ["EvaluationClosed"] + ["TksEvaluated"] * len(tks)
        assert not [v for v in values if v["event_type"].startswith("approvals.")
                    or v["stream_id"].startswith("approval-")]
        [published] = [v for v in ours if v["event_type"] == "EvaluationClosed"]
        assert published["actor"] == closing["actor"]


async def test_racing_checkers_close_once_a_rejected_close_never_happens_and_it_rebuilds(
        infra, database_url):
    years = random.sample(range(2030, 2091), 2)
    run = uuid.uuid4().hex[:8]
    checkers = [headers(Role.ADMIN, f"checker-{n}") for n in range(3)]
    async with running_service(infra.kafka_bootstrap, database_url) as (app, api):
        for year in years:
            await _seed_year(app, year, f"{run}-{year}", count=2)
            assert (await api.post(f"/evaluations/{year}/open",
                                   headers=ADMIN)).status_code == 201
        raced, rejected = years

        # three admins grant one request at once: one closes, the others get 409
        request_id = (await api.post(f"/evaluations/{raced}/close", headers=ADMIN)).json()[
            "request_id"]
        answers = await asyncio.gather(*(api.post(f"/approvals/{request_id}/grant", headers=who)
                                         for who in checkers))
        assert sorted(a.status_code for a in answers) == [200, 409, 409], \
            [a.text for a in answers]
        [won] = [a.json() for a in answers if a.status_code == 200]
        for lost in (a.json() for a in answers if a.status_code == 409):
            assert lost["error"]["result"] == won["result"]
        counted = await _fetch(database_url, "SELECT event_type, count(*) AS n FROM events "
                               "WHERE stream_id = $1 OR event_type = 'TksEvaluated' AND "
                               "payload->>'year' = $2 GROUP BY 1 ORDER BY 1",
                               f"evaluation-{raced}", str(raced))
        assert {c["event_type"]: c["n"] for c in counted} == {
            "EvaluationClosed": 1, "EvaluationOpened": 1, "TksEvaluated": 2,
            "evaluation.PolicyAdopted": 1}

        # a rejected close: a reason code the year's rules list, never carried out
        request_id = (await api.post(f"/evaluations/{rejected}/close", headers=ADMIN)).json()[
            "request_id"]
        unknown = await api.post(f"/approvals/{request_id}/reject", headers=CHECKER,
                                 json={"reason_code": "bad_weather"})
        assert (unknown.status_code, unknown.json()["error"]["field"]) == (422, "reason_code")
        no_code = await api.post(f"/approvals/{request_id}/reject", headers=CHECKER, json={})
        assert no_code.status_code == 422
        refused = await api.post(f"/approvals/{request_id}/reject", headers=CHECKER, json={
            "reason_code": "missing_evidence", "note": "the December reports are not in yet"})
        assert refused.status_code == 200, refused.text
        assert (refused.json()["state"], refused.json()["reason_code"]) == (
            "rejected", "missing_evidence")
        late_grant = await api.post(f"/approvals/{request_id}/grant", headers=checkers[0])
        assert (late_grant.status_code, late_grant.json()["error"]["state"]) == (409, "rejected")
        assert (await api.get(f"/evaluations/{rejected}",
                              headers=ADMIN)).json()["status"] == "open"
        # the maker may ask again once it was rejected; this one stays pending
        asked_again = await api.post(f"/evaluations/{rejected}/close", headers=ADMIN)
        assert asked_again.status_code == 202, asked_again.text
        assert asked_again.json()["request_id"] != request_id

        # the approval requests (granted, rejected, pending) and results rebuild as they are
        tables = (*OWN_TABLES, *APPROVAL_TABLES)
        ctx = app.state.ctx
        async with ctx.pool.acquire() as conn:
            live = await table_rows(conn, tables)
            states = sorted(row[11] for row in live["approval_requests"])
            assert states == ["granted", "pending", "rejected"]
            await conn.execute("DELETE FROM approval_requests")
            assert await rebuild(conn, project_all, tables) > 0
            assert await table_rows(conn, tables) == live


async def test_a_year_whose_rules_do_not_want_four_eyes_closes_at_once_and_refusals_write_nothing(
        infra, database_url):
    year = random.randint(2030, 2090)
    async with running_service(infra.kafka_bootstrap, database_url) as (_, api):
        # the shipped rules (seeded on first use) want four eyes for the close
        rules = (await api.get(f"/rules/{year}", headers=ADMIN)).json()["rules"]
        # refused at asking time as the close refuses: no evaluation opened
        before = await _written(database_url)
        not_open = await api.post(f"/evaluations/{year}/close", headers=ADMIN)
        assert (not_open.status_code, not_open.json()["error"]["field"]) == (404, "year")
        assert await _written(database_url) == before

        assert rules["four_eyes"]["commands"]["close_year"] == {
            "makers": ["ministry_admin"], "checkers": ["ministry_admin"], "threshold": 0}
        # checkers must be ministry admins or provincial officers: an agency is refused
        bad = {**rules, "four_eyes": {**rules["four_eyes"], "commands": {
            "close_year": {"makers": ["ministry_admin"], "checkers": ["agency"]}}}}
        refused = await api.put(f"/rules/{year}", headers=ADMIN, json={"rules": bad})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["field"].startswith(
            "rules.four_eyes.commands.close_year.checkers")

        # an adopted version that no longer lists close_year: the close is carried out at once
        alone = {**rules, "version": "alone", "four_eyes": {**rules["four_eyes"],
                                                             "commands": {}}}
        adopted = await api.put(f"/rules/{year}", headers=ADMIN, json={"rules": alone})
        assert adopted.status_code == 200, adopted.text
        assert (await api.post(f"/evaluations/{year}/open", headers=ADMIN)).status_code == 201
        closed = await api.post(f"/evaluations/{year}/close", headers=ADMIN)
        assert closed.status_code == 200, closed.text
        assert closed.json()["summary"]["status"] == "closed"
        assert closed.json()["summary"]["policy_version"] == "alone"
        assert (await api.get("/approvals", headers=CHECKER,
                              params={"state": "any"})).json()["total"] == 0

        # closed: refused at asking time with the first result, nothing written
        before = await _written(database_url)
        again = await api.post(f"/evaluations/{year}/close", headers=ADMIN)
        assert again.status_code == 409
        assert again.json()["error"]["result"] == closed.json()
        assert await _written(database_url) == before
