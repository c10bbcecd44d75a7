"""Given events, when a command, then events or an error: the TKM group's rules."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from services.groups.config import load_config
from services.groups.domain import (
    BimtekAttended,
    Group,
    ProductEvidenceRecorded,
    ReasonNoted,
    RosterChanged,
    RosterRecorded,
    group_header,
    group_id_for,
    member_from_input,
    stream_id,
)
from shared.contracts.groups import (
    AccountabilityReportAccepted,
    AccountabilityReportReturned,
    AccountabilityReportSubmitted,
    GroupAdvanced,
    GroupApproved,
    GroupDissolved,
    GroupFunded,
    GroupMembersChanged,
    GroupRegistered,
    GroupRejected,
)
from shared.errors import ConflictError, DomainError, NotFoundError, RuleViolationError
from shared.nik import make_nik
from tests.groups.groups_support import (
    HASH,
    RULES_2021,
    RULES_2023,
    SEAL,
    TODAY,
    member_records,
)

CONFIG = load_config()
RULES = RULES_2023
IN_2023 = date(2023, 9, 1)
NOTE = "Anggota Siti Aminah NIK 3201014506990001 HP 081234567890 sudah bekerja"
HEADER = group_header(2023, "pemula", "6501", "poultry", "  Kelompok   Ternak Sejahtera ", CONFIG,
                      RULES)


def registered(members: int = 10, people=None) -> Group:
    """A new group; `pending` keeps its whole history in these tests."""
    return Group.register(HEADER, people or member_records(members, "6501"), seal=SEAL,
                          external_ref="REF-1", rules=RULES, registered_on=TODAY)


def funded(amount: int = 20_000_000) -> Group:
    group = registered()
    group.approve()
    group.fund(tranche=1, amount=amount, disbursed_on=date(2023, 6, 1), budget_year=2023,
               rules=RULES, today=TODAY)
    return group


def test_registration_records_published_counts_and_internal_roster():
    group = Group.register(HEADER, member_records(10, "6501"), seal=SEAL, external_ref=None,
                           rules=RULES,
                           registered_on=TODAY)
    published, roster = group.pending
    assert isinstance(published, GroupRegistered)
    assert published.topic == "tkm.groups.v1"
    assert (published.member_count, published.province_code, published.regency_code) == (
        10, "65", "6501")
    # member data only in the internal event, which is never published
    assert isinstance(roster, RosterRecorded) and roster.topic is None
    assert "nik" not in published.model_dump_json()
    assert roster.name == "Kelompok Ternak Sejahtera"


def test_group_id_is_derived_from_year_regency_and_name_ignoring_case_and_spacing():
    assert HEADER.group_id == group_id_for(2023, "6501", "kelompok ternak  SEJAHTERA")
    assert HEADER.group_id != group_id_for(2024, "6501", "Kelompok Ternak Sejahtera")
    assert HEADER.group_id != group_id_for(2023, "6502", "Kelompok Ternak Sejahtera")


@pytest.mark.parametrize("size", [9, 11, 16])
def test_member_count_outside_the_year_rules_is_refused(size):
    with pytest.raises(RuleViolationError) as err:
        Group.register(HEADER, member_records(size), seal=SEAL, external_ref=None,
                       rules=RULES,
                       registered_on=TODAY)
    assert err.value.field == "members"
    assert f"a 2023 group has 10 members, not {size}" == err.value.reason


def test_the_same_nik_twice_in_a_group_is_refused():
    members = member_records(10)
    members[7] = members[2]
    with pytest.raises(DomainError) as err:
        Group.register(HEADER, members, seal=SEAL, external_ref=None, rules=RULES,
                       registered_on=TODAY)
    assert err.value.field == "members[7].nik"


@pytest.mark.parametrize("age, accepted", [(16, False), (17, True), (55, True), (56, False)])
def test_members_must_be_17_to_55_on_the_day_they_register(age, accepted):
    on = date(2024, 3, 15)
    born = date(on.year - age, 3, 15)  # birthday today: exactly `age`
    odd = member_from_input(make_nik("650101", born, "F", 7), "Siti", None, on, HASH)
    members = [*member_records(9, "6501"), odd]
    if accepted:
        Group.register(HEADER, members, seal=SEAL, external_ref=None, rules=RULES,
                       registered_on=on)
        return
    with pytest.raises(RuleViolationError) as err:
        Group.register(HEADER, members, seal=SEAL, external_ref=None, rules=RULES,
                       registered_on=on)
    assert err.value.field == "members[9].nik"
    assert f"{age} years old" in err.value.reason


def test_member_input_takes_the_birth_date_from_the_nik_and_checks_fields():
    member = member_from_input(make_nik("650101", date(1990, 5, 4), "F", 12), " Siti  Aminah ",
                               "0812-3456-7890", TODAY, HASH)
    assert member.birth_date == date(1990, 5, 4)
    assert (member.name, member.phone) == ("Siti Aminah", "+6281234567890")
    with pytest.raises(DomainError) as err:
        member_from_input("1234", "Siti", None, TODAY, HASH)
    assert err.value.field == "nik"
    with pytest.raises(DomainError) as err:
        member_from_input(member.nik, "Siti", "12345", TODAY, HASH)
    assert err.value.field == "phone"


def test_header_rules_name_the_field():
    cases = {"regency_code": dict(regency_code="9999"), "business_type": dict(business_type="x"),
             "stage": dict(stage="senior"), "name": dict(name="   ")}
    for field, change in cases.items():
        args = dict(year=2023, stage="pemula", regency_code="3201", business_type="catering",
                    name="KUB A") | change
        with pytest.raises(DomainError) as err:
            group_header(**args, config=CONFIG, rules=RULES)
        assert err.value.field == field


def test_approve_then_reject_conflicts():
    group = registered()
    group.approve()
    assert isinstance(group.pending[-1], GroupApproved)
    with pytest.raises(ConflictError):
        group.reject("documents_incomplete")
    with pytest.raises(ConflictError):
        group.approve()


def test_a_rejected_group_cannot_be_funded_or_approved():
    group = registered()
    group.reject("documents_incomplete")
    assert isinstance(group.pending[-1], GroupRejected)
    with pytest.raises(RuleViolationError):
        group.fund(tranche=1, amount=1, disbursed_on=IN_2023, budget_year=2023, rules=RULES,
                   today=TODAY)
    with pytest.raises(RuleViolationError):
        group.approve()


def test_only_an_approved_group_is_funded():
    group = registered()
    with pytest.raises(RuleViolationError) as err:
        group.fund(tranche=1, amount=20_000_000, disbursed_on=IN_2023, budget_year=2023,
                   rules=RULES, today=TODAY)
    assert "approved" in err.value.reason
    assert len(group.pending) == 2


def test_funding_records_the_tranche_and_the_lpj_due_date():
    group = registered()
    group.approve()
    event = group.fund(tranche=1, amount=20_000_000, disbursed_on=date(2023, 6, 1),
                       budget_year=2023, rules=RULES, today=TODAY)
    assert isinstance(event, GroupFunded)
    assert event.lpj_due_on == date(2023, 6, 1) + timedelta(days=RULES.lpj.due_days)
    assert (event.year, event.province_code, event.tranche) == (2023, "65", 1)


def test_the_same_tranche_twice_is_a_conflict_and_tranches_go_in_order():
    group = funded(10_000_000)
    with pytest.raises(ConflictError) as err:
        group.fund(tranche=1, amount=5_000_000, disbursed_on=IN_2023, budget_year=2023,
                   rules=RULES, today=TODAY)
    assert err.value.field == "tranche"
    with pytest.raises(RuleViolationError):
        group.fund(tranche=3, amount=5_000_000, disbursed_on=IN_2023, budget_year=2023,
                   rules=RULES, today=TODAY)
    group.fund(tranche=2, amount=10_000_000, disbursed_on=IN_2023, budget_year=2023,
               rules=RULES, today=TODAY)
    assert group.funded_total == 20_000_000


def test_funding_above_the_ceiling_or_not_positive_is_refused():
    group = funded(15_000_000)
    before = len(group.pending)
    with pytest.raises(RuleViolationError) as err:
        group.fund(tranche=2, amount=5_000_001, disbursed_on=IN_2023, budget_year=2023,
                   rules=RULES, today=TODAY)
    assert err.value.field == "amount"
    with pytest.raises(DomainError) as err:
        group.fund(tranche=2, amount=0, disbursed_on=IN_2023, budget_year=2023, rules=RULES,
                   today=TODAY)
    assert err.value.field == "amount"
    assert len(group.pending) == before


def test_members_change_until_funding_only():
    members = member_records(10, "6501")
    group = registered(people=members)
    newcomer = member_records(1, "6501")[0]
    group.change_members([*members[1:], newcomer], seal=SEAL, rules=RULES, today=TODAY)
    change, published = group.pending[-2:]
    assert isinstance(change, RosterChanged)
    # members are known by their NIK's hash; the newcomer's fields are sealed
    assert change.removed == (members[0].nik_hash,)
    (added,) = change.added
    assert added.nik_hash == newcomer.nik_hash and newcomer.nik not in added.model_dump_json()
    assert SEAL.open(added, "nik") == newcomer.nik
    assert len(group.members) == 10
    # subscribers learn the new count, never who the members are
    assert published == GroupMembersChanged(group_id=group.group_id, member_count=10)
    extra = member_records(2, "6501")[1]
    with pytest.raises(RuleViolationError, match="a 2023 group has 10 members, not 11"):
        group.change_members([*members[1:], newcomer, extra], seal=SEAL, rules=RULES,
                             today=TODAY)
    # the rules of 2021 (10 to 16 members) let a 2021 group grow
    header_2021 = group_header(2021, "pemula", "6501", "poultry", "KUB 2021", CONFIG,
                               RULES_2021)
    old = Group.register(header_2021, members, seal=SEAL, external_ref=None, rules=RULES_2021,
                         registered_on=TODAY)
    old.change_members([*members, extra], seal=SEAL, rules=RULES_2021, today=TODAY)
    assert old.pending[-1] == GroupMembersChanged(group_id=old.group_id, member_count=11)

    paid = funded()
    with pytest.raises(RuleViolationError) as err:
        paid.change_members(members, seal=SEAL, rules=RULES, today=TODAY)
    assert "until the group is funded" in err.value.reason


def test_lpj_spending_beyond_the_funds_received_is_refused():
    group = funded(20_000_000)
    with pytest.raises(RuleViolationError) as err:
        group.submit_lpj("r1", tools=12_000_000, materials=8_000_000, other=1,
                         evidence_count=3)
    assert err.value.field == "spending"
    event = group.submit_lpj("r1", tools=12_000_000, materials=7_000_000, other=0,
                             evidence_count=14)
    assert isinstance(event, AccountabilityReportSubmitted)
    assert event.remaining_balance == 1_000_000


def test_lpj_needs_funding_and_one_review_at_a_time():
    with pytest.raises(RuleViolationError):
        registered().submit_lpj("r0", tools=0, materials=0, other=0, evidence_count=0)
    group = funded()
    group.submit_lpj("r1", tools=1, materials=1, other=0, evidence_count=1)
    with pytest.raises(ConflictError):
        group.submit_lpj("r2", tools=1, materials=1, other=0, evidence_count=1)
    group.return_lpj("r1", "evidence_missing")
    group.submit_lpj("r2", tools=12_000_000, materials=8_000_000, other=0, evidence_count=9)
    group.accept_lpj("r2")
    assert isinstance(group.pending[-1], AccountabilityReportAccepted)
    with pytest.raises(ConflictError):
        group.accept_lpj("r2")
    with pytest.raises(NotFoundError):
        group.accept_lpj("nope")
    with pytest.raises(ConflictError):  # every rupiah received is accounted for
        group.submit_lpj("r3", tools=1, materials=1, other=0, evidence_count=1)


def test_advancing_needs_what_the_configuration_requires():
    group = funded()
    with pytest.raises(RuleViolationError) as err:
        group.advance(RULES)
    assert len(err.value.details["missing"]) == 3
    group.submit_lpj("r1", tools=12_000_000, materials=8_000_000, other=0, evidence_count=9)
    group.accept_lpj("r1")
    group.attend_bimtek("Bimtek kelembagaan", date(2023, 9, 1))
    group.record_product("Telur ayam kampung", 4, date(2023, 10, 1))
    assert isinstance(group.pending[-2], BimtekAttended)
    assert isinstance(group.pending[-1], ProductEvidenceRecorded)
    event = group.advance(RULES)
    assert isinstance(event, GroupAdvanced)
    assert (event.from_stage, event.to_stage, group.stage) == ("pemula", "lanjutan", "lanjutan")
    # the requirements start again at the new stage
    with pytest.raises(RuleViolationError):
        group.advance(RULES)


def test_the_last_stage_does_not_advance():
    group = funded()
    group.stage = "pengembangan"
    with pytest.raises(RuleViolationError) as err:
        group.advance(RULES)
    assert "last stage" in err.value.reason


def test_expo_and_bimtek_need_a_funded_group():
    group = registered()
    with pytest.raises(RuleViolationError):
        group.showcase("gelar_produk_tkm_bali", None, date(2019, 11, 1), CONFIG)
    with pytest.raises(RuleViolationError):
        group.attend_bimtek("Bimtek kelembagaan", date(2019, 11, 1))


def test_a_dissolved_group_still_accounts_for_its_funds_but_does_nothing_else():
    group = funded()
    group.dissolve("members_left")
    with pytest.raises(RuleViolationError):
        group.dissolve("other")
    with pytest.raises(RuleViolationError):
        group.showcase("other", "5171", date(2023, 11, 1), CONFIG)
    group.submit_lpj("r1", tools=5, materials=5, other=0, evidence_count=2)
    group.accept_lpj("r1")
    assert group.reports["r1"].status == "accepted"


def test_history_replays_to_the_same_state():
    group = funded(8_000_000)
    group.submit_lpj("r1", tools=4_000_000, materials=4_000_000, other=0, evidence_count=5)
    replayed = Group.from_history(stream_id(group.group_id), group.pending)
    assert (replayed.status, replayed.funded_total, replayed.tranches) == ("funded", 8_000_000, 1)
    assert replayed.reports["r1"].status == "submitted"
    assert len(replayed.members) == 10
    assert replayed.version == 5


# --- reasons: a code on the topic, the officer's note kept inside ------------------------------

def _published_json(group: Group) -> str:
    return " ".join(e.model_dump_json() for e in group.pending if e.topic)


def test_rejection_publishes_a_code_and_keeps_the_note_in_an_internal_event():
    group = registered()
    group.reject("members_employed", NOTE)
    rejected, noted = group.pending[-2:]
    assert rejected == GroupRejected(group_id=group.group_id, reason_code="members_employed")
    assert isinstance(noted, ReasonNoted) and noted.topic is None
    assert (noted.subject, noted.note, noted.report_id) == ("rejection", NOTE, None)
    assert "Siti" not in _published_json(group) and "3201014506990001" not in _published_json(
        group)
    assert group.status == "rejected"


def test_lpj_return_and_dissolution_publish_codes_and_note_internally():
    group = funded()
    group.submit_lpj("r1", tools=1, materials=1, other=0, evidence_count=1)
    group.return_lpj("r1", "figures_inconsistent", f"  {NOTE}  ")
    returned, noted = group.pending[-2:]
    assert returned == AccountabilityReportReturned(group_id=group.group_id, report_id="r1",
                                                    reason_code="figures_inconsistent")
    assert (noted.subject, noted.report_id, noted.note) == ("lpj_return", "r1", NOTE)
    group.dissolve("business_failed")  # no note: no internal event
    assert group.pending[-1] == GroupDissolved(group_id=group.group_id,
                                               reason_code="business_failed")
    assert "Siti" not in _published_json(group)


@pytest.mark.parametrize("act", [
    lambda g: g.reject("sudah bekerja"),
    lambda g: g.dissolve("members_employed"),  # a rejection code, not a dissolution one
])
def test_an_unknown_reason_code_names_the_field(act):
    group = registered()
    with pytest.raises(DomainError) as err:
        act(group)
    assert err.value.field == "reason_code"
    assert len(group.pending) == 2


def test_a_note_is_optional_and_bounded():
    group = registered()
    with pytest.raises(DomainError) as err:
        group.reject("other", "x" * 501)
    assert err.value.field == "note"
    group.reject("other", "   ")  # a blank note is no note
    assert isinstance(group.pending[-1], GroupRejected)


def test_a_replayed_history_with_notes_gives_the_same_state():
    group = registered()
    group.reject("duplicate_proposal", "sama dengan KUB lain")
    replayed = Group.from_history(stream_id(group.group_id), group.pending)
    assert (replayed.status, replayed.version) == ("rejected", 4)


# --- funding: tranche limit and disbursement date ----------------------------------------------

def test_no_tranche_beyond_the_configured_maximum():
    assert RULES.funding.max_tranches == 3
    group = registered()
    group.approve()
    for tranche in (1, 2, 3):
        group.fund(tranche=tranche, amount=1_000_000, disbursed_on=IN_2023, budget_year=2023,
                   rules=RULES, today=TODAY)
    before = len(group.pending)
    with pytest.raises(RuleViolationError) as err:
        group.fund(tranche=4, amount=1_000_000, disbursed_on=IN_2023, budget_year=2023,
                   rules=RULES, today=TODAY)
    assert err.value.field == "tranche"
    assert "3" in err.value.reason
    assert len(group.pending) == before


@pytest.mark.parametrize("disbursed_on, budget_year", [
    (date(9999, 12, 31), 2023),   # used to overflow computing the LPJ due date
    (date(1901, 1, 1), 2023),     # before the group's year
    (date(2022, 12, 31), 2023),   # the year before the group's year 2023
    (date(2024, 1, 2), 2023),     # after its budget year
    (TODAY + timedelta(days=2), TODAY.year),  # not disbursed yet
])
def test_the_disbursement_date_must_fall_between_the_group_year_and_today(disbursed_on,
                                                                          budget_year):
    group = registered()
    group.approve()
    with pytest.raises(RuleViolationError) as err:
        group.fund(tranche=1, amount=1_000_000, disbursed_on=disbursed_on,
                   budget_year=budget_year, rules=RULES, today=TODAY)
    assert err.value.field == "disbursed_on"
    assert len(group.pending) == 3


def test_a_disbursement_on_the_group_year_up_to_today_is_accepted():
    for disbursed_on, budget_year in ((date(2023, 1, 1), 2023), (TODAY, TODAY.year),
                                      (date(2023, 12, 30), 2024)):
        group = registered()
        group.approve()
        event = group.fund(tranche=1, amount=1_000_000, disbursed_on=disbursed_on,
                           budget_year=budget_year, rules=RULES, today=TODAY)
        assert event.disbursed_on == disbursed_on
