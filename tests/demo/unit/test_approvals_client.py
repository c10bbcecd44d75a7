"""The clients' four-eyes helpers (scripts/approvals.py) take both answers: a result carried out
at once passes through, a pending one is granted by the checker (in chunks of <= 500), a
request already waiting is granted, a request granted before gives its first result. The real
services: tests/e2e/test_programme_year.py."""

from __future__ import annotations

import asyncio

import pytest

from scripts.api_client import ApiError
from scripts.approvals import MAX_GRANT, carried_out, carried_out_bulk, waiting_id


class FakeChecker:
    """POST /approvals/grant and /approvals/{id}/grant, in memory."""

    def __init__(self, granted_before: set[str] = frozenset(), refuse: set[str] = frozenset()):
        self.calls: list[tuple[str, list[str]]] = []
        self.granted_before, self.refuse = set(granted_before), set(refuse)

    async def post(self, service: str, path: str, body: dict | None = None, **_: object) -> dict:
        if path == "/approvals/grant":
            self.calls.append((service, body["request_ids"]))
            return {"results": [self._one(rid) for rid in body["request_ids"]]}
        rid = path.split("/")[2]
        self.calls.append((service, [rid]))
        answer = self._one(rid)
        return {"request_id": rid, "state": "granted", "result": answer["result"]} \
            if answer["status"] == 200 else {"error": answer["error"]}

    async def get(self, service: str, path: str, **_: object) -> dict:
        rid = path.split("/")[2]  # GET /approvals/{id}: a refused grant left it pending
        return {"request_id": rid, "state": "granted" if rid in self.granted_before
                else "pending", "result": None}

    def _one(self, rid: str) -> dict:
        if rid in self.refuse:
            return {"request_id": rid, "status": 409,
                    "error": {"status": 409, "reason": "tranche already funded"}}
        if rid in self.granted_before:
            return {"request_id": rid, "status": 409, "error": {
                "status": 409, "state": "granted", "result": {"funded": rid, "first": True}}}
        return {"request_id": rid, "status": 200, "state": "granted",
                "result": {"funded": rid}}


def pending(rid: str) -> dict:
    return {"state": "pending", "request_id": rid, "command_type": "fund"}


def test_a_direct_answer_passes_through_and_a_pending_one_is_granted():
    checker = FakeChecker()
    direct = {"group_id": "g1", "funded_total": 20_000_000}
    assert asyncio.run(carried_out(checker, "groups", direct)) is direct
    assert checker.calls == []
    assert asyncio.run(carried_out(checker, "groups", pending("r1"))) == {"funded": "r1"}
    assert checker.calls == [("groups", ["r1"])]


def test_a_grant_given_before_answers_its_first_result_and_a_refusal_raises():
    checker = FakeChecker(granted_before={"r1"}, refuse={"r2"})
    assert asyncio.run(carried_out(checker, "groups", pending("r1"))) == \
        {"funded": "r1", "first": True}
    with pytest.raises(ApiError):
        asyncio.run(carried_out(FakeChecker(refuse={"r2"}), "groups", pending("r2")))


def test_a_bulk_answer_is_granted_in_chunks_of_at_most_500():
    checker = FakeChecker(refuse={"r7"})
    items = [{"group_id": f"g{i}", "status": 202, "result": pending(f"r{i}")}
             for i in range(1200)]
    items[3] = {"group_id": "g3", "status": 201, "result": {"funded": "at once"}}
    items[4] = {"group_id": "g4", "status": 422, "error": {"reason": "not approved"}}
    items[5] = {"group_id": "g5", "status": 409,
                "error": {"reason": "a request for tranche 1 waits", "request_id": "old5"}}
    answer = asyncio.run(carried_out_bulk(checker, "groups", {"batch_id": "b", "results": items}))
    assert [len(ids) for _, ids in checker.calls] == [MAX_GRANT, MAX_GRANT, 1200 - 2 - 1000]
    results = answer["results"]
    assert len(results) == 1200 and [r["group_id"] for r in results] == \
        [f"g{i}" for i in range(1200)]
    assert results[0] == {"group_id": "g0", "request_id": "r0", "status": 200,
                          "result": {"funded": "r0"}}
    assert results[3]["result"] == {"funded": "at once"} and results[4]["status"] == 422
    assert results[5]["status"] == 200 and results[5]["request_id"] == "old5"  # waited
    assert results[7]["status"] == 409 and "tranche" in results[7]["error"]["reason"]


def test_what_counts_as_waiting_for_a_checker():
    assert waiting_id({"status": 202, "result": pending("r")}) == "r"
    assert waiting_id({"status": 201, "result": {"state": "funded"}}) is None
    assert waiting_id({"status": 409, "error": {"request_id": "r"}}) == "r"
    # closed before: its first result, nothing to grant
    assert waiting_id({"status": 409, "error": {"request_id": "r", "result": {}}}) is None
    assert waiting_id({"status": 422, "error": {"request_id": "r"}}) is None
