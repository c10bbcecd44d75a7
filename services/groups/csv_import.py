"""Reading a regional labour office's CSV list of groups: pure, no I/O.

Layout: one row per member, the group's columns repeated on each of its rows (see CSV_LAYOUT).
Rows with the same (year, regency_code, group_name) form one group, wherever they are in the
file. Every problem is reported as (row, field, reason); a group with any problem is left out
whole, the other groups go on.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date

from services.groups.config import ProgrammeConfig
from services.groups.domain import (
    GroupHeader,
    MemberRecord,
    check_age,
    group_header,
    member_from_input,
    normalise_name,
)
from shared.errors import DomainError

REQUIRED = ("year", "stage", "regency_code", "business_type", "group_name", "member_nik",
            "member_name")
OPTIONAL = ("group_ref", "member_phone")
GROUP_COLUMNS = ("group_ref", "stage", "business_type")
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

Rows with the same (year, regency_code, group_name) (case and spacing ignored) are one group;
group_ref, stage and business_type must agree on all its rows. Row numbers in the report count
the header as row 1, as a spreadsheet does. A group with any bad row is not registered; the
others are. The group id is derived from (year, regency_code, group_name), so uploading the same
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
    external_ref: str | None = None
    members: list[MemberRecord] = field(default_factory=list)
    member_rows: dict[str, int] = field(default_factory=dict)  # NIK -> row
    row_count: int = 0
    errors: list[RowError] = field(default_factory=list)

    def fail(self, row: int, field_name: str, reason: str) -> None:
        self.errors.append(RowError(row, field_name, reason, self.name))

    def row_of(self, nik: str) -> int:
        return self.member_rows.get(nik, self.first_row)


@dataclass
class ParsedFile:
    rows: int
    groups: list[GroupDraft]
    errors: list[RowError]  # rows that belong to no group


def parse_groups_csv(raw: bytes, config: ProgrammeConfig, today: date) -> ParsedFile:
    """Raises DomainError (field "file" or "header") when the file as a whole is unreadable."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DomainError("the file is not UTF-8 text", field="file") from None
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DomainError(f"the header lacks column(s): {', '.join(missing)}", field="header",
                          expected=list(REQUIRED + OPTIONAL))
    position = {name: header.index(name) for name in REQUIRED + OPTIONAL if name in header}
    groups: dict[tuple[str, str, str], GroupDraft] = {}
    loose: list[RowError] = []
    count = 0
    for row_number, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        count += 1
        if count > config.bulk.max_csv_rows:
            raise DomainError(f"the file has more than {config.bulk.max_csv_rows} rows",
                              field="file")
        if len(cells) != len(header):
            loose.append(RowError(row_number, "row", f"{len(cells)} columns where the header "
                                                     f"has {len(header)}"))
            continue
        values = {name: cells[i].strip() for name, i in position.items()}
        key = (values["year"], values["regency_code"].replace(".", ""),
               normalise_name(values["group_name"]).casefold())
        draft = groups.get(key)
        if draft is None:
            draft = groups[key] = _start_group(values, row_number, config)
        else:
            for column in GROUP_COLUMNS:
                if values.get(column, "") != draft.values.get(column, ""):
                    draft.fail(row_number, column,
                               f"differs from the group's first row ({draft.first_row})")
        draft.row_count += 1
        _add_member(draft, values, row_number, config, today)
    drafts = sorted(groups.values(), key=lambda g: g.first_row)
    for draft in drafts:
        _check_roster(draft, config)
    _check_shared_members(drafts)
    return ParsedFile(count, drafts, loose)


def _start_group(values: dict[str, str], row: int, config: ProgrammeConfig) -> GroupDraft:
    draft = GroupDraft(normalise_name(values["group_name"]), row, values,
                       external_ref=values.get("group_ref") or None)
    if draft.external_ref and len(draft.external_ref) > 64:
        draft.fail(row, "group_ref", "must be at most 64 characters")
    try:
        year = int(values["year"])
    except ValueError:
        draft.fail(row, "year", "must be a whole number such as 2023")
        return draft
    try:
        draft.header = group_header(year, values["stage"], values["regency_code"],
                                    values["business_type"], values["group_name"], config)
    except DomainError as exc:
        draft.fail(row, _HEADER_FIELDS.get(exc.field or "", exc.field or "row"), exc.reason)
    return draft


def _add_member(draft: GroupDraft, values: dict[str, str], row: int, config: ProgrammeConfig,
                today: date) -> None:
    try:
        member = member_from_input(values["member_nik"], values["member_name"],
                                   values.get("member_phone"), today)
        check_age(member, config, today)
    except DomainError as exc:
        draft.fail(row, _MEMBER_FIELDS.get(exc.field or "", "member_nik"), exc.reason)
        return
    earlier = draft.member_rows.get(member.nik)
    if earlier is not None:
        draft.fail(row, "member_nik", f"the same NIK is already on row {earlier} of this group")
        return
    draft.members.append(member)
    draft.member_rows[member.nik] = row


def _check_roster(draft: GroupDraft, config: ProgrammeConfig) -> None:
    rules = config.members
    if not rules.min_count <= draft.row_count <= rules.max_count:
        draft.fail(draft.first_row, "group_name", f"a group has {rules.min_count} to "
                                                  f"{rules.max_count} members, not "
                                                  f"{draft.row_count}")


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
