"""Recruitment rules: given events, when a command, then events (or an error and no events)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import date

import pytest

from services.recruitment.config import load_config
from services.recruitment.domain import (
    Applicant,
    ApplicantBriefed,
    ApplicantPassedScreening,
    ApplicantRegistered,
    RecruitmentRound,
    Registration,
    RoundPlaceTaken,
    Tks,
    Vacancy,
    VacancyFilled,
    check_eligibility,
    recruit,
)
from shared.contracts.recruitment import (
    Quota,
    RecruitmentRoundClosed,
    RecruitmentRoundOpened,
    TksContractRenewed,
    TksRecruited,
    TksReleased,
    TksResigned,
    VacancyOpened,
)
from shared.errors import ConflictError, DomainError, RuleViolationError
from shared.envelope import Envelope, parse_payload, utcnow
from shared.nik import make_nik, mask_nik

CONFIG = load_config()
RULES = CONFIG.eligibility
REASONS = CONFIG.screening.rejection_reasons
ROUND = "round-r1"
BORN = date(1996, 5, 17)
# Kabupaten Malinau (North Kalimantan): python-stdnum's place table still rejects 65xx NIKs
NIK_F = make_nik("650201", BORN, "F", 12)


def opened(*quotas: Quota, year: int = 2023, stage: int = 1) -> RecruitmentRoundOpened:
    return RecruitmentRoundOpened(round_id="r1", year=year, stage=stage, quotas=quotas)


def taken(n: int, province: str, regency: str) -> list[RoundPlaceTaken]:
    return [RoundPlaceTaken(round_id="r1", tks_id=f"t{i}", province_code=province,
                            regency_code=regency) for i in range(n)]


class Sealed:
    """A stand-in for the applicant's key (shared.pii.PersonKey): visibly sealed values."""

    def encrypt(self, field: str, value: str | None) -> str | None:
        return None if value is None else f"sealed:{field}:{value}"


SEAL = Sealed()


def nik_hash(nik: str) -> str:
    return hashlib.sha256(nik.encode()).hexdigest()


def registered(applicant_id: str = "a1", year: int = 2023) -> ApplicantRegistered:
    return ApplicantRegistered(
        applicant_id=applicant_id, year=year, nik=SEAL.encrypt("nik", NIK_F),
        nik_hash=nik_hash(NIK_F), nik_masked=mask_nik(NIK_F),
        full_name=SEAL.encrypt("full_name", "Siti Aminah"), sex="F",
        birth_date=SEAL.encrypt("birth_date", BORN.isoformat()), education="S1",
        domicile_province_code="65", domicile_regency_code="6502",
        phone=SEAL.encrypt("phone", "+6281234567890"),
        email=SEAL.encrypt("email", "siti@example.id"))


def briefed_applicant(stage: int = 1, on: date = date(2023, 3, 6)) -> Applicant:
    return Applicant.from_history("applicant-a1", [
        registered(), ApplicantPassedScreening(applicant_id="a1"),
        ApplicantBriefed(applicant_id="a1", stage=stage, city="Jakarta", briefed_on=on)])


def recruited(year: int = 2023) -> TksRecruited:
    return TksRecruited(tks_id="a1", round_id="r1", year=year, stage=1, province_code="65",
                        regency_code="6502", contract_start=date(year, 3, 6),
                        contract_end=date(year, 12, 31))


def registration(**changes) -> Registration:
    values = dict(year=2023, nik=NIK_F, full_name=" Siti Aminah ", sex="F", birth_date=BORN,
                  education="S1", domicile_regency_code="6502", phone="+6281234567890",
                  email="siti@example.id")
    values.update(changes)
    return Registration(**values)


# --- rounds and quotas -------------------------------------------------------------------

def test_opening_a_round_records_its_quotas():
    rnd = RecruitmentRound(ROUND)
    quotas = [Quota(province_code="65", regency_code="6502", places=3),
              Quota(province_code="32", places=10)]
    rnd.open(2023, 1, quotas)
    assert rnd.pending == [opened(*quotas)]
    assert rnd.remaining("65", "6502") == 3
    assert rnd.remaining("32", "3201") == 10
    assert rnd.remaining("65", "6501") is None


@pytest.mark.parametrize("quota, field", [
    (Quota(province_code="32", regency_code="6502", places=1), "quotas.0.regency_code"),
    (Quota(province_code="00", places=1), "quotas.0.province_code"),
    (Quota(province_code="32", regency_code="3298", places=1), "quotas.0.regency_code"),
])
def test_a_quota_must_name_real_places(quota, field):
    rnd = RecruitmentRound(ROUND)
    with pytest.raises(DomainError) as err:
        rnd.open(2023, 1, [quota])
    assert err.value.field == field
    assert rnd.pending == []


def test_the_same_place_cannot_have_two_quotas():
    with pytest.raises(DomainError, match="two quotas"):
        RecruitmentRound(ROUND).open(2023, 1, [Quota(province_code="32", places=1),
                                               Quota(province_code="32", places=2)])


def test_a_round_id_is_opened_once():
    rnd = RecruitmentRound.from_history(ROUND, [opened(Quota(province_code="32", places=1))])
    with pytest.raises(ConflictError):
        rnd.open(2023, 1, [Quota(province_code="32", places=1)])


def test_a_recruitment_beyond_the_regency_quota_is_refused_with_the_remaining_quota():
    rnd = RecruitmentRound.from_history(ROUND, [
        opened(Quota(province_code="65", regency_code="6502", places=2)),
        *taken(2, "65", "6502")])
    with pytest.raises(RuleViolationError) as err:
        rnd.take_place("t9", "65", "6502")
    assert err.value.details["remaining_quota"] == 0
    assert err.value.status == 422
    assert rnd.pending == []


def test_a_province_quota_counts_every_regency_of_the_province():
    rnd = RecruitmentRound.from_history(ROUND, [
        opened(Quota(province_code="32", places=2)), *taken(1, "32", "3201")])
    rnd.take_place("t8", "32", "3273")
    assert rnd.remaining("32", "3204") == 0
    with pytest.raises(RuleViolationError, match="full"):
        rnd.take_place("t9", "32", "3204")


def test_a_regency_with_its_own_quota_is_also_bound_by_its_province_quota():
    rnd = RecruitmentRound.from_history(ROUND, [
        opened(Quota(province_code="32", places=3),
               Quota(province_code="32", regency_code="3201", places=5)),
        *taken(3, "32", "3273")])
    assert rnd.remaining("32", "3201") == 0


def test_a_regency_outside_every_quota_is_refused():
    rnd = RecruitmentRound.from_history(ROUND, [
        opened(Quota(province_code="65", regency_code="6502", places=2))])
    with pytest.raises(RuleViolationError, match="no quota") as err:
        rnd.take_place("t1", "65", "6501")
    assert err.value.field == "regency_code"


def test_closing_reports_the_recruited_count_and_stops_recruitment():
    rnd = RecruitmentRound.from_history(ROUND, [
        opened(Quota(province_code="32", places=5)), *taken(2, "32", "3201")])
    rnd.close()
    assert rnd.pending == [RecruitmentRoundClosed(round_id="r1", year=2023, stage=1,
                                                  recruited=2)]
    with pytest.raises(RuleViolationError, match="closed"):
        rnd.take_place("t9", "32", "3201")
    with pytest.raises(RuleViolationError):
        rnd.close()


# --- applicants ------------------------------------------------------------------------

def test_registering_records_the_applicant_with_its_domicile_province():
    applicant = Applicant("applicant-a1")
    applicant.register(registration(), RULES, SEAL, nik_hash)
    assert applicant.pending == [registered()]
    assert applicant.nik_masked == f"{NIK_F[:6]}**********"


def test_the_registration_records_only_sealed_personal_fields_beside_the_nik_hash():
    applicant = Applicant("applicant-a1")
    applicant.register(registration(), RULES, SEAL, nik_hash)
    payload = applicant.pending[0].model_dump(mode="json")
    for field in ("nik", "full_name", "birth_date", "phone", "email"):
        assert payload[field].startswith(f"sealed:{field}:"), field
    assert payload["nik_hash"] == nik_hash(NIK_F) and payload["nik_masked"] == "650201" + "*" * 10


def test_a_version_1_registration_with_plaintext_still_reads():
    old = {"applicant_id": "a1", "year": 2023, "nik": NIK_F, "full_name": "Siti Aminah",
           "sex": "F", "birth_date": BORN.isoformat(), "education": "S1",
           "domicile_province_code": "65", "domicile_regency_code": "6502",
           "phone": None, "email": None}
    event = parse_payload(Envelope(
        event_id=uuid.uuid4(), event_type=ApplicantRegistered.event_type, schema_version=1,
        occurred_at=utcnow(), stream_id="applicant-a1", stream_version=1,
        correlation_id=uuid.uuid4(), producer="recruitment", actor="test", payload=old))
    assert isinstance(event, ApplicantRegistered)
    assert (event.nik, event.full_name, event.nik_hash) == (NIK_F, "Siti Aminah", None)
    assert event.nik_masked == mask_nik(NIK_F)
    assert Applicant.from_history("applicant-a1", [event]).nik_masked == mask_nik(NIK_F)


def test_an_applicant_is_registered_once():
    applicant = Applicant.from_history("applicant-a1", [registered()])
    with pytest.raises(ConflictError):
        applicant.register(registration(), RULES, SEAL, nik_hash)


@pytest.mark.parametrize("changes, field, reason", [
    ({"nik": "12345"}, "nik", "16 digits"),
    ({"nik": "9999" + NIK_F[4:]}, "nik", "Kemendagri district"),
    ({"nik": NIK_F[:6] + "99" + NIK_F[8:]}, "nik", "not a real date"),
    ({"sex": "M"}, "sex", "does not agree"),
    ({"birth_date": date(1996, 5, 18)}, "birth_date", "does not agree"),
    ({"domicile_regency_code": "3298"}, "domicile_regency_code", "Kemendagri"),
    ({"education": "PhD"}, "education", "unknown education"),
    ({"full_name": "   "}, "full_name", "empty"),
])
def test_registration_refuses_wrong_or_disagreeing_data(changes, field, reason):
    applicant = Applicant("applicant-a1")
    with pytest.raises(DomainError) as err:
        applicant.register(registration(**changes), RULES, SEAL, nik_hash)
    assert err.value.field == field
    assert reason in err.value.reason
    assert NIK_F not in str(err.value.body())
    assert applicant.pending == []


def test_a_man_registers_with_his_own_birth_day():
    applicant = Applicant("applicant-a2")
    applicant.register(registration(nik=make_nik("320101", BORN, "M", 7), sex="M"), RULES,
                         SEAL, nik_hash)
    assert applicant.pending[0].domicile_province_code == "65"


def test_eligibility_names_the_minimum_education_rule():
    with pytest.raises(RuleViolationError) as err:
        Applicant("applicant-a1").register(registration(education="SMA"), RULES, SEAL,
                                                nik_hash)
    assert err.value.details["rule"] == "minimum_education"
    assert err.value.details["minimum"] == RULES.minimum_education


@pytest.mark.parametrize("born, ok", [
    (date(2023 - RULES.min_age, 1, 1), True),   # turns min_age on 1 January
    (date(2023 - RULES.min_age, 1, 2), False),  # one day too young
    (date(2023 - RULES.max_age - 1, 1, 2), True),  # still max_age on 1 January
    (date(2023 - RULES.max_age - 1, 1, 1), False),
])
def test_eligibility_age_range_is_taken_on_1_january_of_the_year(born, ok):
    if ok:
        check_eligibility(RULES, "S1", born, 2023)
        return
    with pytest.raises(RuleViolationError) as err:
        check_eligibility(RULES, "S1", born, 2023)
    assert err.value.details["rule"] == "age_range"
    assert err.value.field == "birth_date"


def test_screening_passes_or_rejects_with_a_configured_reason():
    passing = Applicant.from_history("applicant-a1", [registered()])
    passing.screen(True, None, None, REASONS)
    assert passing.status == "screened"
    rejected = Applicant.from_history("applicant-a1", [registered()])
    with pytest.raises(DomainError, match="needs a reason"):
        rejected.screen(False, "did not smile", None, REASONS)
    rejected.screen(False, "failed_interview", "late", REASONS)
    assert rejected.pending[0].reason == "failed_interview"
    with pytest.raises(RuleViolationError, match="only a registered"):
        rejected.screen(True, None, None, REASONS)


def test_briefing_needs_a_passed_screening_and_a_date_in_the_year():
    applicant = Applicant.from_history("applicant-a1", [registered()])
    with pytest.raises(RuleViolationError) as err:
        applicant.brief(1, "Jakarta", date(2023, 3, 6))
    assert err.value.details["current_status"] == "registered"
    applicant.screen(True, None, None, REASONS)
    with pytest.raises(DomainError, match="2023"):
        applicant.brief(1, "Jakarta", date(2022, 12, 30))
    applicant.brief(2, "Jakarta", date(2023, 6, 1))
    assert applicant.pending[-1] == ApplicantBriefed(applicant_id="a1", stage=2, city="Jakarta",
                                                     briefed_on=date(2023, 6, 1))


# --- recruitment -----------------------------------------------------------------------

def open_round(places: int = 2, stage: int = 1) -> RecruitmentRound:
    return RecruitmentRound.from_history(ROUND, [
        opened(Quota(province_code="65", regency_code="6502", places=places), stage=stage)])


def test_recruiting_takes_a_place_and_defaults_the_contract_to_briefing_day_through_december():
    rnd, tks = open_round(), Tks("tks-a1")
    recruit(rnd, briefed_applicant(), tks, "6502", None, None)
    assert tks.pending == [recruited()]
    assert rnd.pending == [RoundPlaceTaken(round_id="r1", tks_id="a1", province_code="65",
                                           regency_code="6502")]
    assert rnd.remaining("65", "6502") == 1


def test_recruiting_with_a_given_contract_period():
    tks = Tks("tks-a1")
    recruit(open_round(), briefed_applicant(), tks, "6502", date(2023, 4, 1), date(2023, 11, 30))
    assert (tks.pending[0].contract_start, tks.pending[0].contract_end) == (
        date(2023, 4, 1), date(2023, 11, 30))


@pytest.mark.parametrize("start, end", [
    (date(2023, 5, 1), date(2023, 4, 30)),
    (date(2022, 12, 1), date(2023, 6, 30)),
    (date(2023, 5, 1), date(2024, 4, 30)),
])
def test_a_contract_runs_forward_within_the_round_year(start, end):
    rnd, tks = open_round(), Tks("tks-a1")
    with pytest.raises(DomainError, match="within 2023"):
        recruit(rnd, briefed_applicant(), tks, "6502", start, end)
    assert rnd.pending == [] and tks.pending == []


@pytest.mark.parametrize("applicant, reason", [
    (Applicant.from_history("applicant-a1", [registered()]), "only a briefed"),
    (briefed_applicant(stage=2), "stage 2"),
    (Applicant.from_history("applicant-a1", [
        registered(year=2024), ApplicantPassedScreening(applicant_id="a1"),
        ApplicantBriefed(applicant_id="a1", stage=1, city="Medan",
                         briefed_on=date(2024, 2, 1))]), "registered for 2024"),
])
def test_only_an_applicant_briefed_in_the_rounds_year_and_stage_is_recruited(applicant, reason):
    rnd, tks = open_round(), Tks("tks-a1")
    with pytest.raises(RuleViolationError, match=reason):
        recruit(rnd, applicant, tks, "6502", None, None)
    assert rnd.pending == [] and tks.pending == []


def test_a_tks_is_recruited_once():
    rnd = open_round()
    tks = Tks.from_history("tks-a1", [recruited()])
    with pytest.raises(ConflictError):
        recruit(rnd, briefed_applicant(), tks, "6502", None, None)
    assert rnd.pending == []


def test_recruiting_into_a_full_quota_records_nothing():
    rnd = RecruitmentRound.from_history(ROUND, [
        opened(Quota(province_code="65", regency_code="6502", places=1)), *taken(1, "65", "6502")])
    tks = Tks("tks-a1")
    with pytest.raises(RuleViolationError) as err:
        recruit(rnd, briefed_applicant(), tks, "6502", None, None)
    assert err.value.details["remaining_quota"] == 0
    assert rnd.pending == [] and tks.pending == []


def test_published_events_of_a_recruitment_carry_no_personal_data():
    rnd, tks = open_round(), Tks("tks-a1")
    applicant = briefed_applicant()
    recruit(rnd, applicant, tks, "6502", None, None)
    for event in [*rnd.pending, *tks.pending]:
        if event.topic:
            dumped = event.model_dump_json()
            assert NIK_F not in dumped and "Siti" not in dumped and "1996" not in dumped


# --- vacancies ---------------------------------------------------------------------------

def opened_vacancy(year: int = 2023, regency: str = "6502") -> Vacancy:
    return Vacancy.from_history("vacancy-v1", [VacancyOpened(
        vacancy_id="v1", year=year, province_code=regency[:2], regency_code=regency,
        replaces_tks_id="old", reason="replacement")])


def test_recruiting_into_an_open_vacancy_fills_it():
    vacancy, tks = opened_vacancy(), Tks("tks-a1")
    recruit(open_round(), briefed_applicant(), tks, "6502", None, None, vacancy)
    assert vacancy.pending == [VacancyFilled(vacancy_id="v1", tks_id="a1", round_id="r1")]


@pytest.mark.parametrize("vacancy", [opened_vacancy(year=2024), opened_vacancy(regency="6501")])
def test_a_vacancy_is_filled_only_in_its_year_and_regency(vacancy):
    rnd, tks = open_round(), Tks("tks-a1")
    with pytest.raises(RuleViolationError, match="vacancy is for"):
        recruit(rnd, briefed_applicant(), tks, "6502", None, None, vacancy)
    assert rnd.pending == [] and tks.pending == [] and vacancy.pending == []


def test_a_filled_vacancy_is_not_filled_again():
    vacancy = opened_vacancy()
    vacancy.fill("a1", "r1")
    with pytest.raises(RuleViolationError, match="not open"):
        vacancy.fill("a2", "r1")


# --- contract lifecycle ------------------------------------------------------------------

def test_continue_renews_for_the_whole_next_year_in_the_same_regency():
    tks = Tks.from_history("tks-a1", [recruited()])
    tks.renew(2023, 81.5)
    assert tks.pending == [TksContractRenewed(
        tks_id="a1", year=2024, province_code="65", regency_code="6502",
        contract_start=date(2024, 1, 1), contract_end=date(2024, 12, 31), evaluation_score=81.5)]


def test_a_second_renewal_for_the_same_year_is_refused():
    tks = Tks.from_history("tks-a1", [recruited()])
    tks.renew(2023, 80.0)
    assert tks.renewed_for(2024)
    with pytest.raises(ConflictError, match="already renewed for 2024"):
        tks.renew(2023, 80.0)
    assert len(tks.pending) == 1


def test_renewal_needs_a_contract_for_the_evaluated_year():
    tks = Tks.from_history("tks-a1", [recruited(2022)])
    with pytest.raises(RuleViolationError, match="contract for 2022"):
        tks.renew(2023, 70.0)


def test_replace_releases_at_the_contract_end_and_opens_a_vacancy_for_next_year():
    tks = Tks.from_history("tks-a1", [recruited()])
    vacancy = tks.release_after_evaluation(2023)
    assert tks.pending == [TksReleased(tks_id="a1", year=2023, province_code="65",
                                       regency_code="6502", reason="evaluation",
                                       effective_date=date(2023, 12, 31))]
    [opened_event] = vacancy.pending
    assert (opened_event.year, opened_event.regency_code, opened_event.replaces_tks_id,
            opened_event.reason) == (2024, "6502", "a1", "replacement")
    # the same outcome twice would name the same vacancy
    again = Tks.from_history("tks-a1", [recruited()]).release_after_evaluation(2023)
    assert again.vacancy_id == vacancy.vacancy_id
    with pytest.raises(RuleViolationError, match="released TKS cannot be renewed"):
        tks.renew(2023, 90.0)


def test_resignation_within_the_contract_opens_a_vacancy_for_the_same_year():
    tks = Tks.from_history("tks-a1", [recruited()])
    with pytest.raises(DomainError, match="within the contract"):
        tks.resign(date(2024, 1, 5), True)
    vacancy = tks.resign(date(2023, 8, 31), True)
    assert tks.pending == [TksResigned(tks_id="a1", year=2023, province_code="65",
                                       regency_code="6502", effective_date=date(2023, 8, 31))]
    assert vacancy is not None and vacancy.pending[0].reason == "resignation"
    assert vacancy.pending[0].year == 2023
    with pytest.raises(RuleViolationError, match="resigned TKS cannot resign"):
        tks.resign(date(2023, 9, 1), False)


def test_resigning_without_a_vacancy():
    tks = Tks.from_history("tks-a1", [recruited()])
    assert tks.resign(date(2023, 8, 31), False) is None
