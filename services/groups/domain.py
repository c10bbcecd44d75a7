"""The TKM group aggregate and its rules: pure, no I/O.

One rule is not here: a person belongs to at most one active group per year. It spans groups, so
the `active_memberships` table (primary key year + the NIK's keyed hash, written in the command's
transaction) enforces it; see projections.py.

Members' personal data (issue 18, docs/privacy.md): what an officer typed is checked in plaintext
(`Person`, never stored), then sealed into a `MemberRecord` of `pii1:` tokens under the person's
data key (services/groups/privacy.py); the aggregate decides on the NIK's keyed hash alone.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.groups.config import GroupYearRules, ProgrammeConfig
from shared import regions
from shared.aggregate import Aggregate
from shared.contracts.groups import (
    DISSOLUTION_REASONS,
    LPJ_RETURN_REASONS,
    REJECTION_REASONS,
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
    GroupShowcasedAtExpo,
)
from shared.envelope import Event, register, upcaster
from shared.errors import ConflictError, DomainError, NotFoundError, RuleViolationError
from shared.nik import InvalidNikError, parse_nik

# Group ids derive from this namespace: changing it would register every re-uploaded group anew.
GROUP_ID_NAMESPACE = uuid.UUID("6f1d7a52-3c1e-4f0b-9a57-2b8e4d0c9e11")
_PHONE = re.compile(r"^(?:\+62|62|0)(8\d{7,11})$")
MAX_TEXT = 200
MAX_NOTE = 500


@dataclass(frozen=True)
class Person:
    """A member as typed, checked (NIK, name, phone, birth date from the NIK) and with the
    NIK's keyed hash (`shared.pii.Keyring.nik_hash`): what the rules look at before the
    personal fields are sealed into a MemberRecord. Never stored, never in an event."""

    nik: str
    name: str
    phone: str | None
    birth_date: date
    nik_hash: str

    def __repr__(self) -> str:  # a traceback or log line never shows the person
        return f"Person(nik_hash={self.nik_hash[:12]}...)"


class MemberRecord(BaseModel):
    """A member as events and the read model hold it. Since version 2 of RosterRecorded and
    RosterChanged: `nik`, `name`, `phone` and `birth_date` are `pii1:` tokens bound to the
    person `nik_hash` (their data key's person_ref) and the field name; `nik_hash` is the hex
    HMAC of the NIK. Events recorded before (version 1) hold the values in plaintext (the NIK's
    16 digits, an ISO birth date) and no `nik_hash`: readers take a value that is not a token
    as plaintext."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")
    nik: str = Field(min_length=1, max_length=1000)
    name: str = Field(min_length=1, max_length=1000)
    phone: str | None = Field(None, max_length=1000)
    birth_date: str = Field(min_length=1, max_length=1000)
    nik_hash: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")

    @property
    def key(self) -> str:
        """What the roster and the membership rule know the member by: the NIK's hash (the NIK
        itself in a version 1 event)."""
        return self.nik_hash or self.nik


# seals checked members into records (their data keys fetched beforehand, one statement a
# batch): given to the aggregate by the handler, so the domain stays free of I/O and keys
Seal = Callable[[Sequence[Person]], list[MemberRecord]]


def _members_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    # version 1's members hold plaintext and no nik_hash, which version 2 reads as it is
    return payload


@register
class RosterRecorded(Event):
    """Internal (personal data, sealed since version 2): the group's name and members as
    registered."""

    event_type = "groups.RosterRecorded"
    schema_version = 2
    group_id: str
    name: str
    external_ref: str | None = None
    registered_on: date
    members: tuple[MemberRecord, ...]
    # True when the ministry's admin gave `registered_on` (a past year loaded as it happened);
    # the envelope's actor says who, its occurred_at when it was recorded
    backdated: bool = False


@register
class RosterChanged(Event):
    """Internal (personal data, sealed since version 2): members who joined or left before
    funding."""

    event_type = "groups.RosterChanged"
    schema_version = 2
    group_id: str
    added: tuple[MemberRecord, ...]
    removed: tuple[str, ...]  # the members' keys (MemberRecord.key): NIK hashes, NIKs in v1
    changed_on: date


upcaster("groups.RosterRecorded", 1)(_members_v1_to_v2)
upcaster("groups.RosterChanged", 1)(_members_v1_to_v2)


@register
class ReasonNoted(Event):
    """Internal (may hold personal data): the officer's own words behind a published reason code
    (rejection, LPJ return, dissolution). Shown only to the ministry and the group's provincial
    officer; the topic carries the code alone."""

    event_type = "groups.ReasonNoted"
    group_id: str
    subject: Literal["rejection", "lpj_return", "dissolution"]
    report_id: str | None = None  # the returned report, for an LPJ return
    note: str


@register
class BimtekAttended(Event):
    event_type = "groups.BimtekAttended"
    group_id: str
    subject: str
    held_on: date


@register
class ProductEvidenceRecorded(Event):
    event_type = "groups.ProductEvidenceRecorded"
    group_id: str
    product: str
    evidence_count: int
    recorded_on: date


def normalise_name(name: str) -> str:
    return " ".join(name.split())


def group_id_for(year: int, regency_code: str, name: str) -> str:
    """Deterministic: the same group (year, regency, name ignoring case and spacing) always gets
    the same id, so registering it again, by hand or by re-uploading a file, finds it."""
    key = f"{year}|{regency_code}|{normalise_name(name).casefold()}"
    return str(uuid.uuid5(GROUP_ID_NAMESPACE, key))


def stream_id(group_id: str) -> str:
    return f"group-{group_id}"


def age_on(birth_date: date, day: date) -> int:
    return day.year - birth_date.year - ((day.month, day.day) < (birth_date.month, birth_date.day))


def member_name(name: str | None) -> str:
    """The name cleaned; raises DomainError (field name)."""
    clean = normalise_name(name or "")
    if not clean or len(clean) > MAX_TEXT:
        raise DomainError(f"name must be 1 to {MAX_TEXT} characters", field="name")
    return clean


def member_phone(phone: str | None) -> str | None:
    """The phone as +628...; None when blank. Raises DomainError (field phone)."""
    if not phone or not phone.strip():
        return None
    match = _PHONE.fullmatch(re.sub(r"[\s\-().]", "", phone))
    if match is None:
        raise DomainError("phone must be an Indonesian mobile number (08..., +628...)",
                          field="phone")
    return f"+62{match.group(1)}"


def member_from_input(nik: str, name: str, phone: str | None, today: date,
                      nik_hash: Callable[[str], str]) -> Person:
    """A member from what the caller typed; the birth date comes from the NIK; `nik_hash`:
    the process keyring's (`ServiceContext.keyring.nik_hash`). Raises DomainError naming the
    field (nik, name, phone), never echoing the NIK."""
    try:
        info = parse_nik(nik, today)
    except InvalidNikError as exc:
        raise DomainError(f"invalid NIK: {exc.reason}", field="nik") from None
    return Person(nik=info.nik, name=member_name(name), phone=member_phone(phone),
                  birth_date=info.birth_date, nik_hash=nik_hash(info.nik))


def check_age(person: Person, rules: GroupYearRules, year: int, registered_on: date, *,
              field: str = "nik", **details: object) -> None:
    """The member's age on the day the year's rules measure it (`age_reference`)."""
    members = rules.members
    day = members.age_day(year, registered_on)
    age = age_on(person.birth_date, day)
    if not members.min_age <= age <= members.max_age:
        raise RuleViolationError(f"member is {age} years old on {day.isoformat()}; members of "
                                 f"{year} groups must be {members.min_age} to "
                                 f"{members.max_age}", field=field, **details)


def count_rule(count: int, rules: GroupYearRules, year: int) -> str | None:
    """Why `count` members break the year's rule, or None."""
    members = rules.members
    if members.min_count <= count <= members.max_count:
        return None
    size = (f"{members.min_count}" if members.min_count == members.max_count
            else f"{members.min_count} to {members.max_count}")
    return f"a {year} group has {size} members, not {count}"


def check_roster(members: list[Person], rules: GroupYearRules, year: int) -> None:
    reason = count_rule(len(members), rules, year)
    if reason is not None:
        raise RuleViolationError(reason, field="members")
    seen: set[str] = set()
    for i, m in enumerate(members):
        if m.nik_hash in seen:
            raise DomainError("the same NIK appears twice in the group",
                              field=f"members[{i}].nik", member=i)
        seen.add(m.nik_hash)


@dataclass(frozen=True)
class GroupHeader:
    year: int
    stage: str
    regency_code: str
    province_code: str
    business_type: str
    name: str

    @property
    def group_id(self) -> str:
        return group_id_for(self.year, self.regency_code, self.name)


def group_header(year: int, stage: str, regency_code: str, business_type: str, name: str,
                 config: ProgrammeConfig, rules: GroupYearRules) -> GroupHeader:
    """The group's own fields, checked (`rules`: those of `year`). Raises DomainError naming
    the field."""
    if not 2000 <= year <= 2100:
        raise DomainError("year must be 2000 to 2100", field="year")
    if stage not in rules.stages:
        raise DomainError(f"stage must be one of {', '.join(rules.stages)}", field="stage")
    regency = regions.regency(regency_code or "")
    if regency is None:
        raise DomainError("not a current Kemendagri regency/city code", field="regency_code")
    if business_type not in config.business_type_codes():
        raise DomainError("not in the business type catalogue (GET /business-types)",
                          field="business_type")
    clean = normalise_name(name or "")
    if not clean or len(clean) > MAX_TEXT:
        raise DomainError(f"name must be 1 to {MAX_TEXT} characters", field="name")
    return GroupHeader(year, stage, regency.code, regency.province_code, business_type, clean)


def _text(value: str, field: str, limit: int = MAX_TEXT) -> str:
    clean = " ".join((value or "").split())
    if not clean or len(clean) > limit:
        raise DomainError(f"{field} must be 1 to {limit} characters", field=field)
    return clean


def _reason(code: str, allowed: tuple[str, ...], note: str | None) -> str | None:
    """Checks the code against its list; returns the note cleaned, or None when blank."""
    if code not in allowed:
        raise DomainError(f"reason_code must be one of {', '.join(allowed)}", field="reason_code")
    if note is None or not note.strip():
        return None
    return _text(note, "note", MAX_NOTE)


@dataclass
class Report:
    spent: int
    covers: int  # funds received when it was submitted
    status: str  # submitted, accepted, returned


_SNAPSHOT_FIELDS = ("status", "year", "stage", "province_code", "regency_code", "business_type",
                    "name", "member_count", "tranches", "funded_total", "stage_funded",
                    "lpj_accepted", "stage_bimtek", "stage_products", "expos")


class Group(Aggregate):
    # Every command on a group loads it, and most of a load was decoding its roster (ten
    # members, four sealed fields each). Each save keeps a light snapshot (shared.aggregate):
    # every field below but the members, so approving, funding, the LPJ and the stages read
    # one small row a group. The members stay in the events (and the read model): changing
    # them loads the whole history (`UnitOfWork.load(..., from_snapshot=False)`). Personal
    # data never enters a snapshot. The kind changes with the state's shape.
    snapshot_every = 1
    snapshot_kind = "1:light"

    def __init__(self, stream_id: str):
        super().__init__(stream_id)
        self.group_id = stream_id.removeprefix("group-")
        self.status = "new"
        self.year = 0
        self.stage = ""
        self.province_code = self.regency_code = self.business_type = self.name = ""
        self.members: dict[str, MemberRecord] = {}
        self.member_count = 0
        self.whole = True  # False when restored from a light snapshot: no members
        self.tranches = 0
        self.funded_total = 0
        self.stage_funded = 0
        self.lpj_due_on: date | None = None
        self.reports: dict[str, Report] = {}
        self.lpj_accepted = False  # an accepted report covers every rupiah received
        self.stage_bimtek = 0
        self.stage_products = 0
        self.expos = 0

    def apply(self, event: Event) -> None:
        match event:
            case GroupRegistered():
                self.status, self.year, self.stage = "registered", event.year, event.stage
                self.province_code, self.regency_code = event.province_code, event.regency_code
                self.business_type = event.business_type
            case RosterRecorded():
                self.name = event.name
                self.members = {m.key: m for m in event.members}
                self.member_count = len(event.members)
            case RosterChanged():
                for key in event.removed:
                    self.members.pop(key, None)
                self.members.update({m.key: m for m in event.added})
                if self.whole:
                    self.member_count = len(self.members)
            case GroupMembersChanged():
                self.member_count = event.member_count  # recorded after each RosterChanged
            case GroupApproved():
                self.status = "approved"
            case GroupRejected():
                self.status = "rejected"
            case GroupFunded():
                self.status, self.tranches = "funded", event.tranche
                self.funded_total += event.amount
                self.stage_funded += event.amount
                self.lpj_due_on, self.lpj_accepted = event.lpj_due_on, False
            case AccountabilityReportSubmitted():
                spent = event.tools + event.materials + event.other
                self.reports[event.report_id] = Report(spent, self.funded_total, "submitted")
            case AccountabilityReportAccepted():
                report = self.reports[event.report_id]
                report.status = "accepted"
                self.lpj_accepted = report.covers == self.funded_total
            case AccountabilityReportReturned():
                self.reports[event.report_id].status = "returned"
            case BimtekAttended():
                self.stage_bimtek += 1
            case ProductEvidenceRecorded():
                self.stage_products += 1
            case GroupShowcasedAtExpo():
                self.expos += 1
            case GroupAdvanced():
                self.stage, self.stage_funded = event.to_stage, 0
                self.stage_bimtek = self.stage_products = 0
            case GroupDissolved():
                self.status = "dissolved"
            case ReasonNoted():
                pass  # read-model data only
            case _:
                raise TypeError(f"Group cannot apply {event.event_type}")

    def snapshot_state(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in _SNAPSHOT_FIELDS},
                "lpj_due_on": self.lpj_due_on and self.lpj_due_on.isoformat(),
                "reports": {rid: [r.spent, r.covers, r.status] for rid, r in self.reports.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        for name in _SNAPSHOT_FIELDS:
            setattr(self, name, state[name])
        self.lpj_due_on = state["lpj_due_on"] and date.fromisoformat(state["lpj_due_on"])
        self.reports = {rid: Report(*r) for rid, r in state["reports"].items()}
        self.whole = False

    @classmethod
    def register(cls, header: GroupHeader, members: list[Person], *, seal: Seal,
                 external_ref: str | None, rules: GroupYearRules, registered_on: date,
                 backdated: bool = False) -> Group:
        """`rules`: those of the group's year; `registered_on`: the registration date, today
        in the regency or the past date the ministry gave (`backdated`); `seal`: the members'
        records, their personal fields as tokens (after every rule passed)."""
        check_roster(members, rules, header.year)
        for i, member in enumerate(members):
            check_age(member, rules, header.year, registered_on, field=f"members[{i}].nik",
                      member=i)
        group = cls(stream_id(header.group_id))
        group.record(GroupRegistered(
            group_id=header.group_id, year=header.year, stage=header.stage,
            province_code=header.province_code, regency_code=header.regency_code,
            business_type=header.business_type, member_count=len(members)))
        group.record(RosterRecorded(group_id=header.group_id, name=header.name,
                                    external_ref=external_ref or None,
                                    registered_on=registered_on,
                                    members=tuple(seal(members)), backdated=backdated))
        return group

    def _ensure_open(self) -> None:
        if self.status in ("rejected", "dissolved"):
            raise RuleViolationError(f"the group is {self.status}", field="group_id",
                                     current_status=self.status)

    def _ensure_funded(self, what: str) -> None:
        self._ensure_open()
        if self.status != "funded":
            raise RuleViolationError(f"{what} needs a funded group; this one is {self.status}",
                                     field="group_id", current_status=self.status)

    def _known(self, person: Person) -> bool:
        # a member recorded by a version 1 event is known by the NIK itself
        return person.nik_hash in self.members or person.nik in self.members

    def change_members(self, members: list[Person], *, seal: Seal, rules: GroupYearRules,
                       today: date) -> None:
        if not self.whole:
            raise TypeError("changing members compares with the roster: load the group's "
                            "whole history (from_snapshot=False)")
        self._ensure_open()
        if self.status not in ("registered", "approved"):
            raise RuleViolationError("members can change only until the group is funded",
                                     field="members", current_status=self.status)
        check_roster(members, rules, self.year)
        wanted = {key for m in members for key in (m.nik_hash, m.nik)}
        added = [m for m in members if not self._known(m)]
        for i, member in enumerate(members):
            if not self._known(member):
                check_age(member, rules, self.year, today, field=f"members[{i}].nik",
                          member=i)
        removed = [key for key in self.members if key not in wanted]
        if added or removed:
            self.record(RosterChanged(group_id=self.group_id, added=tuple(seal(added)),
                                      removed=tuple(removed), changed_on=today))
            # subscribers counted the members from GroupRegistered: tell them the new count
            self.record(GroupMembersChanged(group_id=self.group_id,
                                            member_count=len(self.members)))

    def approve(self) -> None:
        self._ensure_open()
        if self.status != "registered":
            raise ConflictError(f"the group is already {self.status}", field="group_id",
                                current_status=self.status)
        self.record(GroupApproved(group_id=self.group_id))

    def _note(self, subject: str, note: str | None, report_id: str | None = None) -> None:
        if note is not None:
            self.record(ReasonNoted(group_id=self.group_id, subject=subject,
                                    report_id=report_id, note=note))

    def reject(self, reason_code: str, note: str | None = None) -> None:
        note = _reason(reason_code, REJECTION_REASONS, note)
        self._ensure_open()
        if self.status != "registered":
            raise ConflictError(f"the group is already {self.status}", field="group_id",
                                current_status=self.status)
        self.record(GroupRejected(group_id=self.group_id, reason_code=reason_code))
        self._note("rejection", note)

    def fund(self, *, tranche: int, amount: int, disbursed_on: date, budget_year: int,
             rules: GroupYearRules, today: date) -> GroupFunded:
        """`today`: the latest calendar date anywhere in Indonesia
        (handlers.latest_local_date), so a disbursement entered on its own day is never "in the
        future"."""
        if amount <= 0:
            raise DomainError("amount must be a positive number of rupiah", field="amount")
        if not 2000 <= budget_year <= 2100:
            raise DomainError("budget_year must be 2000 to 2100", field="budget_year")
        if tranche < 1:
            raise DomainError("tranche numbers start at 1", field="tranche")
        max_tranches = rules.funding.max_tranches
        if tranche > max_tranches:
            raise RuleViolationError(f"a group receives at most {max_tranches} tranches",
                                     field="tranche", max_tranches=max_tranches)
        if disbursed_on > today:
            raise RuleViolationError(f"disbursed_on {disbursed_on} is after today ({today})",
                                     field="disbursed_on")
        self._ensure_open()
        if tranche <= self.tranches:
            raise ConflictError(f"tranche {tranche} of this group is already funded",
                                field="tranche", funded_tranches=self.tranches)
        if self.status not in ("approved", "funded"):
            raise RuleViolationError(f"only an approved group can be funded; this one is "
                                     f"{self.status}", field="group_id", current_status=self.status)
        if tranche != self.tranches + 1:
            raise RuleViolationError(f"the next tranche of this group is {self.tranches + 1}",
                                     field="tranche")
        if budget_year < self.year:
            raise RuleViolationError(f"budget_year is before the group's year {self.year}",
                                     field="budget_year")
        # funds of a budget year are not paid before the group's programme year nor after that
        # budget year (the fiscal year is the calendar year)
        if not self.year <= disbursed_on.year <= budget_year:
            raise RuleViolationError(
                f"disbursed_on must fall in {self.year} (the group's year) to {budget_year} "
                f"(the budget year)", field="disbursed_on")
        ceiling = rules.funding.ceiling_per_group
        if self.stage_funded + amount > ceiling:
            raise RuleViolationError(
                f"funding at stage {self.stage} would reach Rp {self.stage_funded + amount:,}, "
                f"above the ceiling of Rp {ceiling:,}", field="amount",
                already_funded=self.stage_funded, ceiling=ceiling)
        event = GroupFunded(
            group_id=self.group_id, tranche=tranche, amount=amount, disbursed_on=disbursed_on,
            budget_year=budget_year, year=self.year, province_code=self.province_code,
            regency_code=self.regency_code,
            lpj_due_on=disbursed_on + timedelta(days=rules.lpj.due_days))
        self.record(event)
        return event

    def submit_lpj(self, report_id: str, *, tools: int, materials: int, other: int,
                   evidence_count: int) -> AccountabilityReportSubmitted:
        for field, value in (("tools", tools), ("materials", materials), ("other", other),
                             ("evidence_count", evidence_count)):
            if value < 0:
                raise DomainError(f"{field} must not be negative", field=field)
        # a dissolved group still accounts for what it received
        if self.tranches == 0:
            raise RuleViolationError(f"an accountability report needs a funded group; this one "
                                     f"is {self.status}", field="group_id", current_status=self.status)
        pending = [rid for rid, r in self.reports.items() if r.status == "submitted"]
        if pending:
            raise ConflictError("an earlier report still awaits review", field="group_id",
                                report_id=pending[0])
        if self.lpj_accepted:
            raise ConflictError("the funds received are already accounted for",
                                field="group_id")
        spent = tools + materials + other
        if spent > self.funded_total:
            raise RuleViolationError(f"spending of Rp {spent:,} exceeds the Rp "
                                     f"{self.funded_total:,} received", field="spending",
                                     received=self.funded_total)
        event = AccountabilityReportSubmitted(
            group_id=self.group_id, report_id=report_id, tools=tools, materials=materials,
            other=other, remaining_balance=self.funded_total - spent,
            evidence_count=evidence_count)
        self.record(event)
        return event

    def _pending_report(self, report_id: str) -> Report:
        report = self.reports.get(report_id)
        if report is None:
            raise NotFoundError("no such report for this group", field="report_id")
        if report.status != "submitted":
            raise ConflictError(f"the report is already {report.status}", field="report_id",
                                current_status=report.status)
        return report

    def accept_lpj(self, report_id: str) -> None:
        self._pending_report(report_id)
        self.record(AccountabilityReportAccepted(group_id=self.group_id, report_id=report_id))

    def return_lpj(self, report_id: str, reason_code: str, note: str | None = None) -> None:
        note = _reason(reason_code, LPJ_RETURN_REASONS, note)
        self._pending_report(report_id)
        self.record(AccountabilityReportReturned(group_id=self.group_id, report_id=report_id,
                                                 reason_code=reason_code))
        self._note("lpj_return", note, report_id)

    def attend_bimtek(self, subject: str, held_on: date) -> None:
        subject = _text(subject, "subject")
        self._ensure_funded("institutional technical guidance")
        self.record(BimtekAttended(group_id=self.group_id, subject=subject, held_on=held_on))

    def record_product(self, product: str, evidence_count: int, recorded_on: date) -> None:
        product = _text(product, "product")
        if evidence_count < 1:
            raise DomainError("product evidence needs at least one item", field="evidence_count")
        self._ensure_funded("product evidence")
        self.record(ProductEvidenceRecorded(group_id=self.group_id, product=product,
                                            evidence_count=evidence_count,
                                            recorded_on=recorded_on))

    def showcase(self, expo_code: str, regency_code: str | None, held_on: date,
                 config: ProgrammeConfig) -> None:
        """Codes only: the expo from the catalogue, the place as a Kemendagri regency code
        (default: the expo's own), so no typed text reaches the topic."""
        expo = config.expo(expo_code or "")
        if expo is None:
            raise DomainError("not in the expo catalogue (GET /expos)", field="expo_code")
        code = regency_code or expo.regency_code
        if code is None:
            raise DomainError("this expo has no fixed place: give the Kemendagri regency/city "
                              "code where it was held", field="regency_code")
        regency = regions.regency(code)
        if regency is None:
            raise DomainError("not a current Kemendagri regency/city code", field="regency_code")
        self._ensure_funded("an expo")
        self.record(GroupShowcasedAtExpo(group_id=self.group_id, expo_code=expo.code,
                                         regency_code=regency.code, held_on=held_on))

    def advance(self, year_rules: GroupYearRules) -> GroupAdvanced:
        self._ensure_funded("advancement")
        to_stage = year_rules.next_stage(self.stage)
        if to_stage is None:
            raise RuleViolationError(f"{self.stage} is the last stage of {self.year} groups",
                                     field="stage")
        rules = year_rules.advancement
        missing = [what for what, needed, done in (
            ("an accepted LPJ for all funds received", rules.requires_accepted_lpj,
             self.lpj_accepted),
            ("institutional technical guidance (Bimtek)", rules.requires_bimtek,
             self.stage_bimtek > 0),
            ("product evidence", rules.requires_product_evidence, self.stage_products > 0),
        ) if needed and not done]
        if missing:
            raise RuleViolationError(f"before advancing from {self.stage} the group needs "
                                     f"{'; '.join(missing)}", field="group_id", missing=missing)
        event = GroupAdvanced(group_id=self.group_id, from_stage=self.stage, to_stage=to_stage)
        self.record(event)
        return event

    def dissolve(self, reason_code: str, note: str | None = None) -> None:
        note = _reason(reason_code, DISSOLUTION_REASONS, note)
        self._ensure_open()
        self.record(GroupDissolved(group_id=self.group_id, reason_code=reason_code))
        self._note("dissolution", note)
