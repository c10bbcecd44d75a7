"""The simulator's LPJ phase: a few bulk requests instead of thousands of single calls, the same
requests for the same seed, and every funded group ends with one accepted report."""

from __future__ import annotations

import asyncio
import itertools
from datetime import date

from scripts.scenario import build
from scripts.simulate import Options, Simulation, progress_bar


class FakeGroups:
    """The groups service's LPJ bulk endpoints, in memory (the real ones: tests/groups)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[dict]]] = []
        self.reports: dict[str, dict] = {}  # report id -> {"group_id", "status", "body"}
        self.ids = itertools.count(1)

    async def post(self, service: str, path: str, body: dict, **_: object) -> dict:
        assert service == "groups"
        self.calls.append((path, body["items"]))
        return {"results": [self._one(path, item) for item in body["items"]]}

    def _one(self, path: str, item: dict) -> dict:
        group_id = item["group_id"]
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


def lpj_phase(groups: int, batch: int) -> FakeGroups:
    fake = FakeGroups()
    scenario = build(seed=5, groups=groups)
    with progress_bar(disable=True) as progress:
        sim = Simulation(fake, scenario, Options(batch=batch, returned_lpj_share=0.2), progress)
        ids = [f"g{i:04d}" for i in range(groups)]
        sim.run.funded_on = dict.fromkeys(ids, date(2023, 3, 15))
        asyncio.run(sim.account_for_funds())
    return fake


def test_every_group_accounts_for_its_funds_in_a_few_bulk_requests():
    fake = lpj_phase(groups=250, batch=100)
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


def test_the_same_seed_sends_the_same_requests():
    def bodies(fake: FakeGroups) -> list:
        return [(path, [{k: v for k, v in item.items() if k != "report_id"} for item in items])
                for path, items in fake.calls]

    assert bodies(lpj_phase(groups=120, batch=50)) == bodies(lpj_phase(groups=120, batch=50))
