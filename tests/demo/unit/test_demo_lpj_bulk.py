"""The simulator's LPJ phase: a few bulk requests instead of thousands of single calls, the same
requests for the same seed, and every funded group ends with one accepted report: accepted at
once, or (four eyes, docs/four-eyes.md) asked by the simulator's admin and granted by another
person in the same chunks."""

from __future__ import annotations

import asyncio
import itertools
from datetime import date

import pytest

from scripts.approvals import CHECKER
from scripts.scenario import build
from scripts.simulate import Options, Simulation, progress_bar


class FakeGroups:
    """The groups service's LPJ bulk endpoints, in memory (the real ones: tests/groups)."""

    MAKER = "programme-simulator"

    def __init__(self, four_eyes: bool = False) -> None:
        self.calls: list[tuple[str, list[dict]]] = []
        self.reports: dict[str, dict] = {}  # report id -> {"group_id", "status", "body"}
        self.ids = itertools.count(1)
        self.four_eyes, self.subject = four_eyes, self.MAKER
        self.pending: dict[str, dict] = {}  # request id -> the acceptance asked for
        self.grants: list[tuple[str, list[str]]] = []  # (checker, request ids) per call

    def person(self, subject: str) -> FakeGroups:
        other = object.__new__(FakeGroups)
        other.__dict__ = self.__dict__.copy()  # the same lists and dicts: one service
        other.subject = subject
        return other

    async def post(self, service: str, path: str, body: dict, **_: object) -> dict:
        assert service == "groups"
        if path == "/approvals/grant":
            assert self.subject != self.MAKER, "a maker never checks their own request"
            assert 1 <= len(body["request_ids"]) <= 500
            self.grants.append((self.subject, body["request_ids"]))
            return {"results": [self._grant(rid) for rid in body["request_ids"]]}
        assert self.subject == self.MAKER
        self.calls.append((path, body["items"]))
        return {"results": [self._one(path, item) for item in body["items"]]}

    def _grant(self, request_id: str) -> dict:
        item = self.pending.pop(request_id)  # granted once
        answer = self._one("/lpj/acceptances", item, checked=True)
        return {"request_id": request_id, "status": 200, "state": "granted", **answer}

    def _one(self, path: str, item: dict, checked: bool = False) -> dict:
        group_id = item["group_id"]
        if path == "/lpj/acceptances" and self.four_eyes and not checked:
            request_id = f"q{next(self.ids)}"
            self.pending[request_id] = item
            return {"group_id": group_id, "status": 202,
                    "result": {"state": "pending", "request_id": request_id}}
        if path == "/lpj/submissions":
            pending = [r for r in self.reports.values()
                       if r["group_id"] == group_id and r["status"] in ("submitted", "accepted")]
            if pending:
                return {"group_id": group_id, "status": 409, "error": {}}
            report_id = f"r{next(self.ids)}"
            self.reports[report_id] = {"group_id": group_id, "status": "submitted",
                                       "body": item}
            return {"group_id": group_id, "status": 201,
                    "result": {"group_id": group_id, "report_id": report_id}}
        report = self.reports[item["report_id"]]
        assert report["group_id"] == group_id and report["status"] == "submitted"
        report["status"] = {"/lpj/returns": "returned", "/lpj/acceptances": "accepted"}[path]
        return {"group_id": group_id, "status": 200,
                "result": {"group_id": group_id, "report_id": item["report_id"]}}


def lpj_phase(groups: int, batch: int, four_eyes: bool = False) -> FakeGroups:
    fake = FakeGroups(four_eyes)
    scenario = build(seed=5, groups=groups)
    with progress_bar(disable=True) as progress:
        sim = Simulation(fake, scenario, Options(batch=batch, returned_lpj_share=0.2), progress)
        ids = [f"g{i:04d}" for i in range(groups)]
        sim.run.funded_on = dict.fromkeys(ids, date(2023, 3, 15))
        asyncio.run(sim.account_for_funds())
    return fake


@pytest.mark.parametrize("four_eyes", [False, True])
def test_every_group_accounts_for_its_funds_in_a_few_bulk_requests(four_eyes):
    fake = lpj_phase(groups=250, batch=100, four_eyes=four_eyes)
    by_group: dict[str, list[str]] = {}
    for report in fake.reports.values():
        by_group.setdefault(report["group_id"], []).append(report["status"])
    assert len(by_group) == 250
    returned = [g for g, statuses in by_group.items() if statuses == ["returned", "accepted"]]
    assert all(statuses in (["accepted"], ["returned", "accepted"])
               for statuses in by_group.values())
    assert 20 < len(returned) < 80  # about a fifth
    # submissions, returns, the returned ones' second submissions, acceptances: 100 a request
    assert [path for path, _ in fake.calls] == (
        ["/lpj/submissions"] * 3 + ["/lpj/returns"] + ["/lpj/submissions"]
        + ["/lpj/acceptances"] * 3)
    accepted = [r["body"] for r in fake.reports.values() if r["status"] == "accepted"]
    assert all(b["tools"] + b["materials"] + b["other"] <= 20_000_000 for b in accepted)
    assert all(8 <= b["evidence_count"] <= 30 for b in accepted)
    # four eyes: every acceptance granted once by the checker, in the acceptances' own chunks
    assert not fake.pending
    if four_eyes:
        assert {who for who, _ in fake.grants} == {CHECKER}
        assert sorted(len(ids) for _, ids in fake.grants) == [50, 100, 100]
    else:
        assert fake.grants == []


def test_the_same_seed_sends_the_same_requests():
    def bodies(fake: FakeGroups) -> list:
        return [(path, [{k: v for k, v in item.items() if k != "report_id"} for item in items])
                for path, items in fake.calls]

    assert bodies(lpj_phase(groups=120, batch=50)) == bodies(lpj_phase(groups=120, batch=50))
