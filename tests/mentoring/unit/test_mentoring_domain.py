from datetime import date

import pytest
from pydantic import ValidationError

from services.mentoring.config import AssignmentRules, load_config
from services.mentoring.domain import (
    DueGroup,
    FundedGroup,
    GroupMentoring,
    Mentor,
    MonthlyReport,
    PeriodLedger,
    ReportProblemsNoted,
    deadline_of,
    period_bounds,
    suggest_assignments,
)
from shared.contracts.mentoring import (
    MentorAssigned,
    MentorUnassigned,
    PeriodClosed,
    ReportAmended,
    ReportFiled,
    ReportOverdue,
)
from shared.errors import ConflictError, ForbiddenError, NotFoundError, RuleViolationError

RULES = AssignmentRules(caseload_cap=25, allow_same_province=False)
GROUP = FundedGroup("g1", "32", "3201", funded_on=date(2023, 3, 15))
DEADLINE_APRIL = date(2023, 5, 10)


def mentor(tks_id: str = "t1", regency: str = "3201", caseload: int = 0,
           active: bool = True) -> Mentor:
    return Mentor(tks_id, regency[:2], regency, active, caseload,
                  None if active else date(2023, 6, 1))


def given(*events) -> GroupMentoring:
    return GroupMentoring.from_history("group-g1", list(events))


def assigned(tks_id: str = "t1", on: date = date(2023, 3, 20)) -> MentorAssigned:
    return MentorAssigned(group_id="g1", tks_id=tks_id, province_code="32", regency_code="3201",
                          assigned_on=on)


def unassigned(tks_id: str = "t1", on: date = date(2023, 6, 1),
               reason: str = "tks_left") -> MentorUnassigned:
    return MentorUnassigned(group_id="g1", tks_id=tks_id, reason=reason, unassigned_on=on)


def report(period: str = "2023-04", **changes) -> MonthlyReport:
    fields = dict(period=period, revenue=4_500_000, production_units=120, production_unit="kg",
                  members_active=10, new_workers=2, support=("market_access",), lpj_help=True)
    return MonthlyReport(**{**fields, **changes})


def filed(period: str = "2023-04", tks_id: str = "t1", on_time: bool = True,
          filed_on: date | None = None) -> ReportFiled:
    return ReportFiled(group_id="g1", tks_id=tks_id, on_time=on_time, filed_on=filed_on,
                       **report(period).model_dump(exclude={"problems"}))


def file(agg: GroupMentoring, tks_id: str = "t1", period: str = "2023-04",
         filed_on: date = date(2023, 5, 2), closed: bool = False, **changes) -> None:
    agg.file_report(GROUP, tks_id, report(period, **changes), filed_on=filed_on,
                    deadline=deadline_of(period, 10), period_closed=closed)


# ---- assignment -------------------------------------------------------------------------------

def test_a_tks_of_the_groups_regency_is_assigned():
    agg = given()
    agg.assign(GROUP, mentor(), date(2023, 3, 20), RULES)
    assert agg.pending == [assigned()]


def test_a_tks_of_another_regency_is_refused_unless_the_policy_allows_the_province():
    neighbour = mentor(regency="3202")
    with pytest.raises(RuleViolationError, match="outside the group's regency") as err:
        given().assign(GROUP, neighbour, date(2023, 3, 20), RULES)
    assert err.value.field == "tks_id"
    lenient = AssignmentRules(caseload_cap=25, allow_same_province=True)
    agg = given()
    agg.assign(GROUP, neighbour, date(2023, 3, 20), lenient)
    assert [type(e) for e in agg.pending] == [MentorAssigned]
    with pytest.raises(RuleViolationError, match="outside the group's province"):
        given().assign(GROUP, mentor(regency="3301"), date(2023, 3, 20), lenient)


def test_the_caseload_cap_stops_one_group_too_many():
    agg = given()
    agg.assign(GROUP, mentor(caseload=24), date(2023, 3, 20), RULES)
    assert len(agg.pending) == 1
    with pytest.raises(RuleViolationError, match="cap is 25") as err:
        given().assign(GROUP, mentor(caseload=25), date(2023, 3, 20), RULES)
    assert err.value.details["caseload"] == 25


def test_an_inactive_or_unknown_tks_and_a_dissolved_group_are_refused():
    with pytest.raises(RuleViolationError, match="no longer active"):
        given().assign(GROUP, mentor(active=False), date(2023, 3, 20), RULES)
    with pytest.raises(NotFoundError):
        given().assign(GROUP, None, date(2023, 3, 20), RULES)
    dissolved = FundedGroup("g1", "32", "3201", date(2023, 3, 15), date(2023, 4, 1))
    with pytest.raises(RuleViolationError, match="dissolved"):
        given().assign(dissolved, mentor(), date(2023, 4, 2), RULES)


def test_reassignment_ends_the_old_stint_first():
    agg = given(assigned("t1"))
    agg.assign(GROUP, mentor("t2"), date(2023, 5, 1), RULES)
    assert agg.pending == [unassigned("t1", date(2023, 5, 1), "reassigned"),
                           MentorAssigned(group_id="g1", tks_id="t2", province_code="32",
                                          regency_code="3201", assigned_on=date(2023, 5, 1))]
    with pytest.raises(ConflictError):
        given(assigned("t1")).assign(GROUP, mentor("t1"), date(2023, 5, 1), RULES)
    with pytest.raises(RuleViolationError, match="before the group's last mentor change"):
        given(assigned("t1")).assign(GROUP, mentor("t2"), date(2023, 3, 1), RULES)


def test_a_departed_tks_leaves_only_its_own_group_unassigned():
    agg = given(assigned("t1"))
    assert not agg.unassign("tks_left", date(2023, 6, 1), only_tks="t9")
    assert agg.unassign("tks_left", date(2023, 3, 1), only_tks="t1")
    # an effective date before the stint began cannot end it before it started
    assert agg.pending == [unassigned("t1", date(2023, 3, 20))]
    assert agg.mentor is None
    assert not agg.unassign("tks_left", date(2023, 6, 1))


# ---- monthly reports --------------------------------------------------------------------------

def test_a_report_filed_by_the_deadline_is_on_time_and_its_problems_stay_internal():
    agg = given(assigned())
    file(agg, filed_on=DEADLINE_APRIL, problems="the freezer broke")
    report_filed, note = agg.pending
    assert report_filed == filed(on_time=True, filed_on=DEADLINE_APRIL)  # the day as sent
    assert "problems" not in report_filed.model_dump()
    assert note == ReportProblemsNoted(group_id="g1", period="2023-04",
                                       problems="the freezer broke")
    assert ReportProblemsNoted.topic is None
    late = given(assigned())
    file(late, filed_on=date(2023, 5, 11))
    assert late.pending == [filed(on_time=False, filed_on=date(2023, 5, 11))]


def test_a_report_on_a_period_before_funding_is_refused_with_the_reason():
    with pytest.raises(RuleViolationError, match="before the group was funded on 2023-03-15") \
            as err:
        file(given(assigned()), period="2023-02", filed_on=date(2023, 3, 25))
    assert err.value.field == "period"
    assert err.value.details["funded_on"] == "2023-03-15"


def test_a_tks_not_assigned_to_the_group_cannot_file():
    with pytest.raises(ForbiddenError, match="not assigned"):
        file(given(assigned("t1")), tks_id="t2")


def test_a_report_on_a_period_after_the_mentor_left_is_refused():
    history = (assigned("t1"), unassigned("t1", date(2023, 5, 1)))
    with pytest.raises(RuleViolationError, match="after TKS t1 stopped mentoring") as err:
        file(given(*history), period="2023-05", filed_on=date(2023, 6, 1))
    assert err.value.details["left_on"] == "2023-05-01"
    # the month it still mentored can be reported
    agg = given(*history)
    file(agg, period="2023-04")
    assert agg.pending == [filed(filed_on=date(2023, 5, 2))]


def test_a_tks_assigned_after_the_period_cannot_report_on_it():
    history = (assigned("t1"), unassigned("t1", date(2023, 5, 1), "reassigned"),
               assigned("t2", date(2023, 5, 1)))
    with pytest.raises(RuleViolationError, match="began mentoring this group on 2023-05-01"):
        file(given(*history), tks_id="t2", period="2023-04")


def test_one_report_per_group_and_period_and_amendments_until_the_period_closes():
    with pytest.raises(ConflictError, match="already filed") as err:
        file(given(assigned(), filed()))
    assert err.value.details["filed_by"] == "t1"
    agg = given(assigned(), filed(on_time=False))
    changed = agg.amend_report(GROUP, "t1", report(revenue=5_000_000), today=date(2023, 5, 20),
                               period_closed=False)
    assert changed and agg.pending == [ReportAmended(**{
        **filed(on_time=False).model_dump(exclude={"filed_on"}), "revenue": 5_000_000})]
    same = given(assigned(), filed())
    assert not same.amend_report(GROUP, "t1", report(), today=date(2023, 5, 20),
                                 period_closed=False)
    assert same.pending == []
    with pytest.raises(RuleViolationError, match="closed"):
        given(assigned(), filed()).amend_report(GROUP, "t1", report(revenue=1),
                                                today=date(2023, 6, 1), period_closed=True)
    with pytest.raises(RuleViolationError, match="closed"):
        file(given(assigned()), closed=True)
    with pytest.raises(NotFoundError):
        given(assigned()).amend_report(GROUP, "t1", report(), today=date(2023, 5, 2),
                                       period_closed=False)


def test_only_the_tks_who_filed_a_report_may_amend_it_and_it_stays_theirs():
    # t1 filed April; t2 took over on 15 April, so both mentored the group that month
    history = (assigned("t1"), filed(tks_id="t1"), unassigned("t1", date(2023, 4, 15),
                                                              "reassigned"),
               assigned("t2", date(2023, 4, 15)))
    agg = given(*history)
    with pytest.raises(ForbiddenError, match="filed by TKS t1: only that TKS may amend") as err:
        agg.amend_report(GROUP, "t2", report(revenue=1), today=date(2023, 5, 20),
                         period_closed=False)
    assert (err.value.field, err.value.details["filed_by"]) == ("tks_id", "t1")
    assert agg.pending == []
    # ministry_admin amends for the filer: named, or not named at all
    for named in ("t1", None):
        agg = given(*history)
        assert agg.amend_report(GROUP, named, report(revenue=1), today=date(2023, 5, 20),
                                period_closed=False)
        [amended] = agg.pending
        assert (amended.tks_id, amended.revenue, agg.reports["2023-04"].tks_id) == ("t1", 1, "t1")
    # a TKS that never mentored the group is refused as before, without learning the filer
    with pytest.raises(ForbiddenError, match="not assigned") as err:
        given(*history).amend_report(GROUP, "t3", report(revenue=1), today=date(2023, 5, 20),
                                     period_closed=False)
    assert "filed_by" not in err.value.details
    with pytest.raises(NotFoundError):
        given(assigned()).amend_report(GROUP, None, report(), today=date(2023, 5, 2),
                                       period_closed=False)


def test_a_report_on_a_month_not_yet_begun_is_refused():
    with pytest.raises(RuleViolationError, match="has not started"):
        file(given(assigned()), period="2023-06", filed_on=date(2023, 5, 31))


def test_a_filed_report_is_never_flagged_overdue():
    agg = given(assigned(), filed("2023-04"))
    assert not agg.mark_overdue("t1", "2023-04")
    assert agg.mark_overdue("t1", "2023-05")
    assert agg.pending == [ReportOverdue(group_id="g1", tks_id="t1", period="2023-05")]
    assert not agg.mark_overdue("t1", "2023-05")


# ---- closing a month ----------------------------------------------------------------------------

def test_closing_flags_the_due_groups_not_filed_and_happens_once():
    due = [DueGroup("g1", "t1", True), DueGroup("g2", "t1", False), DueGroup("g3", "t2", False)]
    ledger = PeriodLedger("period-2023-04")
    with pytest.raises(RuleViolationError, match="after its deadline 2023-05-10"):
        ledger.close(due, today=date(2023, 5, 10), deadline=DEADLINE_APRIL, force=False)
    overdue = ledger.close(due, today=date(2023, 5, 11), deadline=DEADLINE_APRIL, force=False)
    assert [d.group_id for d in overdue] == ["g2", "g3"]
    assert ledger.pending == [PeriodClosed(period="2023-04", due=3, filed=1, overdue=2)]
    again = PeriodLedger.from_history("period-2023-04", ledger.pending)
    assert again.close(due, today=date(2023, 7, 1), deadline=DEADLINE_APRIL, force=False) == []
    assert again.pending == []


def test_an_administrator_may_force_an_early_close_but_not_of_a_month_to_come():
    ledger = PeriodLedger("period-2023-04")
    ledger.close([], today=date(2023, 5, 1), deadline=DEADLINE_APRIL, force=True)
    assert ledger.pending == [PeriodClosed(period="2023-04", due=0, filed=0, overdue=0)]
    with pytest.raises(RuleViolationError, match="not started"):
        PeriodLedger("period-2023-06").close([], today=date(2023, 5, 1),
                                             deadline=date(2023, 7, 10), force=True)


def test_period_calendar():
    assert period_bounds("2024-02") == (date(2024, 2, 1), date(2024, 2, 29))
    assert deadline_of("2023-12", 10) == date(2024, 1, 10)


# ---- suggestions ------------------------------------------------------------------------------

def _groups(n: int, regency: str = "3201") -> list[FundedGroup]:
    return [FundedGroup(f"g{i:02d}", regency[:2], regency, date(2023, 3, 1)) for i in range(n)]


def test_suggestions_balance_caseloads_within_a_regency():
    suggestions, unplaced = suggest_assignments(
        _groups(5), [mentor("a", caseload=3), mentor("b", caseload=0)], RULES)
    per_tks = {t: sum(s.tks_id == t for s in suggestions) for t in ("a", "b")}
    assert per_tks == {"a": 1, "b": 4}
    assert unplaced == []


def test_suggestions_respect_the_cap_and_say_why_a_group_is_left():
    rules = AssignmentRules(caseload_cap=2, allow_same_province=False)
    groups = _groups(3) + _groups(1, "3301")
    suggestions, unplaced = suggest_assignments(groups, [mentor("a", caseload=1)], rules)
    assert len(suggestions) == 1
    reasons = {u.regency_code: u.reason for u in unplaced}
    assert reasons == {"3201": "every TKS within reach is at the caseload cap",
                       "3301": "no active TKS serves this regency"}


def test_with_the_province_policy_left_over_groups_go_to_the_provinces_lightest_tks():
    rules = AssignmentRules(caseload_cap=25, allow_same_province=True)
    suggestions, unplaced = suggest_assignments(
        _groups(2, "3205"), [mentor("a", "3201", 5), mentor("b", "3202", 1),
                             mentor("c", "3301", 0)], rules)
    assert [s.tks_id for s in suggestions] == ["b", "b"] and unplaced == []


# ---- input and configuration ----------------------------------------------------------------

def test_report_input_is_checked():
    with pytest.raises(ValidationError, match="listed once"):
        report(support=("partnership", "partnership"))
    with pytest.raises(ValidationError):
        report(revenue=-1)
    with pytest.raises(ValidationError):
        report(period="2023-13")
    # figures that would overflow the read models' columns or regional sums
    for field, too_big in [("revenue", 10**12 + 1), ("production_units", 10**12 + 1),
                           ("members_active", 1_001), ("new_workers", 2**31),
                           ("members_active", 2**63)]:
        with pytest.raises(ValidationError, match=field):
            report(**{field: too_big})
    assert report(revenue=10**12, members_active=1_000).revenue == 10**12
    assert report(support=("market_access", "capital_access")).support == (
        "capital_access", "market_access")


def test_configuration_is_read_from_the_data_file_or_another_named_by_the_environment(
        tmp_path, monkeypatch):
    default = load_config()
    assert default.reporting.deadline_day == 10
    text = (tmp_path / "m.toml")
    text.write_text("[reporting]\ndeadline_day = 5\n"
                    "[period_close]\nautomatic = false\ncheck_interval_seconds = 60\n"
                    "window_days = 30\n[batch]\nmax_reports = 10\ngroups_per_transaction = 5\n")
    monkeypatch.setenv("MENTORING_CONFIG_FILE", str(text))
    assert load_config().reporting.deadline_day == 5
    # the assignment policy is a rule of each year now, not operational configuration
    text.write_text(text.read_text() + "[assignment]\ncaseload_cap = 7\n"
                    "allow_same_province = true\n")
    with pytest.raises(ValidationError):
        load_config()
    text.write_text(text.read_text().replace("[assignment]\ncaseload_cap = 7\n"
                                             "allow_same_province = true\n", ""))
    text.write_text(text.read_text().replace("deadline_day = 5", "deadline_day = 31"))
    with pytest.raises(ValidationError):
        load_config()


# ---- what a report needs: an ended month and a contract covering it ---------------------------

@pytest.mark.parametrize(("filed_on", "accepted"), [
    (date(2023, 4, 30), False), (date(2023, 4, 1), False), (date(2023, 5, 1), True)])
def test_a_month_is_reported_only_once_it_has_ended(filed_on, accepted):
    agg = given(assigned())
    if accepted:
        file(agg, filed_on=filed_on)
        assert agg.reports["2023-04"].on_time
        return
    with pytest.raises(RuleViolationError, match="period 2023-04 has not ended") as refused:
        file(agg, filed_on=filed_on)
    assert refused.value.field == "period"
    assert agg.pending == []


@pytest.mark.parametrize(("contract", "accepted"), [
    ((date(2023, 1, 1), date(2023, 12, 31)), True),
    ((date(2023, 4, 30), date(2023, 12, 31)), True),  # begun within the month
    ((date(2022, 1, 1), date(2023, 4, 1)), True),  # ended within the month
    ((date(2022, 1, 1), date(2023, 3, 31)), False),
    ((date(2023, 5, 1), date(2023, 12, 31)), False),
])
def test_only_a_tks_whose_contract_covers_the_month_reports_on_it(contract, accepted):
    agg = given(assigned())

    def run() -> None:
        agg.file_report(GROUP, "t1", report("2023-04"), filed_on=date(2023, 5, 2),
                        deadline=DEADLINE_APRIL, period_closed=False, contract=contract)

    if accepted:
        run()
        assert agg.reports["2023-04"].tks_id == "t1"
        return
    with pytest.raises(RuleViolationError, match="has no contract covering period 2023-04") as e:
        run()
    assert e.value.field == "tks_id"


def test_the_shipped_rules_of_2021_and_2023_are_valid_year_rules():
    import tomllib

    from services.mentoring.config import RULES_DIR, MentoringYearRules

    years = {}
    for year in (2021, 2023):
        with (RULES_DIR / f"{year}.toml").open("rb") as f:
            years[year] = MentoringYearRules.model_validate(tomllib.load(f))
    # the guidelines publish no caseload limit: both years keep the working defaults
    assert years[2021] == years[2023]
    assert years[2023].assignment == AssignmentRules(caseload_cap=25, allow_same_province=False)


def test_suggestions_apply_each_groups_own_policy():
    strict = AssignmentRules(caseload_cap=25, allow_same_province=False)
    lenient = AssignmentRules(caseload_cap=25, allow_same_province=True)
    old = FundedGroup("g-2021", "32", "3202", date(2021, 3, 1), year=2021)
    new = FundedGroup("g-2023", "32", "3203", date(2023, 3, 1), year=2023)
    mentor = Mentor("t1", "32", "3201", True, 0)
    suggestions, unplaced = suggest_assignments(
        [old, new], [mentor], lambda g: lenient if g.programme_year == 2021 else strict)
    assert [(s.group_id, s.tks_id) for s in suggestions] == [("g-2021", "t1")]
    assert [u.group_id for u in unplaced] == ["g-2023"]
