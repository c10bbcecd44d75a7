"""Recruitment rules: rounds and their quotas, applicants, TKS contracts, vacancies. Pure, no I/O.

Streams: `round-<id>`, `applicant-<id>`, `tks-<id>` (the TKS id is the applicant's id),
`vacancy-<id>`. Every command method checks all its rules before it records anything, so a
refused command leaves the aggregate as it was (the batch endpoints rely on this).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, Protocol

from pydantic import Field

from services.recruitment.config import Eligibility
from shared import regions
from shared.aggregate import Aggregate
from shared.contracts.common import Id, ProvinceCode, RegencyCode, Year
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
from shared.envelope import Event, register, upcaster
from shared.errors import ConflictError, DomainError, RuleViolationError
from shared.nik import InvalidNikError, mask_nik, parse_nik

Sex = Literal["F", "M"]
VACANCY_NAMESPACE = uuid.UUID("5b0c3f7e-4d0a-4a43-9a53-8f1e6f7c2a11")


# the personal fields of an applicant, as tokens (shared.pii) bound to the applicant's stream
# id (its person_ref) and the field's name; the read model holds the same tokens
PERSONAL_FIELDS = ("nik", "full_name", "birth_date", "phone", "email")


class Seal(Protocol):
    """Encrypts one personal field of one person (shared.pii.PersonKey)."""

    def encrypt(self, field: str, value: str | None) -> str | None: ...


# Internal events: applicant-level facts with personal data stay in this service (topic None).
@register
class ApplicantRegistered(Event):
    """Version 2: the personal fields are `pii1:` tokens of the applicant's key, `nik_hash` the
    keyed hash of the NIK (the one-registration-per-NIK rule), `nik_masked` its region. An
    event of version 1 (plaintext, before encryption) is upcast with its values as they were
    (`nik_hash` None): a value that is not a token is plaintext."""

    event_type = "recruitment.ApplicantRegistered"
    schema_version = 2
    applicant_id: Id
    year: Year
    nik: str = Field(min_length=16, max_length=400)
    nik_hash: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    nik_masked: str = Field(min_length=16, max_length=16)
    full_name: str = Field(min_length=1, max_length=2000)
    sex: Sex
    birth_date: str = Field(min_length=10, max_length=400, description="ISO date, as a token")
    education: str
    domicile_province_code: ProvinceCode
    domicile_regency_code: RegencyCode
    phone: str | None = None  # optional since historical rosters have no contact details
    email: str | None = None


@upcaster(ApplicantRegistered.event_type, 1)
def _registered_v1(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "nik_masked": mask_nik(payload["nik"]), "nik_hash": None}


@register
class ApplicantPassedScreening(Event):
    event_type = "recruitment.ApplicantPassedScreening"
    applicant_id: Id


@register
class ApplicantRejected(Event):
    event_type = "recruitment.ApplicantRejected"
    applicant_id: Id
    reason: str
    note: str | None = None


@register
class ApplicantBriefed(Event):
    event_type = "recruitment.ApplicantBriefed"
    applicant_id: Id
    stage: int = Field(ge=1, le=3)
    city: str = Field(min_length=1, max_length=100)
    briefed_on: date


@register
class RoundPlaceTaken(Event):
    """The round's count of a recruitment (TksRecruited itself is on the TKS stream)."""

    event_type = "recruitment.RoundPlaceTaken"
    round_id: Id
    tks_id: Id
    province_code: ProvinceCode
    regency_code: RegencyCode


@register
class VacancyFilled(Event):
    event_type = "recruitment.VacancyFilled"
    vacancy_id: Id
    tks_id: Id
    round_id: Id


def _transition_error(what: str, status: str | None, field: str) -> RuleViolationError:
    return RuleViolationError(what, field=field, current_status=status)


def known_regency(code: str, field: str = "regency_code") -> regions.Regency:
    regency = regions.regency(code)
    if regency is None:
        raise DomainError(f"{code!r} is not a current Kemendagri regency/city code", field=field)
    return regency


QuotaKey = tuple[str, str | None]  # (province, regency or None for the whole province)


class RecruitmentRound(Aggregate):
    def __init__(self, stream_id: str):
        super().__init__(stream_id)
        self.round_id = stream_id.removeprefix("round-")
        self.status: str | None = None
        self.year = 0
        self.stage = 0
        self.places: dict[QuotaKey, int] = {}
        self.taken: dict[QuotaKey, int] = {}
        self.recruited = 0

    def apply(self, event: Event) -> None:
        match event:
            case RecruitmentRoundOpened():
                self.status, self.year, self.stage = "open", event.year, event.stage
                self.places = {(q.province_code, q.regency_code): q.places for q in event.quotas}
                self.taken = dict.fromkeys(self.places, 0)
            case RoundPlaceTaken():
                for key in self._covering(event.province_code, event.regency_code):
                    self.taken[key] += 1
                self.recruited += 1
            case RecruitmentRoundClosed():
                self.status = "closed"

    def open(self, year: int, stage: int, quotas: list[Quota]) -> None:
        if self.status is not None:
            raise ConflictError("a round with this id exists", field="round_id",
                                round_id=self.round_id)
        if not quotas:
            raise DomainError("a round needs at least one quota", field="quotas")
        seen: set[QuotaKey] = set()
        for i, q in enumerate(quotas):
            if regions.province(q.province_code) is None:
                raise DomainError(f"{q.province_code!r} is not a current province code",
                                  field=f"quotas.{i}.province_code")
            if q.regency_code is not None:
                regency = known_regency(q.regency_code, f"quotas.{i}.regency_code")
                if regency.province_code != q.province_code:
                    raise DomainError(f"regency {q.regency_code} is not in province "
                                      f"{q.province_code}", field=f"quotas.{i}.regency_code")
            if (q.province_code, q.regency_code) in seen:
                raise DomainError("the same place has two quotas", field=f"quotas.{i}")
            seen.add((q.province_code, q.regency_code))
        self.record(RecruitmentRoundOpened(round_id=self.round_id, year=year, stage=stage,
                                           quotas=tuple(quotas)))

    def _covering(self, province_code: str, regency_code: str) -> list[QuotaKey]:
        return [k for k in ((province_code, regency_code), (province_code, None))
                if k in self.places]

    def remaining(self, province_code: str, regency_code: str) -> int | None:
        """Places left for a recruitment into the regency (every quota covering it must have
        room); None when no quota of this round covers it."""
        covering = self._covering(province_code, regency_code)
        if not covering:
            return None
        return min(self.places[k] - self.taken[k] for k in covering)

    def ensure_open(self) -> None:
        if self.status != "open":
            raise _transition_error("the round is closed", self.status, "round_id")

    def check_room(self, province_code: str, regency_code: str) -> None:
        self.ensure_open()
        left = self.remaining(province_code, regency_code)
        if left is None:
            raise RuleViolationError(f"round {self.round_id} has no quota for regency "
                                     f"{regency_code} (province {province_code})",
                                     field="regency_code", remaining_quota=0)
        if left <= 0:
            raise RuleViolationError(f"the quota for regency {regency_code} is full",
                                     field="regency_code", remaining_quota=0)

    def take_place(self, tks_id: str, province_code: str, regency_code: str) -> None:
        self.check_room(province_code, regency_code)
        self.record(RoundPlaceTaken(round_id=self.round_id, tks_id=tks_id,
                                    province_code=province_code, regency_code=regency_code))

    def close(self) -> None:
        self.ensure_open()
        self.record(RecruitmentRoundClosed(round_id=self.round_id, year=self.year,
                                           stage=self.stage, recruited=self.recruited))


@dataclass(frozen=True)
class Registration:
    year: int
    nik: str
    full_name: str
    sex: Sex
    birth_date: date
    education: str
    domicile_regency_code: str
    phone: str | None  # already normalised by the API (E.164); None: not given
    email: str | None


def age_on(birth_date: date, day: date) -> int:
    return day.year - birth_date.year - ((day.month, day.day) < (birth_date.month, birth_date.day))


def check_eligibility(rules: Eligibility, education: str, birth_date: date, year: int) -> None:
    """Raises DomainError for an unknown education level, RuleViolationError naming the rule
    (`minimum_education`, `age_range`) that refuses the applicant."""
    if education not in rules.education_levels:
        raise DomainError(f"unknown education level {education!r}; known: "
                          f"{', '.join(rules.education_levels)}", field="education")
    if rules.rank(education) < rules.rank(rules.minimum_education):
        raise RuleViolationError(f"education {education} is below the minimum "
                                 f"{rules.minimum_education}", field="education",
                                 rule="minimum_education", minimum=rules.minimum_education)
    age = age_on(birth_date, date(year, 1, 1))
    if not rules.min_age <= age <= rules.max_age:
        raise RuleViolationError(f"age {age} on 1 January {year} is outside "
                                 f"{rules.min_age}-{rules.max_age}", field="birth_date",
                                 rule="age_range", age=age, min_age=rules.min_age,
                                 max_age=rules.max_age)


class Applicant(Aggregate):
    def __init__(self, stream_id: str):
        super().__init__(stream_id)
        self.applicant_id = stream_id.removeprefix("applicant-")
        self.status: str | None = None
        self.year = 0
        self.province_code = ""
        self.nik_masked = ""
        self.briefing_stage: int | None = None
        self.briefed_on: date | None = None

    def apply(self, event: Event) -> None:
        match event:
            case ApplicantRegistered():
                self.status, self.year = "registered", event.year
                self.province_code = event.domicile_province_code
                self.nik_masked = event.nik_masked
            case ApplicantPassedScreening():
                self.status = "screened"
            case ApplicantRejected():
                self.status = "rejected"
            case ApplicantBriefed():
                self.status = "briefed"
                self.briefing_stage, self.briefed_on = event.stage, event.briefed_on

    def register(self, reg: Registration, rules: Eligibility, seal: Seal,
                 nik_hash: Callable[[str], str]) -> None:
        """Checks the plaintext registration, then records it with its personal fields sealed
        (`seal`: the applicant's key) and the NIK's keyed hash. Raises DomainError (NIK, sex or
        birth date wrong or disagreeing, unknown regency or education), RuleViolationError (an
        eligibility rule)."""
        if self.status is not None:
            raise ConflictError("this applicant is already registered", field="applicant_id",
                                applicant_id=self.applicant_id)
        try:
            info = parse_nik(reg.nik)
        except InvalidNikError as exc:
            raise DomainError(str(exc), field="nik") from exc
        if info.sex != reg.sex:
            raise DomainError(f"sex {reg.sex} does not agree with the NIK", field="sex")
        if info.birth_date != reg.birth_date:
            raise DomainError("birth date does not agree with the NIK", field="birth_date")
        if not reg.full_name.strip():
            raise DomainError("the full name is empty", field="full_name")
        domicile = known_regency(reg.domicile_regency_code, "domicile_regency_code")
        check_eligibility(rules, reg.education, reg.birth_date, reg.year)
        self.record(ApplicantRegistered(
            applicant_id=self.applicant_id, year=reg.year, nik=seal.encrypt("nik", info.nik),
            nik_hash=nik_hash(info.nik), nik_masked=mask_nik(info.nik),
            full_name=seal.encrypt("full_name", reg.full_name.strip()), sex=reg.sex,
            birth_date=seal.encrypt("birth_date", reg.birth_date.isoformat()),
            education=reg.education, domicile_province_code=domicile.province_code,
            domicile_regency_code=domicile.code, phone=seal.encrypt("phone", reg.phone),
            email=seal.encrypt("email", reg.email)))

    def screen(self, passed: bool, reason: str | None, note: str | None,
               reasons: tuple[str, ...]) -> None:
        if self.status != "registered":
            raise _transition_error("only a registered applicant can be screened", self.status,
                                    "applicant_id")
        if passed:
            if reason is not None:
                raise DomainError("a passed screening takes no rejection reason", field="reason")
            self.record(ApplicantPassedScreening(applicant_id=self.applicant_id))
            return
        if reason not in reasons:
            raise DomainError(f"a rejection needs a reason, one of: {', '.join(reasons)}",
                              field="reason")
        self.record(ApplicantRejected(applicant_id=self.applicant_id, reason=reason, note=note))

    def brief(self, stage: int, city: str, briefed_on: date) -> None:
        if self.status != "screened":
            raise _transition_error("only an applicant who passed screening can be briefed",
                                    self.status, "applicant_id")
        if briefed_on.year != self.year:
            raise DomainError(f"the briefing must take place in {self.year}",
                              field="briefed_on")
        if not city.strip():
            raise DomainError("the briefing city is empty", field="city")
        self.record(ApplicantBriefed(applicant_id=self.applicant_id, stage=stage,
                                     city=city.strip(), briefed_on=briefed_on))

    def ensure_recruitable(self, year: int, stage: int) -> None:
        if self.status != "briefed":
            raise _transition_error("only a briefed applicant can be recruited", self.status,
                                    "applicant_id")
        if self.year != year:
            raise RuleViolationError(f"the applicant registered for {self.year}, the round is "
                                     f"for {year}", field="applicant_id")
        if self.briefing_stage != stage:
            raise RuleViolationError(f"the applicant was briefed in stage {self.briefing_stage}, "
                                     f"the round is stage {stage}", field="applicant_id")


class Tks(Aggregate):
    def __init__(self, stream_id: str):
        super().__init__(stream_id)
        self.tks_id = stream_id.removeprefix("tks-")
        self.status: str | None = None  # active, released, resigned
        self.round_id = ""
        self.stage = 0
        self.province_code = ""
        self.regency_code = ""
        self.contract_year = 0
        self.contract_start: date | None = None
        self.contract_end: date | None = None

    def apply(self, event: Event) -> None:
        match event:
            case TksRecruited():
                self.status, self.round_id, self.stage = "active", event.round_id, event.stage
                self.province_code, self.regency_code = event.province_code, event.regency_code
                self._contract(event.year, event.contract_start, event.contract_end)
            case TksContractRenewed():
                self._contract(event.year, event.contract_start, event.contract_end)
            case TksReleased():
                self.status = "released"
            case TksResigned():
                self.status = "resigned"

    def _contract(self, year: int, start: date, end: date) -> None:
        self.contract_year, self.contract_start, self.contract_end = year, start, end

    def recruit(self, rnd: RecruitmentRound, province_code: str, regency_code: str,
                contract_start: date, contract_end: date) -> None:
        if self.status is not None:
            raise ConflictError("this applicant is already recruited", field="applicant_id",
                                tks_id=self.tks_id)
        if not (date(rnd.year, 1, 1) <= contract_start <= contract_end <= date(rnd.year, 12, 31)):
            raise DomainError(f"the contract must run forward within {rnd.year}",
                              field="contract_end" if contract_start.year == rnd.year
                              else "contract_start")
        self.record(TksRecruited(
            tks_id=self.tks_id, round_id=rnd.round_id, year=rnd.year, stage=rnd.stage,
            province_code=province_code, regency_code=regency_code,
            contract_start=contract_start, contract_end=contract_end))

    def renewed_for(self, year: int) -> bool:
        return self.contract_year >= year

    def renew(self, evaluated_year: int, score: float | None) -> None:
        """Continue the contract into `evaluated_year + 1`, same regency, the whole year."""
        year = evaluated_year + 1
        if self.status != "active":
            raise _transition_error(f"a {self.status} TKS cannot be renewed", self.status,
                                    "tks_id")
        if self.renewed_for(year):
            raise ConflictError(f"the contract is already renewed for {year}", field="year",
                                tks_id=self.tks_id)
        if self.contract_year != evaluated_year:
            raise RuleViolationError(f"the TKS has a contract for {self.contract_year}, not "
                                     f"{evaluated_year}", field="year")
        self.record(TksContractRenewed(
            tks_id=self.tks_id, year=year, province_code=self.province_code,
            regency_code=self.regency_code, contract_start=date(year, 1, 1),
            contract_end=date(year, 12, 31), evaluation_score=score))

    def release_after_evaluation(self, evaluated_year: int) -> Vacancy:
        """End the contract at its end date and open a vacancy in the same regency for the
        next year. Returns the vacancy (a new aggregate with its event pending)."""
        if self.status != "active":
            raise _transition_error(f"a {self.status} TKS cannot be released", self.status,
                                    "tks_id")
        if self.contract_year != evaluated_year:
            raise RuleViolationError(f"the TKS has a contract for {self.contract_year}, not "
                                     f"{evaluated_year}", field="year")
        assert self.contract_end is not None
        self.record(TksReleased(tks_id=self.tks_id, year=evaluated_year,
                                province_code=self.province_code,
                                regency_code=self.regency_code, reason="evaluation",
                                effective_date=self.contract_end))
        return Vacancy.for_replacement(self, evaluated_year + 1, "replacement")

    def resign(self, effective_date: date, open_vacancy: bool) -> Vacancy | None:
        if self.status != "active":
            raise _transition_error(f"a {self.status} TKS cannot resign", self.status, "tks_id")
        assert self.contract_start is not None and self.contract_end is not None
        if not self.contract_start <= effective_date <= self.contract_end:
            raise DomainError(f"the resignation must take effect within the contract "
                              f"({self.contract_start} to {self.contract_end})",
                              field="effective_date")
        self.record(TksResigned(tks_id=self.tks_id, year=self.contract_year,
                                province_code=self.province_code,
                                regency_code=self.regency_code, effective_date=effective_date))
        if not open_vacancy:
            return None
        return Vacancy.for_replacement(self, self.contract_year, "resignation")


class Vacancy(Aggregate):
    def __init__(self, stream_id: str):
        super().__init__(stream_id)
        self.vacancy_id = stream_id.removeprefix("vacancy-")
        self.status: str | None = None
        self.year = 0
        self.province_code = ""
        self.regency_code = ""

    def apply(self, event: Event) -> None:
        match event:
            case VacancyOpened():
                self.status, self.year = "open", event.year
                self.province_code, self.regency_code = event.province_code, event.regency_code
            case VacancyFilled():
                self.status = "filled"

    @classmethod
    def for_replacement(cls, tks: Tks, year: int, reason: Literal["replacement", "resignation"]
                        ) -> Vacancy:
        # one vacancy per TKS and year: a redelivered outcome finds the stream already there
        vacancy_id = str(uuid.uuid5(VACANCY_NAMESPACE, f"{tks.tks_id}/{year}"))
        vacancy = cls(f"vacancy-{vacancy_id}")
        vacancy.record(VacancyOpened(vacancy_id=vacancy_id, year=year,
                                     province_code=tks.province_code,
                                     regency_code=tks.regency_code,
                                     replaces_tks_id=tks.tks_id, reason=reason))
        return vacancy

    def ensure_fillable(self, year: int, regency_code: str) -> None:
        if self.status != "open":
            raise _transition_error("the vacancy is not open", self.status, "vacancy_id")
        if (self.year, self.regency_code) != (year, regency_code):
            raise RuleViolationError(f"the vacancy is for regency {self.regency_code} in "
                                     f"{self.year}", field="vacancy_id")

    def fill(self, tks_id: str, round_id: str) -> None:
        if self.status != "open":
            raise _transition_error("the vacancy is not open", self.status, "vacancy_id")
        self.record(VacancyFilled(vacancy_id=self.vacancy_id, tks_id=tks_id, round_id=round_id))


def recruit(rnd: RecruitmentRound, applicant: Applicant, tks: Tks, regency_code: str,
            contract_start: date | None, contract_end: date | None,
            vacancy: Vacancy | None = None) -> None:
    """Recruit a briefed applicant into a regency of the round: takes a quota place, records
    TksRecruited and fills the vacancy if one is named. Checks everything before recording.
    The contract defaults to the briefing date through 31 December of the round's year."""
    rnd.ensure_open()
    applicant.ensure_recruitable(rnd.year, rnd.stage)
    regency = known_regency(regency_code)
    if tks.status is not None:
        raise ConflictError("this applicant is already recruited", field="applicant_id",
                            tks_id=tks.tks_id)
    rnd.check_room(regency.province_code, regency.code)
    if vacancy is not None:
        vacancy.ensure_fillable(rnd.year, regency.code)
    assert applicant.briefed_on is not None
    start = contract_start or applicant.briefed_on
    end = contract_end or date(rnd.year, 12, 31)
    tks.recruit(rnd, regency.province_code, regency.code, start, end)
    rnd.take_place(tks.tks_id, regency.province_code, regency.code)
    if vacancy is not None:
        vacancy.fill(tks.tks_id, rnd.round_id)
