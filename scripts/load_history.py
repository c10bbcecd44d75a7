"""`tkm load-history DIR --year 2021`: a past programme year loaded from CSV files through the
four services' APIs, as it happened (docs/history.md).

Three parts: reading and checking the files (pure: `read_history`), loading them (`Loader`:
recruitment rounds and batch intake, the groups' CSV import with each group's registration date,
bulk approvals and fundings, mentor assignments or mentoring's own rule on the funding day,
monthly reports), and the figures read back from each service beside those counted from the
files (`read_back`, `compare`). Fundings go maker -> checker (four eyes, docs/four-eyes.md):
the loader's admin asks for them in bulk and a second admin (`scripts.approvals.CHECKER`)
grants each call's pending requests (`POST /approvals/grant`, <= 500 a call); a funding carried
out at once (a year without four eyes) is taken as it is.

Every write carries an Idempotency-Key derived from the rows it sends (the request body's
SHA-256 under the step's name), so a run cut off and started again gets the first answers back
for what was done and does the rest: nothing is loaded twice. A row the files or a service
refuse is reported with its file, line, field and reason, and its neighbours go on.
"""

from __future__ import annotations

import asyncio
import copy
import csv
import hashlib
import io
import json
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from scripts.approvals import CHECKER, MAX_GRANT, waiting_id
from shared.auth import Role, mint_token
from shared.csv_export import safe_cell
from shared.settings import DEV_SIGNING_KEY

# ---------------------------------------------------------------------------- the layout

REQUIRED = {
    "tks.csv": ("ref", "nik", "full_name", "sex", "birth_date", "education",
                "domicile_regency_code", "regency_code", "stage", "briefing_city", "briefed_on"),
    "groups.csv": ("ref", "year", "stage", "regency_code", "business_type", "name",
                   "registered_on"),
    "members.csv": ("group_ref", "nik", "name"),
    "fundings.csv": ("group_ref", "tranche", "amount", "disbursed_on", "budget_year"),
    "mentors.csv": ("group_ref", "tks_ref", "assigned_on"),
    "reports.csv": ("group_ref", "tks_ref", "period", "filed_on", "revenue",
                    "production_units", "production_unit", "members_active", "new_workers"),
}
OPTIONAL = {
    "tks.csv": ("contract_start", "contract_end", "phone", "email"),
    "members.csv": ("phone",),
}
OPTIONAL_FILES = ("mentors.csv", "reports.csv")
STAGES = ("pemula", "lanjutan", "pengembangan")
REPLAYED = "_replayed"  # marks an answer given again for a key already used
ROUND_NAMESPACE = uuid.UUID("6f1d2a52-3c1e-4bb0-9a53-1f0e2f7d2021")
_NIK = re.compile(r"\d{16}")
_REGENCY = re.compile(r"\d{4}")
_PERIOD = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")
_MEMBER_FIELDS = {"member_nik": "nik", "member_name": "name", "member_phone": "phone"}
_GROUP_FIELDS = {"group_name": "name", "group_ref": "ref", "year": "year", "stage": "stage",
                 "regency_code": "regency_code", "business_type": "business_type",
                 "registered_on": "registered_on"}


class LayoutError(ValueError):
    """A file as a whole cannot be read (missing, not UTF-8, a required column absent)."""


@dataclass(frozen=True)
class RowError:
    file: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.reason}"


@dataclass
class Tks:
    line: int
    ref: str
    nik: str
    full_name: str
    sex: str
    birth_date: date
    education: str
    domicile_regency_code: str
    regency_code: str
    stage: int
    briefing_city: str
    briefed_on: date
    contract_start: date | None = None
    contract_end: date | None = None
    phone: str | None = None
    email: str | None = None


@dataclass
class Member:
    line: int
    nik: str
    name: str
    phone: str | None


@dataclass
class Group:
    line: int
    ref: str
    year: int
    stage: str
    regency_code: str
    business_type: str
    name: str
    registered_on: date
    members: list[Member] = field(default_factory=list)


@dataclass
class Funding:
    line: int
    group_ref: str
    tranche: int
    amount: int
    disbursed_on: date
    budget_year: int


@dataclass
class Mentor:
    line: int
    group_ref: str
    tks_ref: str
    assigned_on: date


@dataclass
class Report:
    line: int
    group_ref: str
    tks_ref: str
    period: str
    filed_on: date
    revenue: int
    production_units: int
    production_unit: str
    members_active: int
    new_workers: int


@dataclass
class History:
    year: int
    tks: dict[str, Tks] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    fundings: list[Funding] = field(default_factory=list)
    mentors: list[Mentor] | None = None  # None: no mentors.csv, mentoring's rule assigns
    reports: list[Report] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


class _Bad(ValueError):
    def __init__(self, column: str, reason: str):
        super().__init__(reason)
        self.column, self.reason = column, reason


def _rows(path: Path) -> Iterable[tuple[int, dict[str, str]]]:
    """(line, cells by column) of a CSV file: UTF-8 (a BOM allowed), comma or semicolon,
    header first; blank lines skipped. Raises LayoutError for a file that cannot be read."""
    name = path.name
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LayoutError(f"{name}: the file is missing") from None
    except UnicodeDecodeError:
        raise LayoutError(f"{name}: not UTF-8 text") from None
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in REQUIRED[name] if c not in header]
    if missing:
        raise LayoutError(f"{name}: the header lacks column(s) {', '.join(missing)}")
    known = set(REQUIRED[name]) | set(OPTIONAL.get(name, ()))
    try:
        line = reader.line_num
        for cells in reader:
            line, start = reader.line_num, line + 1
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                yield start, {"__error__": f"{len(cells)} columns where the header has "
                                           f"{len(header)}"}
                continue
            yield start, {h: c.strip() for h, c in zip(header, cells, strict=True) if h in known}
    except csv.Error as exc:
        raise LayoutError(f"{name}: line {reader.line_num + 1} is not readable CSV: {exc}") \
            from None


def _text(row: dict[str, str], column: str, max_len: int = 200) -> str:
    value = row.get(column, "")
    if not value:
        raise _Bad(column, "required")
    if len(value) > max_len:
        raise _Bad(column, f"at most {max_len} characters")
    return value


def _optional(row: dict[str, str], column: str) -> str | None:
    return row.get(column) or None


def _int(row: dict[str, str], column: str, low: int = 0, high: int = 10**15) -> int:
    value = _text(row, column)
    if not re.fullmatch(r"\d+", value):
        raise _Bad(column, f"must be a whole number (digits only), not {value!r}")
    number = int(value)
    if not low <= number <= high:
        raise _Bad(column, f"must be {low} to {high}")
    return number


def _date(row: dict[str, str], column: str, today: date | None = None,
          required: bool = True) -> date | None:
    value = row.get(column, "")
    if not value and not required:
        return None
    try:
        day = date.fromisoformat(_text(row, column))
    except ValueError:
        raise _Bad(column, f"must be a date YYYY-MM-DD, not {value!r}") from None
    if today is not None and day > today:
        raise _Bad(column, f"{day} is in the future")
    return day


def _regency(row: dict[str, str], column: str) -> str:
    value = _text(row, column).replace(".", "")
    if not _REGENCY.fullmatch(value):
        raise _Bad(column, f"must be a 4-digit Kemendagri regency code, not {value!r}")
    return value


def _nik(row: dict[str, str], column: str) -> str:
    value = _text(row, column)
    if not _NIK.fullmatch(value):
        raise _Bad(column, "must be 16 digits")
    return value


def _check_layout(directory: Path) -> None:
    """Every layout problem of the directory at once (LayoutError), before any row is read."""
    problems = []
    for name in REQUIRED:
        if name in OPTIONAL_FILES and not (directory / name).exists():
            continue
        try:
            next(iter(_rows(directory / name)), None)
        except LayoutError as exc:
            problems.append(str(exc))
    if (directory / "reports.csv").exists() and not (directory / "mentors.csv").exists():
        problems.append("reports.csv needs mentors.csv: a report is filed by the group's "
                        "mentor")
    if problems:
        raise LayoutError("; ".join(problems))


def read_history(directory: Path, year: int, today: date | None = None) -> History:
    """Reads and checks the files of `directory` (layout: docs/history.md). What a row holds
    is checked here (columns, numbers, dates, references between files, one row per key);
    the programme's rules (NIK regions, ages, group sizes, quotas, amounts) are the services'
    and checked by them. Each refused row is in `errors`; the rest is returned. A row that
    refers to a refused row is refused too (naming it)."""
    today = today or date.today()
    _check_layout(directory)
    history = History(year)
    errors = history.errors

    def each(name: str, build: Callable[[int, dict[str, str]], Any]) -> None:
        for line, row in _rows(directory / name):
            if "__error__" in row:
                errors.append(RowError(name, line, "row", row["__error__"]))
                continue
            try:
                build(line, row)
            except _Bad as bad:
                errors.append(RowError(name, line, bad.column, bad.reason))

    tks_niks: dict[str, int] = {}

    def tks(line: int, row: dict[str, str]) -> None:
        ref = _text(row, "ref", 64)
        if ref in history.tks:
            raise _Bad("ref", f"already on line {history.tks[ref].line}")
        sex = _text(row, "sex").upper()
        if sex not in ("F", "M"):
            raise _Bad("sex", "must be F or M")
        stage = _int(row, "stage", 1, 3)
        nik = _nik(row, "nik")
        if nik in tks_niks:
            raise _Bad("nik", f"the same NIK is on line {tks_niks[nik]}")
        record = Tks(line, ref, nik, _text(row, "full_name"), sex,
                     _date(row, "birth_date", today), _text(row, "education", 10),
                     _regency(row, "domicile_regency_code"), _regency(row, "regency_code"),
                     stage, _text(row, "briefing_city", 100), _date(row, "briefed_on", today),
                     _date(row, "contract_start", required=False),
                     _date(row, "contract_end", required=False),
                     _optional(row, "phone"), _optional(row, "email"))
        if record.briefed_on.year != year:
            raise _Bad("briefed_on", f"not in {year}")
        tks_niks[nik] = line
        history.tks[ref] = record

    def group(line: int, row: dict[str, str]) -> None:
        ref = _text(row, "ref", 64)
        if ref in history.groups:
            raise _Bad("ref", f"already on line {history.groups[ref].line}")
        if _int(row, "year") != year:
            raise _Bad("year", f"must be {year} (--year)")
        stage = _text(row, "stage").lower()
        if stage not in STAGES:
            raise _Bad("stage", f"must be one of {', '.join(STAGES)}")
        registered = _date(row, "registered_on", today)
        history.groups[ref] = Group(line, ref, year, stage, _regency(row, "regency_code"),
                                    _text(row, "business_type", 64), _text(row, "name"),
                                    registered)

    member_niks: dict[str, tuple[int, str]] = {}
    refused_groups: set[str] = set()

    def member(line: int, row: dict[str, str]) -> None:
        ref = _text(row, "group_ref", 64)
        target = history.groups.get(ref)
        if target is None:
            raise _Bad("group_ref", f"group {ref} is refused (groups.csv)"
                       if ref in refused_groups else f"no group {ref} in groups.csv")
        nik = _nik(row, "nik")
        if nik in member_niks:
            first_line, first_group = member_niks[nik]
            raise _Bad("nik", f"the same person is on line {first_line} (group {first_group}); "
                              "one group a person and year")
        member_niks[nik] = (line, ref)
        target.members.append(Member(line, nik, _text(row, "name"), _optional(row, "phone")))

    each("tks.csv", tks)
    before = {r.line for r in errors if r.file == "groups.csv"}
    each("groups.csv", group)
    # refs of refused group rows, so their members name the cause
    for line, row in _rows(directory / "groups.csv"):
        if line not in before and any(e.file == "groups.csv" and e.line == line for e in errors):
            refused_groups.add(row.get("ref", ""))
    each("members.csv", member)
    for g in list(history.groups.values()):
        if not g.members:
            errors.append(RowError("groups.csv", g.line, "members", "no member in members.csv"))
            del history.groups[g.ref]

    tranches: dict[tuple[str, int], int] = {}

    def funding(line: int, row: dict[str, str]) -> None:
        ref = _text(row, "group_ref", 64)
        if ref not in history.groups:
            raise _Bad("group_ref", f"no loadable group {ref} (groups.csv)")
        tranche = _int(row, "tranche", 1, 10)
        if (ref, tranche) in tranches:
            raise _Bad("tranche", f"the same tranche is on line {tranches[ref, tranche]}")
        tranches[ref, tranche] = line
        history.fundings.append(Funding(line, ref, tranche, _int(row, "amount", 1),
                                        _date(row, "disbursed_on", today),
                                        _int(row, "budget_year", 2000, 2100)))

    each("fundings.csv", funding)
    funded = {f.group_ref: f.disbursed_on for f in history.fundings if f.tranche == 1}

    if (directory / "mentors.csv").exists():
        history.mentors = []
        mentored: dict[str, int] = {}

        def mentor(line: int, row: dict[str, str]) -> None:
            ref, tks_ref = _text(row, "group_ref", 64), _text(row, "tks_ref", 64)
            if ref not in funded:
                raise _Bad("group_ref", f"no funded group {ref} (fundings.csv, tranche 1)")
            if tks_ref not in history.tks:
                raise _Bad("tks_ref", f"no loadable TKS {tks_ref} (tks.csv)")
            on = _date(row, "assigned_on", today)
            if on < funded[ref]:
                raise _Bad("assigned_on", f"before the group's funding on {funded[ref]}")
            if ref in mentored:
                raise _Bad("group_ref", f"the group's mentor is on line {mentored[ref]}")
            mentored[ref] = line
            history.mentors.append(Mentor(line, ref, tks_ref, on))

        each("mentors.csv", mentor)

    if (directory / "reports.csv").exists():
        periods: dict[tuple[str, str], int] = {}

        def report(line: int, row: dict[str, str]) -> None:
            ref, tks_ref = _text(row, "group_ref", 64), _text(row, "tks_ref", 64)
            if ref not in funded:
                raise _Bad("group_ref", f"no funded group {ref} (fundings.csv, tranche 1)")
            if tks_ref not in history.tks:
                raise _Bad("tks_ref", f"no loadable TKS {tks_ref} (tks.csv)")
            period = _text(row, "period")
            if not _PERIOD.fullmatch(period):
                raise _Bad("period", "must be YYYY-MM")
            if (ref, period) in periods:
                raise _Bad("period", f"the group's report on {period} is on line "
                                     f"{periods[ref, period]}")
            periods[ref, period] = line
            history.reports.append(Report(
                line, ref, tks_ref, period, _date(row, "filed_on", today),
                _int(row, "revenue"), _int(row, "production_units"),
                _text(row, "production_unit", 20), _int(row, "members_active", 0, 1000),
                _int(row, "new_workers", 0, 1000)))

        each("reports.csv", report)
    return history


def figures_of(history: History) -> dict[str, int]:
    """What the files say, for what is loadable."""
    funded = {f.group_ref for f in history.fundings}
    return {
        "tks": len(history.tks),
        "regencies": len({t.regency_code for t in history.tks.values()}),
        "groups": len(history.groups),
        "people": sum(len(g.members) for g in history.groups.values()),
        "groups_funded": len(funded),
        "people_funded": sum(len(history.groups[r].members) for r in funded),
        "rupiah": sum(f.amount for f in history.fundings),
        "mentored": (len(history.mentors) if history.mentors is not None else len(funded)),
        "reports": len(history.reports),
    }


# ---------------------------------------------------------------------------- the client


class HistoryClient:
    """The four services over HTTP as the ministry's admin. Writes carry the key the caller
    derives from its rows; a connection failure, a 5xx or a retry meeting its first attempt
    still running is retried under the same key."""

    def __init__(self, urls: dict[str, str], *, signing_key: str = DEV_SIGNING_KEY,
                 subject: str = "history-loader", timeout: float = 300):
        token = mint_token(signing_key, subject, Role.ADMIN)
        self.urls, self.signing_key = urls, signing_key
        self.auth = {"Authorization": f"Bearer {token}"}
        self.client = httpx.AsyncClient(headers=self.auth, timeout=timeout)
        self.replayed = 0  # answers given again for a key already used (a re-run)

    def person(self, subject: str) -> HistoryClient:
        """This client as another ministry admin (the checker of four eyes), on the same
        connections; closing the original closes both."""
        other = copy.copy(self)
        other.auth = {"Authorization": f"Bearer {mint_token(self.signing_key, subject, Role.ADMIN)}"}
        return other

    async def close(self) -> None:
        await self.client.aclose()

    async def get(self, service: str, path: str, *, ok: tuple[int, ...] = (),
                  **params: Any) -> Any:
        return await self._call("GET", service, path, params=params, ok=ok)

    async def post(self, service: str, path: str, body: Any = None, *, step: str,
                   content: bytes | None = None, ok: tuple[int, ...] = ()) -> Any:
        raw = content if content is not None else json.dumps(body, sort_keys=True).encode()
        key = f"tkm-history/{step}/{hashlib.sha256(raw).hexdigest()}"
        headers = {"Idempotency-Key": key,
                   "Content-Type": "text/csv" if content is not None else "application/json"}
        return await self._call("POST", service, path, content=raw, headers=headers, ok=ok)

    async def _call(self, method: str, service: str, path: str, *, ok: tuple[int, ...] = (),
                    **kwargs: Any) -> Any:
        url = self.urls[service] + path
        kwargs["headers"] = {**self.auth, **(kwargs.get("headers") or {})}
        for attempt in range(6):
            try:
                response = await self.client.request(method, url, **kwargs)
            except httpx.TransportError:
                if attempt == 5:
                    raise
                await asyncio.sleep(0.5 * (attempt + 1))
                continue
            retry = response.status_code >= 500 or (
                response.status_code in (409, 429) and "progress" in response.text) or \
                response.status_code == 503
            if retry and attempt < 5:
                await asyncio.sleep(0.5 * (attempt + 1))
                continue
            try:
                answer = response.json()
            except ValueError:
                answer = response.text
            if response.headers.get("Idempotent-Replayed") == "true":
                # the first answer again: what it says was done then, not now
                self.replayed += 1
                if isinstance(answer, dict):
                    answer[REPLAYED] = True
            if response.status_code >= 400 and response.status_code not in ok:
                raise LoadError(f"{method} {url} -> {response.status_code}: {answer}")
            return answer
        raise AssertionError("unreachable")


class LoadError(RuntimeError):
    pass


# ---------------------------------------------------------------------------- loading


@dataclass
class Outcome:
    """What a run did: ids learnt, rows refused by a service, counts per step."""

    tks_ids: dict[str, str] = field(default_factory=dict)  # TKS ref -> tks id
    group_ids: dict[str, str] = field(default_factory=dict)  # group ref -> group id
    members_refused: set[str] = field(default_factory=set)  # group ref/line keys
    funded: set[str] = field(default_factory=set)  # group refs
    refused: list[RowError] = field(default_factory=list)
    done: Counter = field(default_factory=Counter)  # step -> items new this run
    already: Counter = field(default_factory=Counter)  # step -> items there before
    people: dict[str, int] = field(default_factory=dict)  # group ref -> members registered
    mentored: set[str] = field(default_factory=set)
    rupiah: int = 0
    reports: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # step -> wall time


def _round_id(year: int, stage: int) -> str:
    return str(uuid.uuid5(ROUND_NAMESPACE, f"{year}/{stage}"))


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class Loader:
    def __init__(self, client: HistoryClient, history: History,
                 advance: Callable[[str, int], None] = lambda step, n: None,
                 import_groups: int = 250, batch: int = 500,
                 on_step: Callable[[str, float], None] = lambda step, seconds: None):
        self.api, self.h, self.advance, self.on_step = client, history, advance, on_step
        self.checker = client.person(CHECKER)  # four eyes: grants the fundings asked for
        self.import_groups, self.batch = import_groups, batch
        self.out = Outcome()

    def _count(self, answer: Any, step: str, n: int = 1) -> None:
        """New this run, or done by an earlier run (its answer replayed)."""
        replayed = isinstance(answer, dict) and answer.get(REPLAYED)
        (self.out.already if replayed else self.out.done)[step] += n

    async def run(self) -> Outcome:
        loop = asyncio.get_running_loop()
        for name, step in (("recruitment", self.recruit), ("groups", self.register_groups),
                           ("funding", self.fund),
                           ("mentoring caught up", self._mentoring_learnt),
                           ("mentors", self.assign_mentors),
                           ("reports", self.file_reports)):
            started = loop.time()
            await step()
            self.out.seconds[name] = round(loop.time() - started, 1)
            self.on_step(name, self.out.seconds[name])
        return self.out

    # -- recruitment: a round per briefing stage, quotas = the TKS of each regency

    async def recruit(self) -> None:
        by_stage: dict[int, list[Tks]] = defaultdict(list)
        for t in self.h.tks.values():
            by_stage[t.stage].append(t)
        for stage, people in sorted(by_stage.items()):
            round_id = _round_id(self.h.year, stage)
            places = Counter(t.regency_code for t in people)
            quotas = [{"province_code": code[:2], "regency_code": code, "places": n}
                      for code, n in sorted(places.items())]
            await self.api.post("recruitment", "/rounds", {
                "year": self.h.year, "stage": stage, "quotas": quotas, "round_id": round_id},
                step="round", ok=(409, 422))
            for chunk in _chunks(people, self.batch):
                body = {"items": [self._intake(t) for t in chunk]}
                answer = await self.api.post(
                    "recruitment", f"/rounds/{round_id}/recruitments:batch", body,
                    step="intake", ok=(409,))
                results = answer.get("results") if isinstance(answer, dict) else None
                if results is None:  # the round is closed: a run after the keys expired
                    raise LoadError(f"intake into round {round_id} refused: {answer}")
                for t, item in zip(chunk, results, strict=True):
                    error = item.get("error") or {}
                    if item["status"] == 201:
                        self.out.tks_ids[t.ref] = item["tks_id"]
                        self._count(answer, "tks")
                    elif item["status"] == 409 and error.get("applicant_id"):
                        self.out.tks_ids[t.ref] = error["applicant_id"]
                        self.out.already["tks"] += 1
                    else:
                        self.out.refused.append(RowError(
                            "tks.csv", t.line, error.get("field") or "row",
                            error.get("reason") or str(item)))
                self.advance("tks", len(chunk))
            await self.api.post("recruitment", f"/rounds/{round_id}/close", {},
                                step="round-close", ok=(409,))

    def _intake(self, t: Tks) -> dict:
        applicant = {"year": self.h.year, "nik": t.nik, "full_name": t.full_name, "sex": t.sex,
                     "birth_date": t.birth_date.isoformat(), "education": t.education,
                     "domicile_regency_code": t.domicile_regency_code}
        for name in ("phone", "email"):
            if getattr(t, name):
                applicant[name] = getattr(t, name)
        item = {"applicant": applicant,
                "briefing": {"city": t.briefing_city, "briefed_on": t.briefed_on.isoformat()},
                "regency_code": t.regency_code}
        if t.contract_start:
            item["contract_start"] = t.contract_start.isoformat()
        if t.contract_end:
            item["contract_end"] = t.contract_end.isoformat()
        return item

    # -- groups: the groups service's CSV import, each group with its registration date

    async def register_groups(self) -> None:
        groups = list(self.h.groups.values())
        gate = asyncio.Semaphore(2)  # a service writes one bulk batch at a time

        async def one(chunk: list[Group]) -> None:
            async with gate:
                await self._import(chunk, retry_members=True)
            self.advance("groups", len(chunk))

        await asyncio.gather(*(one(c) for c in _chunks(groups, self.import_groups)))

    async def _import(self, groups: list[Group], *, retry_members: bool,
                      members: dict[str, list[Member]] | None = None) -> None:
        members = members or {g.ref: g.members for g in groups}
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["group_ref", "year", "stage", "regency_code", "business_type",
                         "group_name", "registered_on", "member_nik", "member_name",
                         "member_phone"])
        origin: dict[int, tuple[Group, Member]] = {}  # row of the upload -> its source
        first_row: dict[int, Group] = {}
        row = 1
        for g in groups:
            first_row[row + 1] = g
            for m in members[g.ref]:
                row += 1
                origin[row] = (g, m)
                writer.writerow([safe_cell(c) for c in (
                    g.ref, g.year, g.stage, g.regency_code, g.business_type, g.name,
                    g.registered_on.isoformat(), m.nik, m.name, m.phone or "")])
        report = await self.api.post("groups", "/groups/imports", step="groups-import",
                                     content=out.getvalue().encode())
        errors_of: dict[str, list[tuple[RowError, bool]]] = defaultdict(list)
        for e in report["errors"]:
            source = origin.get(e["row"])
            if source is None:
                continue
            g, m = source
            column = e.get("field") or "row"
            if column in _MEMBER_FIELDS:
                errors_of[g.ref].append((RowError("members.csv", m.line, _MEMBER_FIELDS[column],
                                                  e["reason"]), True))
            else:
                errors_of[g.ref].append((RowError("groups.csv", g.line,
                                                  _GROUP_FIELDS.get(column, column),
                                                  e["reason"]), False))
        unexplained: list[Group] = []
        retry: dict[str, list[Member]] = {}
        for result in report["results"]:
            g = first_row.get(result.get("first_row") or -1)
            if g is None:
                continue
            if result["status"] in ("registered", "already_registered"):
                self.out.group_ids[g.ref] = result["group_id"]
                self.out.people[g.ref] = len(members[g.ref])
                if result["status"] == "registered":
                    self._count(report, "groups")
                else:
                    self.out.already["groups"] += 1
                continue
            found = errors_of.get(g.ref, [])
            if not found and report.get("errors_total", 0) > len(report["errors"]):
                unexplained.append(g)  # its reasons were cut from the report: ask again
                continue
            member_errors = [e for e, is_member in found if is_member]
            if retry_members and found and len(member_errors) == len(found):
                # only some members are refused: each reported, the others registered
                bad = {e.line for e in member_errors}
                kept = [m for m in members[g.ref] if m.line not in bad]
                if kept:
                    retry[g.ref] = kept
                    self.out.refused.extend(member_errors)
                    continue
            self.out.refused.extend(e for e, _ in found)
            if not found:
                self.out.refused.append(RowError("groups.csv", g.line, "row",
                                                 "refused by the groups service"))
        for chunk in _chunks(unexplained, 5):  # <= 80 rows: every reason fits in the report
            await self._import(chunk, retry_members=retry_members, members=members)
        if retry:
            again = [self.h.groups[r] for r in retry]
            for chunk in _chunks(again, self.import_groups):
                await self._import(chunk, retry_members=False, members=retry)

    # -- funding: approvals, then the tranches in bulk, as disbursed

    async def fund(self) -> None:
        fundings = [f for f in self.h.fundings if f.group_ref in self.out.group_ids]
        for f in self.h.fundings:
            if f.group_ref not in self.out.group_ids:
                self.out.refused.append(RowError("fundings.csv", f.line, "group_ref",
                                                 f"group {f.group_ref} was not registered"))
        refs = sorted({f.group_ref for f in fundings}, key=lambda r: self.h.groups[r].line)
        for chunk in _chunks(refs, self.batch):
            answer = await self.api.post("groups", "/groups/approvals", {
                "group_ids": [self.out.group_ids[r] for r in chunk]}, step="approvals")
            for ref, item in zip(chunk, answer["results"], strict=True):
                if item["status"] >= 300 and not _already(item, ("approved", "funded")):
                    g = self.h.groups[ref]
                    self.out.refused.append(RowError("groups.csv", g.line, "approval",
                                                     _reason(item)))
        # tranche by tranche, in date order (a second tranche needs its first: granted before
        # the next tranche's calls ask, as a tranche asked for is not yet disbursed)
        fundings.sort(key=lambda f: (f.tranche, f.disbursed_on, f.line))
        chunks = [c for t in sorted({f.tranche for f in fundings})
                  for c in _chunks([f for f in fundings if f.tranche == t], self.batch)]
        for chunk in chunks:
            answer = await self.api.post("groups", "/groups/fundings", {"items": [
                {"group_id": self.out.group_ids[f.group_ref], "tranche": f.tranche,
                 "amount": f.amount, "disbursed_on": f.disbursed_on.isoformat(),
                 "budget_year": f.budget_year} for f in chunk]}, step="fundings")
            answer = await self._granted(answer)
            for f, item in zip(chunk, answer["results"], strict=True):
                if item["status"] < 300:
                    self._count(answer, "fundings")
                elif item["status"] == 409 and "tranche" in _reason(item):
                    self.out.already["fundings"] += 1
                else:
                    self.out.refused.append(RowError("fundings.csv", f.line,
                                                     _field(item, "amount"), _reason(item)))
                    continue
                self.out.funded.add(f.group_ref)
                self.out.rupiah += f.amount
            self.advance("fundings", len(chunk))

    async def _granted(self, answer: dict) -> dict:
        """A bulk funding's answer with its pending items granted by the checker: each item's
        grant result (`status` 200) or refusal. New this run, or replayed (a re-run), as the
        grants were: a run cut off between the asking and the granting grants now."""
        results = list(answer["results"])
        # its own requests, or one an earlier run asked for and never had granted (409)
        pending = [(i, rid) for i, item in enumerate(results) if (rid := waiting_id(item))]
        if not pending:
            return answer
        replayed = True
        for part in _chunks(pending, MAX_GRANT):
            granted = await self.checker.post("groups", "/approvals/grant", {
                "request_ids": [rid for _, rid in part]}, step="grant-fundings")
            replayed = replayed and bool(granted.get(REPLAYED))
            by_id = {g["request_id"]: g for g in granted["results"]}
            for i, rid in part:
                g = by_id[rid]
                error = g.get("error") or {}
                if g["status"] == 200 or error.get("state") == "granted":  # granted before
                    outcome = {"status": 200, "result": g.get("result") or error.get("result")}
                else:
                    outcome = {"status": g["status"], "error": error}
                results[i] = {"group_id": results[i]["group_id"], "request_id": rid, **outcome}
        return {**answer, "results": results, REPLAYED: replayed}

    # -- mentors: as the files say, or mentoring's rule on each group's funding day

    async def assign_mentors(self) -> None:
        if self.h.mentors is None:
            answer = await self.api.post("mentoring", "/assignments/suggestions/apply",
                                         {"on_funding_date": True}, step="mentor-rule")
            for s in answer.get("skipped", []):
                self.out.refused.append(RowError("fundings.csv", 0, "mentor",
                                                 f"group {s['group_id']}: {s['error']}"))
            for u in answer.get("unplaced", []):
                self.out.refused.append(RowError(
                    "fundings.csv", 0, "mentor", f"group {u.get('group_id')}: no TKS can take it "
                                                 f"({u.get('reason', 'unplaced')})"))
            self._count(answer, "mentors", answer.get("assigned", 0))
            self.advance("mentors", len(self.out.funded))
            return
        # as the file says, in its order, in bulk: mentoring decides each item as the same
        # single call would, one after the other, and answers per item
        mentors = []
        for m in self.h.mentors:
            if m.group_ref not in self.out.funded or m.tks_ref not in self.out.tks_ids:
                self.out.refused.append(RowError("mentors.csv", m.line, "group_ref",
                                                 "its group or TKS was not loaded"))
                self.advance("mentors", 1)
                continue
            mentors.append(m)
        for chunk in _chunks(mentors, self.batch):
            answer = await self.api.post("mentoring", "/assignments/batch", {"assignments": [
                {"group_id": self.out.group_ids[m.group_ref],
                 "tks_id": self.out.tks_ids[m.tks_ref],
                 "assigned_on": m.assigned_on.isoformat()} for m in chunk]}, step="mentors")
            for m, item in zip(chunk, answer["results"], strict=True):
                error = item.get("error") or {}
                if item["status"] == "assigned":
                    self._count(answer, "mentors")
                    self.out.mentored.add(m.group_ref)
                elif error.get("status") == 409 and "already mentors" in _reason(item):
                    self.out.already["mentors"] += 1
                    self.out.mentored.add(m.group_ref)
                else:
                    self.out.refused.append(RowError("mentors.csv", m.line,
                                                     error.get("field") or "row",
                                                     _reason(item)))
            self.advance("mentors", len(chunk))

    async def _mentoring_learnt(self, timeout: float = 600) -> None:
        """Mentoring learns of TKS and funded groups from the topics: wait until it knows the
        year's (its totals of the year reach what was loaded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            national = (await self.api.get("mentoring", "/stats", year=self.h.year))["national"]
            if national["groups_funded"] >= len(self.out.funded) and \
                    national["tks_active"] >= len(self.out.tks_ids):
                return
            if loop.time() > deadline:
                raise LoadError("mentoring did not learn of every funded group and TKS "
                                f"within {timeout:.0f}s")
            await asyncio.sleep(0.5)

    # -- monthly reports, as filed

    async def file_reports(self) -> None:
        reports = []
        for r in self.h.reports:
            if r.group_ref not in self.out.funded or r.tks_ref not in self.out.tks_ids:
                self.out.refused.append(RowError("reports.csv", r.line, "group_ref",
                                                 "its group or TKS was not loaded"))
                continue
            reports.append(r)
        reports.sort(key=lambda r: (r.period, r.line))
        for chunk in _chunks(reports, self.batch):
            answer = await self.api.post("mentoring", "/reports/batch", {"reports": [
                {"group_id": self.out.group_ids[r.group_ref],
                 "tks_id": self.out.tks_ids[r.tks_ref], "period": r.period,
                 "filed_on": r.filed_on.isoformat(), "revenue": r.revenue,
                 "production_units": r.production_units, "production_unit": r.production_unit,
                 "members_active": r.members_active, "new_workers": r.new_workers,
                 "support": [], "lpj_help": False} for r in chunk]}, step="reports")
            for r, item in zip(chunk, answer["results"], strict=True):
                if item["status"] == "filed":
                    self._count(answer, "reports")
                    self.out.reports += 1
                elif "already" in json.dumps(item):
                    self.out.already["reports"] += 1
                    self.out.reports += 1
                else:
                    error = item.get("error") or {}
                    self.out.refused.append(RowError("reports.csv", r.line,
                                                     error.get("field") or "row",
                                                     error.get("reason") or str(item)))
            self.advance("reports", len(chunk))


def _reason(item: dict) -> str:
    error = item.get("error") or {}
    return error.get("reason") or str(item)


def _field(item: dict, default: str) -> str:
    return (item.get("error") or {}).get("field") or default


def _already(item: dict, states: tuple[str, ...]) -> bool:
    return item["status"] == 409 and any(s in _reason(item) for s in states)


def expected_figures(history: History, out: Outcome) -> dict[str, int]:
    """The files' figures for what the services took (the files' own count less the rows a
    service refused, each of which is reported)."""
    tks = [history.tks[r] for r in out.tks_ids]
    funded = out.funded
    return {
        "tks": len(tks),
        "regencies": len({t.regency_code for t in tks}),
        "groups": len(out.group_ids),
        "people": sum(out.people.values()),
        "groups_funded": len(funded),
        "people_funded": sum(out.people[r] for r in funded),
        "rupiah": out.rupiah,
        "mentored": (len(out.mentored) if history.mentors is not None
                     else out.done["mentors"] + out.already["mentors"]),
        "reports": out.reports,
    }


# ---------------------------------------------------------------------------- reading back


async def read_back(api: HistoryClient, year: int,
                    budget_years: Iterable[int]) -> dict[str, dict[str, int | None]]:
    """The year's figures as each service answers them: {figure: {service: value}}."""
    roster: list[dict] = []
    while True:
        page = await api.get("recruitment", "/tks", year=year, limit=1000, offset=len(roster))
        roster.extend(page["items"])
        if not page["items"] or len(roster) >= page["total"]:
            break
    people = await api.get("groups", "/reports/people-reached", year=year)
    money = []
    for budget_year in sorted(set(budget_years)):
        money += await api.get("groups", "/reports/funding", budget_year=budget_year)
    # mentoring's totals of the programme year (groups of the year, TKS under contract in it)
    mentoring = (await api.get("mentoring", "/stats", year=year))["national"]
    # evaluation answers only while the year's evaluation is open (else 404 or 409: not shown)
    evaluation = await api.get("evaluation", f"/evaluations/{year}/preview", limit=1,
                               ok=(404, 409))
    evaluation_tks = evaluation.get("total") if isinstance(evaluation, dict) else None
    return {
        "tks": {"recruitment": len(roster),
                "mentoring": mentoring["tks_active"],
                "evaluation": evaluation_tks},
        "regencies": {"recruitment": len({t["regency_code"] for t in roster})},
        "groups": {"groups": sum(p["groups_registered"] for p in people)},
        "people": {"groups": sum(p["members_registered"] for p in people)},
        "groups_funded": {"groups": sum(p["groups_funded"] for p in people),
                          "mentoring": mentoring["groups_funded"]},
        "people_funded": {"groups": sum(p["members_funded"] for p in people)},
        "rupiah": {"groups": sum(f["amount_disbursed"] for f in money)},
        "mentored": {"mentoring": mentoring["groups_mentored"]},
        "reports": {"mentoring": mentoring["filed"]},
    }


def compare(in_files: dict[str, int], expected: dict[str, int],
            services: dict[str, dict[str, int | None]]) -> tuple[list[dict], bool]:
    """Rows of the final table and whether every figure a service gave equals the expected."""
    rows, agree = [], True
    for name, value in in_files.items():
        answers = services.get(name, {})
        same = all(v == expected[name] for v in answers.values() if v is not None)
        agree &= same
        rows.append({"figure": name, "in_files": value, "expected": expected[name],
                     **{s: v for s, v in answers.items()}, "agree": same})
    return rows, agree


# ---------------------------------------------------------------------------- the command

EXIT_OK, EXIT_DIFFER, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
_STEPS = (("tks", "TKS recruited (rounds, batch intake)"),
          ("groups", "groups registered (CSV import, registered_on)"),
          ("fundings", "groups approved and funded (bulk)"),
          ("mentors", "mentors assigned"),
          ("reports", "monthly reports filed"))


async def load(directory: Path, year: int, urls: dict[str, str], *, console: Any,
               signing_key: str = DEV_SIGNING_KEY, refused_out: Path | None = None,
               today: date | None = None) -> tuple[int, dict[str, Any]]:
    """Reads, loads, reads back; prints progress, refused rows and the table. Returns the exit
    code and a summary (figures, table, refused rows, counts new and already there)."""
    from rich.table import Table

    from scripts.simulate import progress_bar

    history = read_history(directory, year, today)
    in_files = figures_of(history)
    console.print(f"{directory}: {in_files['tks']:,} TKS, {in_files['groups']:,} groups, "
                  f"{in_files['people']:,} people, Rp {in_files['rupiah']:,} in "
                  f"{len(history.fundings):,} tranches, "
                  + ("mentors from mentors.csv" if history.mentors is not None
                     else "mentors by mentoring's rule on the funding day")
                  + (f", {len(history.reports):,} monthly reports" if history.reports else ""),
                  highlight=False)
    api = HistoryClient(urls, signing_key=signing_key)
    try:
        totals = {"tks": len(history.tks), "groups": len(history.groups),
                  "fundings": len(history.fundings),
                  "mentors": (len(history.mentors) if history.mentors is not None
                              else len({f.group_ref for f in history.fundings})),
                  "reports": len(history.reports)}
        with progress_bar(console=console) as progress:
            tasks = {step: progress.add_task(label, total=totals[step]) for step, label in _STEPS
                     if totals[step]}
            # on a log (CI, a pipe) the bars are off: a line a step instead
            logged = (lambda step, seconds: None) if console.is_terminal else (
                lambda step, seconds: console.print(f"{step}: done in {seconds}s",
                                                    highlight=False))
            loader = Loader(api, history, lambda step, n: progress.advance(tasks[step], n)
                            if step in tasks else None, on_step=logged)
            out = await loader.run()
        expected = expected_figures(history, out)
        services = await _settled(api, year, {f.budget_year for f in history.fundings},
                                  expected)
    finally:
        await api.close()
    rows, agree = compare(in_files, expected, services)
    refused = sorted(history.errors + out.refused, key=lambda e: (e.file, e.line))
    for e in refused[:50]:
        console.print(f"[yellow]refused[/yellow] {e}", highlight=False)
    if len(refused) > 50:
        console.print(f"... and {len(refused) - 50} more refused rows"
                      + (f" (all in {refused_out})" if refused_out else
                         " (--refused FILE lists them all)"), highlight=False)
    if refused_out:
        with refused_out.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["file", "line", "field", "reason"])
            writer.writerows((e.file, e.line, e.field, e.reason) for e in refused)
    columns = ("recruitment", "groups", "mentoring", "evaluation")
    table = Table(title=f"Programme year {year}: the files beside the four services")
    for name in ("figure", "in files", "loaded", *columns, "agree"):
        table.add_column(name, justify="left" if name == "figure" else "right")
    for row in rows:
        table.add_row(row["figure"], f"{row['in_files']:,}", f"{row['expected']:,}",
                      *(f"{row[c]:,}" if row.get(c) is not None else "" for c in columns),
                      "yes" if row["agree"] else "[red]NO[/red]")
    console.print(table)
    new = ", ".join(f"{k} {v:,}" for k, v in out.done.items() if v) or "nothing"
    there = ", ".join(f"{k} {v:,}" for k, v in out.already.items() if v) or "nothing"
    console.print(f"new this run: {new}; already loaded: {there}; answers replayed "
                  f"for keys already used: {api.replayed:,}", highlight=False)
    console.print("seconds: " + ", ".join(f"{k} {v}" for k, v in out.seconds.items()),
                  highlight=False)
    code = EXIT_DIFFER if not agree else EXIT_REFUSED if refused else EXIT_OK
    if code == EXIT_DIFFER:
        console.print("[red]the services' figures differ from the files'[/red]")
    elif code == EXIT_REFUSED:
        console.print(f"[yellow]{len(refused)} rows refused (listed above); the figures of "
                      "the rest agree[/yellow]")
    return code, {"in_files": in_files, "expected": expected, "services": services,
                  "table": rows, "refused": [vars(e) for e in refused],
                  "new": dict(out.done), "already": dict(out.already),
                  "replayed": api.replayed, "seconds": out.seconds}


async def _settled(api: HistoryClient, year: int, budget_years: set[int],
                   expected: dict[str, int], timeout: float = 120) -> dict:
    """The figures read back, again until mentoring and evaluation (which learn from the
    topics) have caught up or `timeout` has passed: then as they stand."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        services = await read_back(api, year, budget_years)
        if compare(expected, expected, services)[1] or loop.time() > deadline:
            return services
        await asyncio.sleep(1)


def run(directory: Path, year: int, urls: dict[str, str], *, console: Any,
        signing_key: str = DEV_SIGNING_KEY, refused_out: Path | None = None) -> int:
    try:
        code, _ = asyncio.run(load(directory, year, urls, console=console,
                                   signing_key=signing_key, refused_out=refused_out))
    except LayoutError as exc:
        console.print(f"[red]{exc}[/red] (layout: docs/history.md)")
        return EXIT_USAGE
    return code


def run_with_own_services(year: int = 2021, scale: float = 1.0, seed: int = 2021,
                          mentors: bool = True, reports: bool = False) -> int:
    """`make history`: fresh Kafka and Postgres (under TKM_INFRA_DIR, default .infra/history),
    the four services, the seeded year written to CSV files and loaded through the services,
    the table and the wall time."""
    import os
    import shutil
    import tempfile
    import time

    from rich.console import Console

    from scripts import infra
    from scripts import services as service_processes
    from scripts.demo import _env_port
    from scripts.history_example import generate

    console = Console(width=max(160, Console().width))
    state = Path(os.environ.get("TKM_INFRA_DIR") or infra.ROOT / ".infra") / "history"
    infra.down(state)
    shutil.rmtree(state, ignore_errors=True)
    started = time.perf_counter()
    running = None
    try:
        endpoints, _ = infra.up(state, _env_port("TKM_KAFKA_PORT"),
                                _env_port("TKM_POSTGRES_PORT"))
        running = service_processes.start(endpoints, state / "logs",
                                          kafka_env=infra.kafka_client_env(state),
                                          extra_env={"TKM_LOG_LEVEL": "WARNING"})
        console.print(f"infrastructure and services up in {time.perf_counter() - started:.0f}s",
                      highlight=False)
        with tempfile.TemporaryDirectory(prefix="tkm-history-") as tmp:
            files = Path(tmp)
            figures = generate(files, year=year, scale=scale, seed=seed, mentors=mentors,
                               reports=reports)
            console.print(f"generated {year} (seed {seed}, scale {scale}): {figures}",
                          highlight=False)
            t0 = time.perf_counter()
            code = run(files, year, running.urls, console=console)
            console.print(f"loaded in {time.perf_counter() - t0:.0f}s; wall time "
                          f"{time.perf_counter() - started:.0f}s", highlight=False)
        return code
    finally:
        if running is not None:
            running.stop()
        infra.down(state)
