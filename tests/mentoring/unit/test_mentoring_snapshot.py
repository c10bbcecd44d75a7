"""A group's mentoring state restored from its light snapshot (plus the events after it) decides
as a full replay of its history does: the same mentors, months on file (by whom, on time or
not) and overdue months; the reports' content and problems are left to the events, and
amending refuses a light state instead of comparing with nothing."""

from __future__ import annotations

import json
from datetime import date

import pytest

from services.mentoring.domain import (
    FundedGroup,
    GroupMentoring,
    MonthlyReport,
    ReportProblemsNoted,
)
from shared.contracts.mentoring import (
    MentorAssigned,
    MentorUnassigned,
    ReportAmended,
    ReportFiled,
    ReportOverdue,
)
from shared.eventstore import History


def report(event: type, period: str, tks_id: str, revenue: int = 4_500_000):
    return event(group_id="g1", tks_id=tks_id, period=period, revenue=revenue,
                 production_units=120, production_unit="kg", members_active=10,
                 new_workers=2, support=("market_access",), lpj_help=True, on_time=True)


HISTORY = [
    MentorAssigned(group_id="g1", tks_id="t1", province_code="32", regency_code="3201",
                   assigned_on=date(2023, 3, 20)),
    report(ReportFiled, "2023-03", "t1"),
    ReportProblemsNoted(group_id="g1", period="2023-03", problems="flood\nno market"),
    report(ReportFiled, "2023-04", "t1"),
    report(ReportAmended, "2023-03", "t1", revenue=5_000_000),
    ReportOverdue(group_id="g1", tks_id="t1", period="2023-05"),
    MentorUnassigned(group_id="g1", tks_id="t1", reason="reassigned",
                     unassigned_on=date(2023, 6, 1)),
    MentorAssigned(group_id="g1", tks_id="t2", province_code="32", regency_code="3201",
                   assigned_on=date(2023, 6, 1)),
    report(ReportFiled, "2023-06", "t2"),
]


def state(agg: GroupMentoring) -> tuple:
    """What the light snapshot keeps: every decision but amending reads only this."""
    return (agg.version, agg.stints, {p: (r.tks_id, r.on_time) for p, r in agg.reports.items()},
            agg.overdue, agg.mentor)


def test_snapshot_plus_tail_decides_as_a_full_replay_at_every_cut():
    full = GroupMentoring.from_history("group-g1", HISTORY)
    for cut in range(len(HISTORY) + 1):
        head = GroupMentoring.from_history("group-g1", HISTORY[:cut])
        # through JSON, as the snapshots table stores it
        snapshot = json.loads(json.dumps(head.snapshot_state()))
        loaded = GroupMentoring.from_loaded("group-g1", History(
            HISTORY[cut:], len(HISTORY), snapshot, cut))
        assert state(loaded) == state(full), cut
        assert loaded.snapshot_version == cut
        # what a month's close asks of it
        replayed = GroupMentoring.from_history("group-g1", HISTORY)
        assert [loaded.mark_overdue("t2", p) for p in ("2023-03", "2023-05", "2023-07")] == [
            replayed.mark_overdue("t2", p) for p in ("2023-03", "2023-05", "2023-07")] == [
            False, False, True]


def test_the_light_snapshot_holds_no_report_content_or_problems():
    full = GroupMentoring.from_history("group-g1", HISTORY)
    text = json.dumps(full.snapshot_state())
    assert "flood" not in text and "5000000" not in text and "market_access" not in text


def test_amending_a_light_state_is_refused_not_compared_with_nothing():
    head = GroupMentoring.from_history("group-g1", HISTORY)
    loaded = GroupMentoring.from_loaded("group-g1", History(
        [], len(HISTORY), json.loads(json.dumps(head.snapshot_state())), len(HISTORY)))
    group = FundedGroup("g1", "32", "3201", date(2023, 3, 1))
    fields = dict(period="2023-06", revenue=1, production_units=1, production_unit="kg",
                  members_active=10, new_workers=0)
    with pytest.raises(TypeError, match="whole history"):
        loaded.amend_report(group, "t2", MonthlyReport(**fields), today=date(2023, 7, 5),
                            period_closed=False)
    assert head.amend_report(group, "t2", MonthlyReport(**fields), today=date(2023, 7, 5),
                             period_closed=False)


def test_every_save_keeps_a_snapshot_of_a_new_kind():
    assert GroupMentoring.snapshot_every == 1
    assert GroupMentoring.snapshot_key() == "GroupMentoring:2:light"
