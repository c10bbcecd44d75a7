"""A group restored from its light snapshot (plus the events after it) decides as a full replay
of its history does: status, stage, funding, LPJ and counts; the members stay in the events
(no personal data in a snapshot) and changing them refuses a light state."""

from __future__ import annotations

import json
from datetime import date

import pytest

from services.groups.domain import Group
from shared.errors import RuleViolationError
from shared.eventstore import History
from tests.groups.groups_support import RULES_2023, SEAL, TODAY, member_records
from tests.groups.unit.test_groups_rules import registered


def _history() -> list:
    group = registered()
    group.approve()
    group.fund(tranche=1, amount=20_000_000, disbursed_on=date(2023, 6, 1), budget_year=2023,
               rules=RULES_2023, today=TODAY)
    group.submit_lpj("r1", tools=12_000_000, materials=7_000_000, other=0, evidence_count=2)
    group.return_lpj("r1", "evidence_missing", "receipts")
    group.submit_lpj("r2", tools=12_000_000, materials=7_500_000, other=0, evidence_count=9)
    return group.pending


def _light(events: list, cut: int) -> Group:
    head = Group.from_history("group-x", events[:cut])
    snapshot = json.loads(json.dumps(head.snapshot_state()))  # as the snapshots table keeps it
    return Group.from_loaded("group-x", History(events[cut:], len(events), snapshot, cut))


def _decisions(group: Group) -> dict:
    fields = ("status", "year", "stage", "province_code", "regency_code", "business_type",
              "name", "member_count", "tranches", "funded_total", "stage_funded",
              "lpj_due_on", "lpj_accepted", "stage_bimtek", "stage_products", "expos",
              "version")
    return {f: getattr(group, f) for f in fields} | {"reports": dict(group.reports)}


def test_snapshot_plus_tail_decides_as_a_full_replay_at_every_cut():
    events = _history()
    full = Group.from_history("group-x", events)
    for cut in range(1, len(events) + 1):
        light = _light(events, cut)
        assert _decisions(light) == _decisions(full), cut
        # and the next command gives the same events
        light.accept_lpj("r2")
        replayed = Group.from_history("group-x", events)
        replayed.accept_lpj("r2")
        assert light.pending == replayed.pending and light.lpj_accepted


def test_no_member_and_no_personal_field_is_in_the_snapshot():
    full = Group.from_history("group-x", _history())
    text = json.dumps(full.snapshot_state())
    assert full.members and all(m.nik_hash not in text and m.nik not in text
                                for m in full.members.values())
    assert "members" not in full.snapshot_state()
    assert full.snapshot_state()["member_count"] == 10


def test_changing_members_of_a_light_state_is_refused_not_compared_with_nothing():
    group = registered()
    events = group.pending
    light = _light(events, len(events))
    with pytest.raises(TypeError, match="whole history"):
        light.change_members(member_records(10, "6501"), seal=SEAL, rules=RULES_2023,
                             today=TODAY)
    whole = Group.from_history("group-x", events)
    with pytest.raises(RuleViolationError):  # the roster rules still run on a whole state
        whole.change_members(member_records(2, "6501"), seal=SEAL, rules=RULES_2023,
                             today=TODAY)


def test_every_save_keeps_a_snapshot_of_a_new_kind():
    assert Group.snapshot_every == 1 and Group.snapshot_key() == "Group:1:light"
