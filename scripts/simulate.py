"""Drives a programme year through the four services' HTTP APIs, only.

recruitment rounds and briefing stages I-III -> groups registered (CSV), approved, funded ->
mentors assigned -> twelve monthly periods of reports (some missing, some late) and closes ->
LPJs submitted (some returned, then accepted) -> a few TKS resign and their groups are
reassigned -> the year-end evaluation -> renewals and replacement vacancies for the next year.

Funding, LPJ acceptance and the year-end close go maker -> checker (four eyes,
docs/four-eyes.md): the simulator's admin asks, a second ministry admin (another token subject,
scripts.approvals.CHECKER) grants, in the same chunks as the bulk calls. A service or a year
without four eyes answers the result at once, and the simulator takes that as well.
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
import time
import uuid
from calendar import monthrange
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from scripts.api_client import Api
from scripts.approvals import carried_out, carried_out_bulk, checker_of
from scripts.scenario import GroupPlan, Person, Scenario, StagePlan
from shared.csv_export import safe_cell
from shared.nik import parse_nik

FUNDING = 20_000_000  # the 2023 norm for a TKM Pemula group
CASELOAD_CAP = 25  # mentoring's default; the simulator only plans resignations it can absorb
# codes of shared.contracts.mentoring.ProductionUnit
UNITS = {"poultry": "ekor", "cattle": "ekor", "goats": "ekor", "catering": "porsi",
         "printing": "lembar", "screen_printing": "lembar", "welding": "unit",
         "small_construction": "unit", "motorbike_repair": "layanan", "bridal_makeup": "layanan"}


class SimulationError(RuntimeError):
    pass


@dataclass
class Options:
    missing_share: float = 0.04  # reports never filed, for a diligent TKS
    late_share: float = 0.06  # reports filed after the deadline, for a diligent TKS
    returned_lpj_share: float = 0.08
    resignations: int = 3
    batch: int = 1000


@dataclass
class Run:
    """What the simulation did (ids it got back), not what it reports: the tables are read back
    from the services afterwards."""

    scenario: Scenario
    tks_ids: dict[str, str] = field(default_factory=dict)  # NIK -> tks id
    tks_of: dict[str, Person] = field(default_factory=dict)  # tks id -> person
    tks_regency: dict[str, str] = field(default_factory=dict)  # tks id -> regency code
    group_ids: dict[str, str] = field(default_factory=dict)  # group ref -> group id
    plans: dict[str, GroupPlan] = field(default_factory=dict)  # group id -> plan
    funded_on: dict[str, date] = field(default_factory=dict)  # group id -> date
    mentor: dict[str, str] = field(default_factory=dict)  # group id -> tks id
    resigned: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    reports_filed: int = 0
    reports_overdue: int = 0


class Simulation:
    def __init__(self, api: Api, scenario: Scenario, options: Options, progress: Progress):
        self.api, self.options, self.progress = api, options, progress
        self.checker = checker_of(api)  # the second pair of eyes: grants what `api` asked
        self.run = Run(scenario)
        self.rng = random.Random(scenario.seed * 7919)
        # the LPJ's draws from a generator of their own: they run beside the reports, whose
        # draws stay those of `rng` in the same order whatever the interleaving
        self.lpj_rng = random.Random(scenario.seed * 7919 + 1)
        self.year = scenario.year

    async def execute(self) -> Run:
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            # TKS recruited (recruitment) while the groups are registered and funded (groups):
            # neither waits for the other until mentors are assigned
            ("recruitment + groups (fund + grant), side by side", lambda: self._beside(
                ("recruitment", self.recruit),
                ("groups (fund + grant)", self.register_and_fund_groups))),
            ("mentors", self.assign_mentors),
            # the months' reports (mentoring) beside the LPJ (groups), as in a programme year:
            # two services, two cores, instead of one after the other
            ("reports + lpj (accept + grant), side by side", lambda: self._beside(
                ("reports", self.report_the_year),
                ("lpj (accept + grant)", self.account_for_funds))),
            ("evaluation (close + grant)", self.evaluate),
        ]
        for name, step in steps:
            await self._timed(name, step)
        return self.run

    async def _timed(self, name: str, step: Callable[[], Awaitable[None]],
                     record: bool = True) -> None:
        started = time.perf_counter()
        await step()
        seconds = round(time.perf_counter() - started, 1)
        if record:
            self.run.phases[name] = seconds
        if not self.progress.console.is_terminal:  # a log: a line a phase, not a bar
            self.progress.console.print(f"phase {name}: done in {seconds}s", highlight=False)

    async def _beside(self, *steps: tuple[str, Callable[[], Awaitable[None]]]) -> None:
        """Steps side by side, each its own line in a log; the table has their wall time
        together."""
        await asyncio.gather(*(self._timed(name, step, record=False) for name, step in steps))

    # ------------------------------------------------------------------ recruitment

    async def recruit(self) -> None:
        stages = self.run.scenario.stages
        task = self._task("recruiting TKS (rounds, applicants, briefings)",
                          sum(s.tks_count for s in stages))
        for stage in stages:
            round_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"tkm-demo/{self.run.scenario.seed}/"
                                                          f"{self.year}/{stage.target.stage}"))
            quotas = [{"province_code": r.province_code, "regency_code": r.code,
                       "places": len(r.tks)} for r in stage.regencies]
            await self.api.post("recruitment", "/rounds", {
                "year": self.year, "stage": stage.target.stage, "quotas": quotas,
                "round_id": round_id}, ok=(409,))
            items = [(r, person) for r in stage.regencies for person in r.tks]
            for chunk in _chunks(items, 300):
                body = {"items": [self._intake(stage, r.code, p) for r, p in chunk]}
                result = await self.api.post("recruitment",
                                             f"/rounds/{round_id}/recruitments:batch", body)
                for (_, person), item in zip(chunk, result["results"], strict=True):
                    if item["status"] != 201:
                        raise SimulationError(f"recruitment refused: {item['error']}")
                    self.run.tks_ids[person.nik] = item["tks_id"]
                    self.run.tks_of[item["tks_id"]] = person
                    self.run.tks_regency[item["tks_id"]] = item["regency_code"]
                self.progress.advance(task, len(chunk))
            await self.api.post("recruitment", f"/rounds/{round_id}/close", ok=(409,))

    def _intake(self, stage: StagePlan, regency: str, p: Person) -> dict:
        born = parse_nik(p.nik).birth_date
        return {
            "applicant": {"year": self.year, "nik": p.nik, "full_name": p.name, "sex": p.sex,
                          "birth_date": born.isoformat(),
                          "education": self.rng.choice(("D3", "D4", "S1", "S1", "S1", "S2")),
                          "domicile_regency_code": regency, "phone": p.phone,
                          "email": f"{p.name.lower().replace(' ', '.')}.{p.nik[-4:]}@example.id"},
            "briefing": {"city": ("Jakarta", "Surabaya", "Makassar")[stage.target.stage - 1],
                         "briefed_on": stage.target.briefed_on.isoformat()},
            "regency_code": regency,
        }

    # ------------------------------------------------------------------ groups

    async def register_and_fund_groups(self) -> None:
        catalogue = {b["code"] for b in await self.api.get("groups", "/business-types")}
        stages = self.run.scenario.stages
        total = sum(s.group_count for s in stages)
        register = self._task("registering groups from CSV files", total)
        approve = self._task("approving and funding groups (maker, then checker)", total)
        granting: asyncio.Task | None = None  # a chunk's grants, beside the next chunk's asks
        try:
            for stage in stages:
                plans = [g for r in stage.regencies for g in r.groups]
                unknown = {g.business_type for g in plans} - catalogue
                if unknown:
                    raise SimulationError(f"business types not in the catalogue: {sorted(unknown)}")
                await _side_by_side([lambda c=chunk: self._import(c, register)
                                     for chunk in _chunks(plans, 250)])
                ids = [self.run.group_ids[g.ref] for g in plans]
                funded_on = stage.target.funded_on
                for chunk in _chunks(ids, 500):
                    await self._bulk_ok("/groups/approvals", {"group_ids": chunk}, "approval")
                    asked = await self._bulk_ok("/groups/fundings", {"items": [
                        {"group_id": gid, "tranche": 1, "amount": FUNDING,
                         "disbursed_on": funded_on.isoformat(), "budget_year": self.year}
                        for gid in chunk]}, "funding")
                    if granting is not None:
                        await granting
                    granting = asyncio.create_task(self._grant_fundings(asked, funded_on, approve))
            if granting is not None:
                await granting
        finally:
            if granting is not None and not granting.done():
                granting.cancel()

    async def _grant_fundings(self, asked: dict, funded_on: date, task: Any) -> None:
        """The checker grants a bulk funding's pending requests (<= 500, one call)."""
        answer = await carried_out_bulk(self.checker, "groups", asked)
        failed = [r for r in answer["results"] if r["status"] >= 300]
        if failed:
            raise SimulationError(f"funding grants refused: {failed[:3]}")
        for r in answer["results"]:
            self.run.funded_on[r["group_id"]] = funded_on
        self.progress.advance(task, len(answer["results"]))

    async def _import(self, plans: list[GroupPlan], task: Any) -> None:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["group_ref", "year", "stage", "regency_code", "business_type",
                         "group_name", "member_nik", "member_name", "member_phone"])
        for g in plans:
            for m in g.members:
                writer.writerow([safe_cell(c) for c in (
                    g.ref, self.year, "pemula", g.regency_code, g.business_type, g.name,
                    m.nik, m.name, m.phone)])
        report = await self.api.post("groups", "/groups/imports",
                                     content=out.getvalue().encode(), content_type="text/csv")
        if report["errors"] or report["refused"]:
            raise SimulationError(f"group import refused rows: {report['errors'][:3]}")
        by_name = {g.name: g for g in plans}  # names carry the regency code: unique
        for result in report["results"]:
            plan = by_name[result["group_name"]]
            self.run.group_ids[plan.ref] = result["group_id"]
            self.run.plans[result["group_id"]] = plan
        self.progress.advance(task, len(plans))

    async def _bulk_ok(self, path: str, body: dict, what: str) -> dict:
        """The bulk answer, every item carried out or pending for a checker (202)."""
        answer = await self.api.post("groups", path, body)
        failed = [r for r in answer["results"] if r["status"] >= 300]
        if failed:
            raise SimulationError(f"{what} refused: {failed[:3]}")
        return answer

    # ------------------------------------------------------------------ mentors

    async def assign_mentors(self) -> None:
        task = self._task("waiting for mentoring to learn of TKS and funded groups", 1)
        expected_groups, expected_tks = len(self.run.funded_on), len(self.run.tks_of)
        provinces = sorted({g.regency_code[:2] for g in self.run.plans.values()})
        await _until(lambda: self._mentoring_knows(provinces, expected_groups, expected_tks),
                     "mentoring never learnt of every funded group and TKS")
        self.progress.advance(task)
        # mentoring's own suggestion breaks caseload ties by TKS id, and recruitment makes those
        # up afresh each run: the simulator applies the same rule (same regency, lightest
        # caseload, the cap) with ties broken by the scenario's order, one assignment a group
        groups = sorted(self.run.funded_on, key=self.run.funded_on.__getitem__)  # stable: plan order
        choice = balanced_mentors([(g, self.run.plans[g].regency_code) for g in groups],
                                  self._mentors_by_regency(), {}, CASELOAD_CAP)
        task = self._task("assigning mentors (balanced caseloads per regency)", len(groups))
        await self._assign(choice, lambda g: self.run.funded_on[g], task)
        self._check_every_group_has_a_mentor()

    def _mentors_by_regency(self) -> dict[str, list[str]]:
        """The active TKS of each regency in the scenario's order (the order they were recruited
        in), never in the order of the ids the service handed out."""
        by_regency: dict[str, list[str]] = {}
        for tks_id in self.run.tks_of:  # insertion order: the scenario's
            if tks_id not in self.run.resigned:
                by_regency.setdefault(self._regency_of(tks_id), []).append(tks_id)
        return by_regency

    async def _assign(self, choice: dict[str, str], on: Callable[[str], date],
                      task: Any = None) -> None:
        """The chosen mentors in bulk requests of `Options.batch` groups, side by side; the
        choice is the simulator's, so each one must be carried out as chosen."""
        async def send(chunk: list[dict]) -> None:
            answer = await self.api.post("mentoring", "/assignments/batch",
                                         {"assignments": chunk})
            refused = [r for r in answer["results"] if r["status"] != "assigned"]
            if refused:
                raise SimulationError(f"mentor assignments refused: {refused[:3]}")
            # every item carried out as chosen: mentoring now holds these mentors (the
            # results read them back at the end; 900 GET /tks calls here took seconds)
            self.run.mentor.update((a["group_id"], a["tks_id"]) for a in chunk)
            if task is not None:
                self.progress.advance(task, len(chunk))

        items = [{"group_id": g, "tks_id": t, "assigned_on": on(g).isoformat()}
                 for g, t in choice.items()]
        await _side_by_side([lambda c=chunk: send(c)
                             for chunk in _chunks(items, self.options.batch)])

    async def _mentoring_knows(self, provinces: list[str], groups: int, tks: int) -> bool:
        summaries = await asyncio.gather(*(
            self.api.get("mentoring", f"/provinces/{p}/summary") for p in provinces))
        return (sum(s["groups_funded"] for s in summaries) >= groups
                and sum(s["tks_active"] for s in summaries) >= tks - len(self.run.resigned))

    def _check_every_group_has_a_mentor(self) -> None:
        missing = set(self.run.funded_on) - set(self.run.mentor)
        if missing:
            raise SimulationError(f"{len(missing)} funded groups have no mentor")

    # ------------------------------------------------------------------ reports

    async def report_the_year(self) -> None:
        periods = [f"{self.year}-{m:02d}" for m in range(1, 13)]
        task = self._task("filing monthly reports and closing periods", len(periods))
        revenue: dict[str, float] = {}
        for month, period in enumerate(periods, start=1):
            last_day = date(self.year, month, monthrange(self.year, month)[1])
            due = [g for g, funded in self.run.funded_on.items() if funded <= last_day]
            reports = [r for g in due if (r := self._report(g, period, month, revenue))]
            await _side_by_side([lambda c=chunk, p=period: self._file(p, c)
                                 for chunk in _chunks(reports, self.options.batch)])
            closed = await self.api.post("mentoring", f"/periods/{period}/close")
            self.run.reports_overdue += closed["overdue"]
            if month == 9:
                await self._resign_some(date(self.year, 9, 30))
            self.progress.advance(task)

    async def _file(self, period: str, chunk: list[dict]) -> None:
        """A batch of one month's reports (each group once: batches side by side never touch
        the same group, and the month closes after all of them)."""
        result = await self.api.post("mentoring", "/reports/batch", {"reports": chunk})
        refused = [r for r in result["results"] if r["status"] != "filed"]
        if refused:
            raise SimulationError(f"reports refused in {period}: {refused[:2]}")
        self.run.reports_filed += len(chunk)

    def _report(self, group_id: str, period: str, month: int,
                revenue: dict[str, float]) -> dict | None:
        tks = self.run.mentor[group_id]
        diligent = self.run.tks_of[tks].diligent
        plan = self.run.plans[group_id]
        growth = 1.03 if diligent else 0.985
        revenue[group_id] = revenue.get(group_id, plan.base_revenue) * growth * \
            self.rng.uniform(0.97, 1.03)
        missing = self.options.missing_share if diligent else 0.35
        if self.rng.random() < missing:
            return None
        late = self.options.late_share if diligent else 0.35
        deadline = _deadline(self.year, month)
        filed_on = deadline + timedelta(days=self.rng.randint(1, 20)) \
            if self.rng.random() < late else deadline - timedelta(days=self.rng.randint(0, 9))
        return {
            "group_id": group_id, "tks_id": tks, "period": period, "filed_on": filed_on.isoformat(),
            "revenue": int(revenue[group_id]) // 1000 * 1000,
            "production_units": self.rng.randint(20, 400),
            "production_unit": UNITS.get(plan.business_type, "pcs"),
            "members_active": len(plan.members) - (self.rng.random() < 0.1),
            "new_workers": int(diligent and self.rng.random() < 0.12),
            "support": sorted(self.rng.sample(("partnership", "capital_access", "market_access"),
                                              self.rng.randint(0, 2))),
            "lpj_help": self.rng.random() < 0.2,
        }

    async def _resign_some(self, effective: date) -> None:
        """A few TKS resign (from regencies with colleagues to take over their groups)."""
        by_regency: dict[str, list[str]] = {}
        # ordered by NIK (fixed by the seed), not by the ids the service handed out
        for tks_id in sorted(self.run.tks_of, key=lambda t: self.run.tks_of[t].nik):
            by_regency.setdefault(self._regency_of(tks_id), []).append(tks_id)
        groups_in = Counter(self._regency_of(t) for t in self.run.mentor.values())
        # only where the colleagues can take the groups on within the caseload cap
        candidates = [ts[0] for code, ts in sorted(by_regency.items())
                      if len(ts) >= 2 and groups_in[code] <= CASELOAD_CAP * (len(ts) - 1)]
        leaving = self.rng.sample(candidates, min(self.options.resignations, len(candidates)))
        for tks_id in leaving:
            await self.api.post("recruitment", f"/tks/{tks_id}/resignation",
                                {"effective_date": effective.isoformat()})
            self.run.resigned.append(tks_id)
        orphans = {g for g, t in self.run.mentor.items() if t in leaving}
        await _until(lambda: self._unassigned_are(orphans),
                     "mentoring never released the resigned TKS's groups")
        load = Counter(t for t in self.run.mentor.values() if t not in leaving)
        ordered = [g for g in self.run.funded_on if g in orphans]  # the scenario's order
        choice = balanced_mentors([(g, self.run.plans[g].regency_code) for g in ordered],
                                  self._mentors_by_regency(), load, CASELOAD_CAP)
        await self._assign(choice, lambda _: effective + timedelta(days=1))
        self._check_every_group_has_a_mentor()

    async def _unassigned_are(self, groups: set[str]) -> bool:
        listing = await self.api.get_all("mentoring", "/groups/unassigned")
        return groups <= {g["group_id"] for g in listing}

    def _regency_of(self, tks_id: str) -> str:
        return self.run.tks_regency[tks_id]

    # ------------------------------------------------------------------ LPJ

    async def account_for_funds(self) -> None:
        """Every funded group submits its LPJ; some are returned, submitted again and then
        every final report is accepted: bulk requests of `Options.batch` items, side by side."""
        groups = sorted(self.run.funded_on)
        task = self._task("LPJ: submitted, some returned, then accepted", len(groups))
        # drawn up front from the LPJ's own generator, before any request (whether the report
        # is sent back, its spending, and its evidence unless sent back; a sent-back report's
        # final evidence after all), so the same seed accounts for the same rupiah every run,
        # however the reports beside it interleave
        final: dict[str, dict] = {}
        first: list[dict] = []
        returned: list[str] = []
        for group_id in groups:
            sent_back = self.lpj_rng.random() < self.options.returned_lpj_share
            tools = self.lpj_rng.randrange(11_000_000, 12_000_001, 1000)
            materials = FUNDING - tools - self.lpj_rng.randrange(0, 500_001, 1000)
            final[group_id] = {"group_id": group_id, "tools": tools, "materials": materials,
                               "other": 0}
            if sent_back:
                returned.append(group_id)
                first.append({"group_id": group_id, "tools": tools, "materials": materials,
                              "evidence_count": 2})
            else:
                final[group_id]["evidence_count"] = self.lpj_rng.randint(8, 30)
                first.append(final[group_id])
        for group_id in returned:
            final[group_id]["evidence_count"] = self.lpj_rng.randint(8, 30)
        reports = await self._lpj_bulk("/lpj/submissions", first)
        await self._lpj_bulk("/lpj/returns", [
            {"group_id": g, "report_id": reports[g], "reason_code": "evidence_missing",
             "note": "receipts for materials are missing"} for g in returned])
        reports |= await self._lpj_bulk("/lpj/submissions", [final[g] for g in returned])
        await self._lpj_bulk("/lpj/acceptances",
                             [{"group_id": g, "report_id": reports[g]} for g in groups], task)

    async def _lpj_bulk(self, path: str, items: list[dict], task: Any = None) -> dict[str, str]:
        """The items in bulk requests side by side (a group's items in one request); the report
        id each item's group got back."""
        async def send(chunk: list[dict]) -> dict[str, str]:
            answer = await self.api.post("groups", path, {"items": chunk})
            # acceptances wait for a checker (four eyes): granted in chunks of <= 500
            answer = await carried_out_bulk(self.checker, "groups", answer)
            failed = [r for r in answer["results"] if r["status"] >= 300]
            if failed:
                raise SimulationError(f"{path} refused: {failed[:3]}")
            if task is not None:
                self.progress.advance(task, len(chunk))
            return {r["group_id"]: r["result"]["report_id"] for r in answer["results"]}

        answers = await _side_by_side([lambda c=chunk: send(c)
                                       for chunk in _chunks(items, self.options.batch)])
        return {g: r for answer in answers for g, r in answer.items()}

    # ------------------------------------------------------------------ evaluation

    async def evaluate(self) -> None:
        task = self._task("year-end evaluation (close + grant), next year's contracts", 3)
        await self.api.post("evaluation", f"/evaluations/{self.year}/open", ok=(409,))
        await _until(self._evaluation_caught_up, "evaluation never caught up with the year")
        self.progress.advance(task)
        closed = await self.api.post("evaluation", f"/evaluations/{self.year}/close", ok=(409,))
        # the close waits for a checker (four eyes); closed before: its first result
        result = closed["error"]["result"] if "error" in closed else \
            await carried_out(self.checker, "evaluation", closed)
        self.progress.advance(task)
        expected = len(result["outcomes"])
        await _until(lambda: self._recruitment_applied(expected),
                     "recruitment never applied every evaluation outcome")
        self.progress.advance(task)

    async def _evaluation_caught_up(self) -> bool:
        """Every report, overdue flag and accepted LPJ of the year has reached evaluation."""
        rows = await self.api.get_all("evaluation", f"/evaluations/{self.year}/preview")
        basis = [{i["name"]: i["basis"] or {} for i in r["indicators"]} for r in rows]
        due = sum(b.get("reporting_compliance", {}).get("due", 0) for b in basis)
        accepted = sum(b.get("lpj_completion", {}).get("accepted", 0) for b in basis)
        return (len(rows) >= len(self.run.tks_of)
                and due >= self.run.reports_filed + self.run.reports_overdue
                and accepted >= len(self.run.funded_on))

    async def _recruitment_applied(self, outcomes: int) -> bool:
        renewed = await self.api.get("recruitment", "/tks", year=self.year + 1, limit=1)
        vacancies = await self.api.get("recruitment", "/vacancies", year=self.year + 1, limit=1)
        return renewed["total"] + vacancies["total"] >= outcomes

    def _task(self, description: str, total: int) -> Any:
        return self.progress.add_task(description, total=total)


def progress_bar(**kwargs: Any) -> Progress:
    """Live bars on a terminal; none on a log (the simulation prints a line a phase)."""
    console = kwargs.get("console")
    if console is not None and not console.is_terminal:
        kwargs.setdefault("disable", True)
    return Progress(TextColumn("{task.description:<58}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), **kwargs)


async def _side_by_side(calls: list[Callable[[], Awaitable[Any]]], width: int = 2) -> list[Any]:
    """The calls' results in order, `width` at a time: a service writes one bulk batch at a
    time, so more side by side would only wait there (and time out on a slow machine)."""
    gate = asyncio.Semaphore(width)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(call) for call in calls)))


def balanced_mentors(groups: list[tuple[str, str]], mentors: dict[str, list[str]],
                     load: dict[str, int], cap: int) -> dict[str, str]:
    """group id -> TKS id for `groups` ((group id, regency code), in the order they are served):
    each to the TKS of its regency with the lightest caseload (`load`, the caseloads before),
    a TKS at `cap` taking no more, ties to the first in `mentors`' order (regency -> TKS ids).
    The rule of mentoring's suggestion, with ties broken by an order the caller fixes."""
    load = {t: load.get(t, 0) for ts in mentors.values() for t in ts}
    rank = {t: i for ts in mentors.values() for i, t in enumerate(ts)}
    choice: dict[str, str] = {}
    for group_id, regency in groups:
        free = [t for t in mentors.get(regency, []) if load[t] < cap]
        if not free:
            raise SimulationError(f"no TKS in regency {regency} can take group {group_id}")
        tks = min(free, key=lambda t: (load[t], rank[t]))
        load[tks] += 1
        choice[group_id] = tks
    return choice


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _deadline(year: int, month: int) -> date:
    return date(year + (month == 12), month % 12 + 1, 10)


async def _until(check: Callable[[], Awaitable[bool]], failure: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise SimulationError(failure + f" within {timeout:.0f}s")
        await asyncio.sleep(0.5)
