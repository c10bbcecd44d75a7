"""Every write route of the groups service, with a request that succeeds, sent twice under one
Idempotency-Key: the first writes events, the retry writes none and answers the same. The
routes walked are checked against the app's own list, so a new write route fails this test
until it is walked too. Four-eyes commands are asked for by ADMIN and granted (or rejected) by
CHECKER, each step under its own key."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest

from shared.idempotency import WRITES
from tests.groups.groups_support import (
    ADMIN,
    CHECKER,
    csv_file,
    csv_rows,
    member_inputs,
    registration,
)

pytestmark = pytest.mark.integration


class Twice:
    def __init__(self, client: httpx.AsyncClient, database_url: str) -> None:
        self.client, self.database_url = client, database_url
        self.walked: set[tuple[str, str]] = set()

    async def events(self) -> int:
        conn = await asyncpg.connect(self.database_url)
        try:
            return await conn.fetchval("SELECT count(*) FROM events")
        finally:
            await conn.close()

    async def __call__(self, method: str, route: str, expected: int, *, csv: bytes | None = None,
                       who: dict[str, str] = ADMIN, **params: str) -> dict:
        self.walked.add((method, route))
        path = route.format(**params)
        headers = {**who, "Idempotency-Key": f"walk-{uuid.uuid4()}"}
        body = {"content": csv, "headers": {**headers, "Content-Type": "text/csv"}} if csv \
            else {"json": params.get("json_body"), "headers": headers}
        before = await self.events()
        first = await self.client.request(method, path, **body)
        assert first.status_code == expected, (route, first.text)
        written = await self.events()
        assert written > before, f"{route} wrote nothing"
        retry = await self.client.request(method, path, **body)
        assert (retry.status_code, retry.content) == (first.status_code, first.content), route
        assert retry.headers["idempotent-replayed"] == "true"
        assert await self.events() == written, f"{route} wrote again on a retry"
        return first.json()


def funding(tranche: int = 1) -> dict:
    return {"tranche": tranche, "amount": 20_000_000, "disbursed_on": "2023-06-01",
            "budget_year": 2023}


async def test_every_groups_write_runs_once_under_one_key(groups):
    twice = Twice(groups.client, groups.database_url)
    g = (await twice("POST", "/groups", 201, json_body=registration()))["group_id"]
    await twice("PUT", "/groups/{group_id}/members", 200, group_id=g,
                json_body={"members": member_inputs(10)})
    await twice("POST", "/groups/{group_id}/approval", 200, group_id=g)
    asked = await twice("POST", "/groups/{group_id}/funding", 202, group_id=g,
                        json_body=funding())
    await twice("POST", "/approvals/{request_id}/grant", 200, request_id=asked["request_id"],
                who=CHECKER)
    lpj = {"tools": 12_000_000, "materials": 7_500_000, "other": 0, "evidence_count": 4}
    first = await twice("POST", "/groups/{group_id}/lpj", 201, group_id=g, json_body=lpj)
    await twice("POST", "/groups/{group_id}/lpj/{report_id}/return", 200, group_id=g,
                report_id=first["report_id"],
                json_body={"reason_code": "evidence_missing", "note": "receipts unreadable"})
    second = await twice("POST", "/groups/{group_id}/lpj", 201, group_id=g,
                         json_body={**lpj, "materials": 8_000_000, "evidence_count": 21})
    asked = await twice("POST", "/groups/{group_id}/lpj/{report_id}/acceptance", 202,
                        group_id=g, report_id=second["report_id"])
    await twice("POST", "/approvals/{request_id}/grant", 200, request_id=asked["request_id"],
                who=CHECKER)
    await twice("POST", "/groups/{group_id}/bimtek", 201, group_id=g,
                json_body={"subject": "Bimtek kelembagaan", "held_on": "2023-09-12"})
    await twice("POST", "/groups/{group_id}/product-evidence", 201, group_id=g,
                json_body={"product": "Kue tradisional", "evidence_count": 3,
                           "recorded_on": "2023-10-02"})
    await twice("POST", "/groups/{group_id}/expos", 201, group_id=g,
                json_body={"expo_code": "gelar_produk_tkm_bali", "held_on": "2023-11-20"})
    await twice("POST", "/groups/{group_id}/advancement", 200, group_id=g)
    await twice("POST", "/groups/{group_id}/dissolution", 200, group_id=g,
                json_body={"reason_code": "members_left"})

    rejected = (await groups.client.post("/groups", json=registration(), headers=ADMIN)).json()
    await twice("POST", "/groups/{group_id}/rejection", 200, group_id=rejected["group_id"],
                json_body={"reason_code": "duplicate_proposal"})
    many = [(await groups.client.post("/groups", json=registration(), headers=ADMIN)).json()
            ["group_id"] for _ in range(2)]
    await twice("POST", "/groups/approvals", 200, json_body={"group_ids": many})
    batch = (await twice("POST", "/groups/fundings", 200,
                         json_body={"items": [{**funding(), "group_id": m} for m in many]}))
    await twice("POST", "/approvals/grant", 200, who=CHECKER, json_body={
        "request_ids": [r["result"]["request_id"] for r in batch["results"]]})
    submitted = (await twice("POST", "/lpj/submissions", 200, json_body={
        "items": [{**lpj, "group_id": m} for m in many]}))["results"]
    await twice("POST", "/lpj/returns", 200, json_body={"items": [
        {"group_id": many[0], "report_id": submitted[0]["result"]["report_id"],
         "reason_code": "evidence_missing"}]})
    batch = await twice("POST", "/lpj/acceptances", 200, json_body={"items": [
        {"group_id": many[1], "report_id": submitted[1]["result"]["report_id"]}]})
    await twice("POST", "/approvals/{request_id}/reject", 200, who=CHECKER,
                request_id=batch["results"][0]["result"]["request_id"],
                json_body={"reason_code": "missing_evidence"})
    await twice("POST", "/groups/imports", 200,
                csv=csv_file(csv_rows(f"Walk {uuid.uuid4().hex[:8]}")))

    # a member's rights (shared.privacy): subject access, correction, erasure
    member = registration()
    assert (await groups.client.post("/groups", json=member, headers=ADMIN)).status_code == 201
    nik = member["members"][0]["nik"]
    await twice("POST", "/privacy/subject-access", 200, json_body={"nik": nik})
    await twice("POST", "/privacy/correction", 200,
                json_body={"nik": nik, "changes": {"name": "Siti Aminah"}})
    await twice("POST", "/privacy/erasure", 200,
                json_body={"nik": nik, "reason_code": "subject_request"})

    rules = (await groups.client.get("/rules/2023", headers=ADMIN)).json()["rules"]
    await twice("PUT", "/rules/{year}", 200, year="2088",
                json_body={"rules": rules, "note": "walked under a key"})

    spec = (await groups.client.get("/openapi.json")).json()["paths"]
    routes = {(m.upper(), p) for p, ops in spec.items() for m in ops if m.upper() in WRITES}
    assert routes - twice.walked == set(), "write routes not walked under a key"
