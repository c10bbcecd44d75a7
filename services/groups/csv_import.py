"""Reading a regional labour office's CSV list of groups: pure, no I/O.

Layout: one row per member, the group's columns repeated on each of its rows (see CSV_LAYOUT).
Rows with the same (year, regency_code, group_name) form one group, wherever they are in the
file. Every problem is reported as (row, field, reason); a group with any problem is left out
whole, the other groups go on. Members are checked in plaintext and known by their NIK's keyed
hash from then on (`Context.nik_hash`); they are sealed when registered (handlers.py).
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, BinaryIO, TextIO

from services.groups.config import GroupYearRules, ProgrammeConfig
from services.groups.domain import (
    GroupHeader,
    Person,
    check_age,
    count_rule,
    group_header,
    member_from_input,
    normalise_name,
)
from shared.csv_export import FORMULA_PREFIXES
from shared.errors import DomainError, ForbiddenError
from shared.inputs import PROGRAMME_FIRST_YEAR, BlankTextError, clean_text
from shared.limits import MAX_REPORTED_ERRORS
from shared.localtime import local_today

# the rules in force for a year (shared.rules.RuleBook.resolver)
Resolve = Callable[[int], Any]

# Every column is a short code, number or name: a longer cell or line is junk, refused with its
# row before it costs anything (the csv module's own limit, 131,072, would end in a 500).
MAX_CELL_CHARS = 1_000
MAX_LINE_CHARS = 16_384
REQUIRED = ("year", "stage", "regency_code", "business_type", "group_name", "member_nik",
            "member_name")
OPTIONAL = ("group_ref", "member_phone", "registered_on")
GROUP_COLUMNS = ("group_ref", "stage", "business_type", "registered_on")
_HEADER_FIELDS = {"year": "year", "stage": "stage", "regency_code": "regency_code",
                  "business_type": "business_type", "name": "group_name"}
_MEMBER_FIELDS = {"nik": "member_nik", "name": "member_name", "phone": "member_phone"}

CSV_LAYOUT = """\
**CSV layout** (UTF-8, comma- or semicolon-separated, header row first; body sent as
`Content-Type: text/csv`): one row per member, the group's columns repeated on each of its rows.

| column | required | meaning |
|---|---|---|
| group_ref | no | the office's own reference for the group (stored, not used as a key) |
| year | yes | programme year, e.g. 2023 |
| stage | yes | pemula, lanjutan or pengembangan |
| regency_code | yes | Kemendagri regency/city code, 4 digits (dots allowed: 32.01) |
| business_type | yes | a code of GET /business-types |
| group_name | yes | the group's name |
| member_nik | yes | 16-digit NIK (birth date and age come from it) |
| member_name | yes | the member's name |
| member_phone | no | Indonesian mobile number |
| registered_on | no | ministry_admin only: the date a past year's group was registered, YYYY-MM-DD, not after today in the regency (default: today there); ages are measured on the day the year's rules say |

Rows with the same (year, regency_code, group_name) (case and spacing ignored) are one group;
group_ref, stage and business_type must agree on all its rows. Row numbers in the report count
the header as row 1, as a spreadsheet does. Each group is checked against the programme rules of
its own year (GET /rules/{year}). A non-empty registered_on from anyone but the ministry makes
the whole file a 403, nothing registered. A group with any bad row is not registered; the
others are. Line endings may be LF, CRLF or CR. A row holding what no column may (a NUL or other
control character, a cell over 1,000 characters) makes the whole file a 422 listing those rows:
nothing is registered. A cell starting with `'` followed by = + - or @ (a formula neutralised by
an export) is read without the quote. The group id is derived from (year, regency_code, group_name), so uploading the same
file again registers nothing twice: those groups come back as `already_registered`."""


@dataclass(frozen=True)
class RowError:
    row: int
    field: str
    reason: str
    group_name: str | None = None


@dataclass
class GroupDraft:
    name: str
    first_row: int
    values: dict[str, str]
    header: GroupHeader | None = None
    rules: GroupYearRules | None = None  # of the group's year
    registered_on: date | None = None
    backdated: bool = False
    external_ref: str | None = None
    members: list[Person] = field(default_factory=list)
    member_rows: dict[str, int] = field(default_factory=dict)  # NIK hash -> row
    row_count: int = 0
    errors: list[RowError] = field(default_factory=list)

    def fail(self, row: int, field_name: str, reason: str) -> None:
        self.errors.append(RowError(row, field_name, reason, self.name))

    def row_of(self, nik_hash: str) -> int:
        return self.member_rows.get(nik_hash, self.first_row)


@dataclass
class ParsedFile:
    rows: int
    groups: list[GroupDraft]
    errors: list[RowError]  # rows that belong to no group


@dataclass(frozen=True)
class Context:
    """What parsing needs besides the file: the operational config, the rules in force per
    year, whether the caller may give registered_on, "today" in a regency, and the keyring's
    NIK hash (the process's: `ServiceContext.keyring.nik_hash`)."""

    config: ProgrammeConfig
    resolve: Resolve
    may_backdate: bool = False
    today: Callable[[str], date] = local_today
    nik_hash: Callable[[str], str] | None = None

    def hash_nik(self, nik: str) -> str:
        if self.nik_hash is None:
            raise RuntimeError("csv_import.Context needs the keyring's nik_hash")
        return self.nik_hash(nik)


def parse_groups_csv(raw: bytes | BinaryIO, ctx: Context) -> ParsedFile:
    """Reads the file incrementally (a file object or bytes), so call it in a worker thread
    for a large upload. Raises DomainError (400, field "file" or "header") when the file as a
    whole is unreadable, UnreadableRowsError (422, nothing to be registered) when rows hold
    what no column may: NUL or control characters, cells or lines past the limits, and
    ForbiddenError (403, field registered_on) when someone else than the ministry gives a
    registration date."""
    stream = io.BytesIO(raw) if isinstance(raw, bytes | bytearray) else raw
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    try:
        return _parse(text, ctx)
    except UnicodeDecodeError:
        raise DomainError("the file is not UTF-8 text", field="file") from None
    finally:
        text.detach()  # the caller owns the stream


def _parse(text: TextIO, ctx: Context) -> ParsedFile:
    config = ctx.config
    lines = _bounded_lines(text)
    first_line = next(lines, "")
    if not first_line.strip():
        raise DomainError("the file is empty", field="file")
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.reader(itertools.chain([first_line], lines), delimiter=delimiter)
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DomainError(f"the header lacks column(s): {', '.join(missing)}", field="header",
                          expected=list(REQUIRED + OPTIONAL))
    position = {name: header.index(name) for name in REQUIRED + OPTIONAL if name in header}
    names = {i: name for name, i in position.items()}
    groups: dict[tuple[str, str, str], GroupDraft] = {}
    loose: list[RowError] = []
    unreadable: list[RowError] = []
    count = 0
    row_number = 1
    try:
        for row_number, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            count += 1
            if count > config.bulk.max_csv_rows:
                raise DomainError(f"the file has more than {config.bulk.max_csv_rows} rows",
                                  field="file")
            cleaned = _clean_cells(cells, names, row_number, unreadable)
            if cleaned is None:
                continue
            if len(cleaned) != len(header):
                loose.append(RowError(row_number, "row", f"{len(cells)} columns where the "
                                                         f"header has {len(header)}"))
                continue
            values = {name: cleaned[i] for name, i in position.items()}
            key = (values["year"], values["regency_code"].replace(".", ""),
                   normalise_name(values["group_name"]).casefold())
            draft = groups.get(key)
            if draft is None:
                draft = groups[key] = _start_group(values, row_number, ctx)
            else:
                for column in GROUP_COLUMNS:
                    if values.get(column, "") != draft.values.get(column, ""):
                        draft.fail(row_number, column,
                                   f"differs from the group's first row ({draft.first_row})")
            draft.row_count += 1
            _add_member(draft, values, row_number, ctx)
    except _LineTooLongError:
        unreadable.append(RowError(row_number + 1, "row", f"a line is longer than "
                                                          f"{MAX_LINE_CHARS} characters"))
        raise UnreadableRowsError(unreadable) from None
    except csv.Error as exc:
        unreadable.append(RowError(row_number + 1, "row", f"not readable as CSV: {exc}"))
        raise UnreadableRowsError(unreadable) from None
    if unreadable:
        raise UnreadableRowsError(unreadable)
    drafts = sorted(groups.values(), key=lambda g: g.first_row)
    for draft in drafts:
        _check_roster(draft)
    _check_shared_members(drafts)
    return ParsedFile(count, drafts, loose)


class _LineTooLongError(Exception):
    pass


def _bounded_lines(text: TextIO) -> Iterator[str]:
    # a line is read at most MAX_LINE_CHARS at a time, so one endless line costs no more;
    # newline="" splits at \n, \r\n and a lone \r (spreadsheets on old Macs write those)
    while line := text.readline(MAX_LINE_CHARS + 1):
        if len(line) > MAX_LINE_CHARS and not line.endswith(("\n", "\r")):
            raise _LineTooLongError
        yield line


def _clean_cells(cells: list[str], names: dict[int, str], row: int,
                 unreadable: list[RowError]) -> list[str] | None:
    """The row's cells through the one text rule (shared.inputs.clean_text), a quote that
    neutralised a formula on export taken off; None (and the reasons noted) when a cell holds
    what no column may."""
    cleaned, bad = [], False
    for i, cell in enumerate(cells):
        column = names.get(i, f"column {i + 1}")
        if len(cell) > MAX_CELL_CHARS:
            unreadable.append(RowError(row, column, f"a cell is longer than {MAX_CELL_CHARS} "
                                                    f"characters"))
            bad = True
            continue
        if cell.startswith("'") and cell[1:2] in FORMULA_PREFIXES:
            cell = cell[1:]
        try:
            cleaned.append(clean_text(cell))
        except BlankTextError:
            cleaned.append("")
        except ValueError as exc:
            unreadable.append(RowError(row, column, str(exc)))
            bad = True
    return None if bad else cleaned


class UnreadableRowsError(DomainError):
    """Rows hold what no column may: the file is refused whole (422), nothing is registered.
    Reports the first MAX_REPORTED_ERRORS problems and how many there are."""

    status = 422

    def __init__(self, errors: list[RowError]):
        first = errors[0]
        super().__init__(f"row {first.row}: {first.reason}; the file was not imported",
                         field="file", row=first.row,
                         errors=[{"row": e.row, "field": e.field, "reason": e.reason}
                                 for e in errors[:MAX_REPORTED_ERRORS]],
                         errors_total=len(errors))


def _start_group(values: dict[str, str], row: int, ctx: Context) -> GroupDraft:
    draft = GroupDraft(normalise_name(values["group_name"]), row, values,
                       external_ref=values.get("group_ref") or None)
    if draft.external_ref and len(draft.external_ref) > 64:
        draft.fail(row, "group_ref", "must be at most 64 characters")
    try:
        year = int(values["year"])
    except ValueError:
        draft.fail(row, "year", "must be a whole number such as 2023")
        return draft
    given = values.get("registered_on") or ""
    if given and not ctx.may_backdate:
        raise ForbiddenError(f"row {row}: only the ministry (ministry_admin) registers groups "
                             f"with a past registered_on", field="registered_on", row=row)
    try:
        draft.rules = ctx.resolve(year).rules
        draft.header = group_header(year, values["stage"], values["regency_code"],
                                    values["business_type"], values["group_name"], ctx.config,
                                    draft.rules)
    except DomainError as exc:
        draft.fail(row, _HEADER_FIELDS.get(exc.field or "", exc.field or "row"), exc.reason)
        return draft
    local = ctx.today(draft.header.regency_code)
    if not given:
        draft.registered_on = local
        return draft
    try:
        on = date.fromisoformat(given)
    except ValueError:
        draft.fail(row, "registered_on", "must be a date YYYY-MM-DD")
        return draft
    if on > local:
        draft.fail(row, "registered_on", f"{on.isoformat()} is after today in the regency "
                                         f"({local.isoformat()})")
    elif on.year < PROGRAMME_FIRST_YEAR:
        draft.fail(row, "registered_on", f"must be in {PROGRAMME_FIRST_YEAR} or later")
    else:
        draft.registered_on, draft.backdated = on, True
    return draft


def _add_member(draft: GroupDraft, values: dict[str, str], row: int, ctx: Context) -> None:
    on = draft.registered_on
    try:
        member = member_from_input(values["member_nik"], values["member_name"],
                                   values.get("member_phone"), on, ctx.hash_nik)
        if draft.rules is not None and draft.header is not None and on is not None:
            check_age(member, draft.rules, draft.header.year, on)
    except DomainError as exc:
        draft.fail(row, _MEMBER_FIELDS.get(exc.field or "", "member_nik"), exc.reason)
        return
    earlier = draft.member_rows.get(member.nik_hash)
    if earlier is not None:
        draft.fail(row, "member_nik", f"the same NIK is already on row {earlier} of this group")
        return
    draft.members.append(member)
    draft.member_rows[member.nik_hash] = row


def _check_roster(draft: GroupDraft) -> None:
    if draft.rules is None or draft.header is None:
        return
    reason = count_rule(draft.row_count, draft.rules, draft.header.year)
    if reason is not None:
        draft.fail(draft.first_row, "group_name", reason)


def _check_shared_members(drafts: list[GroupDraft]) -> None:
    # one active group per person and year: inside the file the group listed first keeps them
    first_seen: dict[tuple[str, str], tuple[GroupDraft, int]] = {}
    for draft in drafts:
        for nik, row in draft.member_rows.items():
            key = (draft.values["year"], nik)
            owner = first_seen.setdefault(key, (draft, row))
            if owner[0] is not draft:
                draft.fail(row, "member_nik", f"this person is also listed for group "
                                              f"'{owner[0].name}' on row {owner[1]}")
