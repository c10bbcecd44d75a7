"""A group's mentoring state restored from its snapshot (plus the events after it) is the state
a full replay of its history gives."""

from __future__ import annotations

import json
from datetime import date

from services.mentoring.domain import GroupMentoring, ReportProblemsNoted
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
    return (agg.version, agg.stints, list(agg.reports.items()), agg.problems, agg.overdue,
            agg.mentor)


def test_snapshot_plus_tail_equals_a_full_replay_at_every_cut():
    full = GroupMentoring.from_history("group-g1", HISTORY)
    for cut in range(len(HISTORY) + 1):
        head = GroupMentoring.from_history("group-g1", HISTORY[:cut])
        # through JSON, as the snapshots table stores it
        snapshot = json.loads(json.dumps(head.snapshot_state()))
        loaded = GroupMentoring.from_loaded("group-g1", History(
            HISTORY[cut:], len(HISTORY), snapshot, cut))
        assert state(loaded) == state(full), cut
        assert loaded.snapshot_version == cut


def test_the_snapshot_kind_follows_the_report_schema():
    assert GroupMentoring.snapshot_key() == (
        f"GroupMentoring:1:{ReportFiled.schema_version}:{ReportAmended.schema_version}")
