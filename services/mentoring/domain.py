"""Mentoring rules: who mentors a funded TKM group, its monthly reports, and closing a month.

Pure: facts the service learned from other topics (the funded group, the TKS) are passed in.
A group's mentoring stream is `group-<group_id>`; a month's closing is `period-<YYYY-MM>`.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.mentoring.config import AssignmentRules
from shared.aggregate import Aggregate
from shared.contracts.common import Id, Period
from shared.contracts.mentoring import (
    MentorAssigned,
    MentorUnassigned,
    PeriodClosed,
    ProductionUnit,
    ReportAmended,
    ReportFiled,
    ReportOverdue,
    Support,
)
from shared.envelope import Event, register
from shared.errors import ConflictError, ForbiddenError, NotFoundError, RuleViolationError
from shared.inputs import Period as PlausiblePeriod
from shared.inputs import Text, Whole


@register
class ReportProblemsNoted(Event):
    """The free-text problems of a report: internal to the ministry, never published."""

    event_type = "mentoring.ReportProblemsNoted"
    group_id: Id
    period: Period
    problems: str = Field(max_length=4000)


def period_bounds(period: str) -> tuple[date, date]:
    year, month = int(period[:4]), int(period[5:7])
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


def period_of(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def deadline_of(period: str, deadline_day: int) -> date:
    return (period_bounds(period)[1] + timedelta(days=1)).replace(day=deadline_day)


# Business bounds on a TKM group's monthly figures, well above any real group (a few dozen
# members, revenue in the millions of rupiah) and far enough below the columns' and the regional
# sums' limits (bigint, integer) that no accepted report can overflow them.
MAX_MONTHLY_REVENUE = 10**12  # Rp 1 trillion
MAX_PRODUCTION_UNITS = 10**12
MAX_MEMBERS = 1_000


class MonthlyReport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    period: PlausiblePeriod
    revenue: Whole(le=MAX_MONTHLY_REVENUE, description="whole rupiah")
    production_units: Whole(le=MAX_PRODUCTION_UNITS)
    production_unit: ProductionUnit = Field(
        description="a unit code, published as is (typed units could carry personal data)",
        examples=["kg"])
    members_active: Whole(le=MAX_MEMBERS)
    new_workers: Whole(le=MAX_MEMBERS,
                       description="people newly taken on by the group this month")
    problems: Text(4000, multiline=True, blank=True) = Field(
        "", description="internal: never published")
    support: tuple[Support, ...] = Field((), description="facilitation given this month")
    lpj_help: bool = Field(False, description="helped the group with its LPJ")

    @field_validator("support")
    @classmethod
    def _once_each(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("each kind of support may be listed once")
        return tuple(sorted(value))


@dataclass(frozen=True)
class FundedGroup:
    group_id: str
    province_code: str
    regency_code: str
    funded_on: date
    dissolved_on: date | None = None
    year: int | None = None  # the group's programme year (its rules); None: the funding year

    @property
    def programme_year(self) -> int:
        return self.year if self.year is not None else self.funded_on.year


@dataclass(frozen=True)
class Mentor:
    tks_id: str
    province_code: str
    regency_code: str
    active: bool
    caseload: int
    left_on: date | None = None
    contract_start: date | None = None
    contract_end: date | None = None


@dataclass(frozen=True)
class Stint:
    """One TKS mentoring the group from `start` up to, not including, `end`."""

    tks_id: str
    start: date
    end: date | None = None

    def covers(self, first: date, last: date) -> bool:
        return self.start <= last and (self.end is None or self.end > first)


class OnFile(NamedTuple):
    """What a light snapshot keeps of a filed report: who filed it and whether on time (a
    tuple: a group's snapshot restores one per month at every command)."""

    tks_id: str
    on_time: bool


class GroupMentoring(Aggregate):
    # A group's history grows by a report (and its problems) every month, year after year. Each
    # save keeps a light snapshot (shared.aggregate): the mentors' stints, who filed each month
    # and whether on time, the overdue months; so filing a report, closing a month or changing
    # a mentor reads one row a group, however long the history. The reports' content and
    # problems stay in the events only: amending a report loads the whole history
    # (`UnitOfWork.load(..., from_snapshot=False)`). The kind changes with the state's shape.
    snapshot_every = 1
    snapshot_kind = "2:light"

    def __init__(self, stream_id: str):
        super().__init__(stream_id)
        self.group_id = stream_id.removeprefix("group-")
        self.stints: list[Stint] = []
        self.reports: dict[str, ReportFiled | ReportAmended | OnFile] = {}
        self.problems: dict[str, str] = {}
        self.overdue: set[str] = set()
        self.whole = True  # False when restored from a light snapshot: no content, no problems

    @staticmethod
    def stream(group_id: str) -> str:
        return f"group-{group_id}"

    @property
    def mentor(self) -> Stint | None:
        return self.stints[-1] if self.stints and self.stints[-1].end is None else None

    @property
    def last_change(self) -> date | None:
        return max((d for s in self.stints for d in (s.start, s.end) if d), default=None)

    def apply(self, event: Event) -> None:
        match event:
            case MentorAssigned():
                self.stints.append(Stint(event.tks_id, event.assigned_on))
            case MentorUnassigned():
                self.stints[-1] = replace(self.stints[-1], end=event.unassigned_on)
            case ReportFiled() | ReportAmended():
                self.reports[event.period] = event
            case ReportProblemsNoted():
                self.problems[event.period] = event.problems
            case ReportOverdue():
                self.overdue.add(event.period)
            case _:
                raise TypeError(f"GroupMentoring cannot apply {event.event_type}")

    def snapshot_state(self) -> dict:
        return {"stints": [[s.tks_id, s.start.isoformat(), s.end and s.end.isoformat()]
                           for s in self.stints],
                "reports": [[period, r.tks_id, r.on_time] for period, r in self.reports.items()],
                "overdue": sorted(self.overdue)}

    def restore(self, state: dict) -> None:
        self.stints = [Stint(tks, date.fromisoformat(start), end and date.fromisoformat(end))
                       for tks, start, end in state["stints"]]
        self.reports = {period: OnFile(tks, on_time) for period, tks, on_time in state["reports"]}
        self.overdue = set(state["overdue"])
        self.whole = False

    def assign(self, group: FundedGroup, mentor: Mentor | None, on: date,
               rules: AssignmentRules) -> None:
        if mentor is None:
            raise NotFoundError("TKS unknown to mentoring: no TksRecruited seen for it",
                                field="tks_id")
        if group.dissolved_on is not None:
            raise RuleViolationError(f"the group was dissolved on {group.dissolved_on}",
                                     field="group_id")
        if not mentor.active:
            raise RuleViolationError(f"TKS {mentor.tks_id} is no longer active (left on "
                                     f"{mentor.left_on})", field="tks_id")
        if mentor.regency_code != group.regency_code and not (
                rules.allow_same_province and mentor.province_code == group.province_code):
            scope = "province" if rules.allow_same_province else "regency"
            raise RuleViolationError(
                f"TKS {mentor.tks_id} serves regency {mentor.regency_code}, outside the group's "
                f"{scope} (regency {group.regency_code})", field="tks_id")
        current = self.mentor
        if current is not None and current.tks_id == mentor.tks_id:
            raise ConflictError("this TKS already mentors the group", field="tks_id",
                                assigned_on=current.start.isoformat())
        if mentor.caseload >= rules.caseload_cap:
            raise RuleViolationError(
                f"TKS {mentor.tks_id} already mentors {mentor.caseload} groups, the cap is "
                f"{rules.caseload_cap}", field="tks_id", caseload=mentor.caseload)
        latest = self.last_change
        if latest is not None and on < latest:
            raise RuleViolationError(f"assigned_on {on} is before the group's last mentor "
                                     f"change on {latest}", field="assigned_on")
        if current is not None:
            self.record(MentorUnassigned(group_id=self.group_id, tks_id=current.tks_id,
                                         reason="reassigned", unassigned_on=on))
        self.record(MentorAssigned(group_id=self.group_id, tks_id=mentor.tks_id,
                                   province_code=group.province_code,
                                   regency_code=group.regency_code, assigned_on=on))

    def unassign(self, reason: str, on: date, *, only_tks: str | None = None) -> bool:
        """End the current mentor's stint; False when there is none (or it is another TKS)."""
        current = self.mentor
        if current is None or (only_tks is not None and current.tks_id != only_tks):
            return False
        self.record(MentorUnassigned(group_id=self.group_id, tks_id=current.tks_id,
                                     reason=reason, unassigned_on=max(on, current.start)))
        return True

    def file_report(self, group: FundedGroup, tks_id: str, report: MonthlyReport, *,
                    filed_on: date, deadline: date, period_closed: bool,
                    contract: tuple[date, date] | None = None) -> None:
        """`filed_on` is the date in the group's time zone (shared.localtime); `contract` the
        author's contract dates, when mentoring knows the TKS."""
        self._check_author(group, tks_id, report.period, filed_on, period_closed)
        first, last = period_bounds(report.period)
        if last >= filed_on:
            raise RuleViolationError(
                f"period {report.period} has not ended: it can be reported from "
                f"{last + timedelta(days=1)} (filed on {filed_on}, the date in the group's "
                "time zone)", field="period", filed_on=filed_on.isoformat())
        if contract is not None and not (contract[0] <= last and contract[1] >= first):
            start, end = contract
            raise RuleViolationError(
                f"TKS {tks_id} has no contract covering period {report.period}: its contract "
                f"runs from {start} to {end}", field="tks_id",
                contract_start=start.isoformat(), contract_end=end.isoformat())
        if report.period in self.reports:
            raise ConflictError(
                f"a report on {report.period} was already filed for this group; amend it",
                field="period", filed_by=self.reports[report.period].tks_id)
        self.record(ReportFiled(group_id=self.group_id, tks_id=tks_id, filed_on=filed_on,
                                on_time=filed_on <= deadline, **_published(report)))
        if report.problems:
            self._note(report)

    def amend_report(self, group: FundedGroup, tks_id: str | None, report: MonthlyReport, *,
                     today: date, period_closed: bool) -> bool:
        """Record the new content; False when it equals what is on file. Only the TKS who filed
        the report may amend it (`tks_id` None: the filer, for ministry_admin); the report
        stays that TKS's."""
        if not self.whole:
            raise TypeError("amending compares with the report's content: load the group's "
                            "whole history (from_snapshot=False)")
        current = self.reports.get(report.period)
        author = tks_id
        if author is None and current is not None:
            author = current.tks_id
        if author is not None:
            self._check_author(group, author, report.period, today, period_closed)
        if current is None:
            raise NotFoundError(f"no report on {report.period} has been filed for this group",
                                field="period")
        if author != current.tks_id:
            raise ForbiddenError(
                f"the report on {report.period} was filed by TKS {current.tks_id}: only that "
                f"TKS may amend it, not TKS {author}", field="tks_id",
                filed_by=current.tks_id)
        tks_id = current.tks_id
        amended = ReportAmended(group_id=self.group_id, tks_id=tks_id, on_time=current.on_time,
                                **_published(report))
        # the content only: who filed it stays, and the filing date is not content
        unchanged = amended.model_dump(exclude={"tks_id", "filed_on"}) == current.model_dump(
            exclude={"tks_id", "filed_on"})
        problems_changed = self.problems.get(report.period, "") != report.problems
        if unchanged and not problems_changed:
            return False
        if not unchanged:
            self.record(amended)
        if problems_changed:
            self._note(report)
        return True

    def mark_overdue(self, tks_id: str, period: str) -> bool:
        if period in self.reports or period in self.overdue:
            return False
        self.record(ReportOverdue(group_id=self.group_id, tks_id=tks_id, period=period))
        return True

    def _note(self, report: MonthlyReport) -> None:
        self.record(ReportProblemsNoted(group_id=self.group_id, period=report.period,
                                        problems=report.problems))

    def _check_author(self, group: FundedGroup, tks_id: str, period: str, today: date,
                      period_closed: bool) -> None:
        first, last = period_bounds(period)
        if period_closed or period in self.overdue:
            raise RuleViolationError(f"period {period} is closed: its reports can no longer "
                                     "be filed or amended", field="period")
        if first > today:
            raise RuleViolationError(f"period {period} has not started yet", field="period")
        if last < group.funded_on:
            raise RuleViolationError(
                f"period {period} ends before the group was funded on {group.funded_on}",
                field="period", funded_on=group.funded_on.isoformat())
        stints = [s for s in self.stints if s.tks_id == tks_id]
        if not stints:
            raise ForbiddenError(f"TKS {tks_id} is not assigned to group {self.group_id}",
                                 field="tks_id")
        if any(s.covers(first, last) for s in stints):
            return
        ends = [s.end for s in stints if s.end is not None and s.end <= first]
        if len(ends) == len(stints):
            left_on = max(ends)
            raise RuleViolationError(
                f"period {period} starts after TKS {tks_id} stopped mentoring this group on "
                f"{left_on}", field="period", left_on=left_on.isoformat())
        start = min(s.start for s in stints if s.start > last)
        raise RuleViolationError(f"TKS {tks_id} began mentoring this group on {start}, after "
                                 f"period {period}", field="period")


def _published(report: MonthlyReport) -> dict:
    # requests may extend MonthlyReport (group, author): only the report's own fields travel
    return report.model_dump(include=set(MonthlyReport.model_fields) - {"problems"})


@dataclass(frozen=True)
class DueGroup:
    """A group whose report on the period is due, the TKS answerable for it, and whether filed."""

    group_id: str
    tks_id: str
    filed: bool


class PeriodLedger(Aggregate):
    def __init__(self, stream_id: str):
        super().__init__(stream_id)
        self.period = stream_id.removeprefix("period-")
        self.closed: PeriodClosed | None = None

    @staticmethod
    def stream(period: str) -> str:
        return f"period-{period}"

    def apply(self, event: Event) -> None:
        if not isinstance(event, PeriodClosed):
            raise TypeError(f"PeriodLedger cannot apply {event.event_type}")
        self.closed = event

    def close(self, due: Sequence[DueGroup], *, today: date, deadline: date,
              force: bool) -> list[DueGroup]:
        """The due groups that become overdue; none when the period was closed before."""
        if self.closed is not None:
            return []
        first, _ = period_bounds(self.period)
        if first > today:
            raise RuleViolationError(f"period {self.period} has not started yet", field="period")
        if today <= deadline and not force:
            raise RuleViolationError(
                f"period {self.period} can be closed after its deadline {deadline} "
                "(ministry_admin may force it)", field="period", deadline=deadline.isoformat())
        overdue = [d for d in due if not d.filed]
        self.record(PeriodClosed(period=self.period, due=len(due), filed=len(due) - len(overdue),
                                 overdue=len(overdue)))
        return overdue


@dataclass(frozen=True)
class Suggestion:
    group_id: str
    tks_id: str
    regency_code: str


@dataclass(frozen=True)
class Unplaced:
    group_id: str
    regency_code: str
    reason: str


def suggest_assignments(
        groups: Sequence[FundedGroup], mentors: Sequence[Mentor],
        rules: AssignmentRules | Callable[[FundedGroup], AssignmentRules],
) -> tuple[list[Suggestion], list[Unplaced]]:
    """Give each unassigned group the TKS of its regency with the lightest caseload (ties by id),
    oldest funding first; with `allow_same_province`, groups left over then go to the lightest
    TKS of the province. A TKS at the cap takes no more. `rules`: one policy, or the policy of
    each group (its programme year's)."""
    rules_of = rules if callable(rules) else (lambda _g, r=rules: r)
    load = {m.tks_id: m.caseload for m in mentors if m.active}
    by_regency: dict[str, list[Mentor]] = defaultdict(list)
    by_province: dict[str, list[Mentor]] = defaultdict(list)
    for m in sorted((m for m in mentors if m.active), key=lambda m: m.tks_id):
        by_regency[m.regency_code].append(m)
        by_province[m.province_code].append(m)

    def lightest(candidates: list[Mentor], cap: int) -> Mentor | None:
        free = [m for m in candidates if load[m.tks_id] < cap]
        return min(free, key=lambda m: (load[m.tks_id], m.tks_id), default=None)

    suggestions: list[Suggestion] = []
    left_over: list[FundedGroup] = []
    for group in sorted(groups, key=lambda g: (g.funded_on, g.group_id)):
        mentor = lightest(by_regency[group.regency_code], rules_of(group).caseload_cap)
        if mentor is None:
            left_over.append(group)
            continue
        load[mentor.tks_id] += 1
        suggestions.append(Suggestion(group.group_id, mentor.tks_id, group.regency_code))
    unplaced: list[Unplaced] = []
    for group in left_over:
        policy = rules_of(group)
        mentor = (lightest(by_province[group.province_code], policy.caseload_cap)
                  if policy.allow_same_province else None)
        if mentor is not None:
            load[mentor.tks_id] += 1
            suggestions.append(Suggestion(group.group_id, mentor.tks_id, group.regency_code))
            continue
        reason = ("every TKS within reach is at the caseload cap"
                  if by_regency[group.regency_code] or (
                      policy.allow_same_province and by_province[group.province_code])
                  else "no active TKS serves this regency")
        unplaced.append(Unplaced(group.group_id, group.regency_code, reason))
    return suggestions, unplaced
