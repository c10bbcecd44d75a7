"""Reading a labour office's CSV list: per-row errors, groups kept whole."""

from __future__ import annotations

from pathlib import Path

import pytest

import services.groups
from services.groups.csv_import import parse_groups_csv
from services.groups.domain import group_id_for
from shared.errors import DomainError
from tests.groups.groups_support import CSV_HEADER, csv_context, csv_file, csv_rows

CSV_CTX = csv_context()


def errors_of(parsed, name):
    return [(e.row, e.field) for g in parsed.groups if g.name == name for e in g.errors]


def test_the_example_file_parses_into_three_whole_groups():
    example = Path(services.groups.__file__).parent / "examples" / "groups_2023_example.csv"
    parsed = parse_groups_csv(example.read_bytes(), CSV_CTX)
    assert parsed.rows == 30
    assert [len(g.members) for g in parsed.groups] == [10, 10, 10]
    assert all(not g.errors for g in parsed.groups) and parsed.errors == []


def test_rows_group_by_year_regency_and_name_wherever_they_are():
    a, b = csv_rows("KUB Alpha"), csv_rows("KUB Beta", regency_code="6501")
    mixed = [row for pair in zip(a, b, strict=True) for row in pair]
    mixed[3][5] = "  kub   BETA "  # the same group, typed differently
    parsed = parse_groups_csv(csv_file(mixed), CSV_CTX)
    assert [(g.name, len(g.members), g.first_row) for g in parsed.groups] == [
        ("KUB Alpha", 10, 2), ("KUB Beta", 10, 3)]
    beta = parsed.groups[1]
    assert beta.header.group_id == group_id_for(2023, "6501", "KUB Beta")
    assert beta.header.province_code == "65"
    assert beta.external_ref == "REF-KUB Beta"


def test_each_bad_row_is_reported_and_only_its_group_is_held_back():
    good, bad = csv_rows("KUB Good"), csv_rows("KUB Bad", members=14, year=2021)
    bad[0][6] = "3201011234"          # row 12: NIK too short
    bad[1][8] = "12345"               # row 13: phone
    bad[2][4] = "yachts"              # row 14: differs from the group's first row
    bad[3][6] = bad[4][6]             # row 15: same NIK as row 16 -> reported on row 16
    parsed = parse_groups_csv(csv_file(good + bad), CSV_CTX)
    assert errors_of(parsed, "KUB Good") == []
    assert errors_of(parsed, "KUB Bad") == [(12, "member_nik"), (13, "member_phone"),
                                            (14, "business_type"), (16, "member_nik")]


def test_group_level_problems_point_at_the_group_first_row():
    small = csv_rows("KUB Small", members=8)
    unknown = csv_rows("KUB Nowhere", regency_code="3201")
    for row in unknown:
        row[3] = "9999"
    parsed = parse_groups_csv(csv_file(small + unknown), CSV_CTX)
    assert errors_of(parsed, "KUB Small") == [(2, "group_name")]
    assert errors_of(parsed, "KUB Nowhere") == [(10, "regency_code")]
    assert "a 2023 group has 10 members, not 8" in parsed.groups[0].errors[0].reason


def test_a_person_listed_in_two_groups_of_the_file_stays_with_the_first():
    first, second = csv_rows("KUB First"), csv_rows("KUB Second")
    second[5][6] = first[2][6]
    parsed = parse_groups_csv(csv_file(first + second), CSV_CTX)
    assert errors_of(parsed, "KUB First") == []
    assert errors_of(parsed, "KUB Second") == [(17, "member_nik")]
    assert "row 4" in parsed.groups[1].errors[0].reason


def test_semicolons_a_bom_and_extra_columns_are_understood():
    rows = csv_rows("KUB Semicolon")
    text = ";".join([*CSV_HEADER, "catatan"]) + "\n" + "\n".join(
        ";".join([*r, "-"]) for r in rows)
    parsed = parse_groups_csv(b"\xef\xbb\xbf" + text.encode(), CSV_CTX)
    assert len(parsed.groups[0].members) == 10 and not parsed.groups[0].errors


def test_a_row_with_the_wrong_number_of_columns_belongs_to_no_group():
    rows = csv_rows("KUB Short", members=11)
    rows[10] = rows[10][:4]
    parsed = parse_groups_csv(csv_file(rows), CSV_CTX)
    assert [(e.row, e.field) for e in parsed.errors] == [(12, "row")]
    assert len(parsed.groups[0].members) == 10 and not parsed.groups[0].errors


def test_a_file_without_the_required_columns_is_refused_whole():
    with pytest.raises(DomainError) as err:
        parse_groups_csv(b"year,stage\n2023,pemula\n", CSV_CTX)
    assert err.value.field == "header"
    assert "member_nik" in err.value.reason
    with pytest.raises(DomainError) as err:
        parse_groups_csv(b"\xff\xfe\x00", CSV_CTX)
    assert err.value.field == "file"
