"""Reading a CSV file within bounds: line endings spreadsheets write, junk refused by row."""

from __future__ import annotations

import io

import pytest

from services.groups.csv_import import (
    MAX_CELL_CHARS,
    MAX_LINE_CHARS,
    UnreadableRowsError,
    parse_groups_csv,
)
from tests.groups.groups_support import csv_context, csv_file, csv_rows

CSV_CTX = csv_context()


def unreadable(body: bytes) -> UnreadableRowsError:
    with pytest.raises(UnreadableRowsError) as err:
        parse_groups_csv(body, CSV_CTX)
    assert err.value.status == 422
    return err.value


def test_cr_only_and_crlf_line_endings_read_like_lf():
    body = csv_file(csv_rows("KUB Carriage"))
    for ending in (b"\r", b"\r\n"):
        parsed = parse_groups_csv(body.replace(b"\n", ending), CSV_CTX)
        assert [(g.name, g.row_count, g.errors) for g in parsed.groups] == [
            ("KUB Carriage", 10, [])]


def test_a_file_object_is_read_as_it_streams():
    parsed = parse_groups_csv(io.BytesIO(csv_file(csv_rows("KUB Stream"))), CSV_CTX)
    assert parsed.rows == 10 and not parsed.groups[0].errors


def test_a_nul_byte_is_refused_with_its_row_and_column():
    rows = csv_rows("KUB Nul")
    rows[4][7] = "Siti\x00Aminah"  # row 6
    err = unreadable(csv_file(rows))
    assert err.details["errors"] == [{"row": 6, "field": "member_name",
                                      "reason": "must not contain NUL characters"}]
    assert err.details["row"] == 6 and "row 6" in err.reason


def test_a_long_cell_and_a_long_line_are_refused_with_their_row():
    rows = csv_rows("KUB Long")
    rows[1][5] = "x" * (MAX_CELL_CHARS + 1)  # row 3
    err = unreadable(csv_file(rows))
    assert [(e["row"], e["field"]) for e in err.details["errors"]] == [(3, "group_name")]
    assert str(MAX_CELL_CHARS) in err.details["errors"][0]["reason"]

    rows = csv_rows("KUB Longer")
    rows[2][7] = "y" * 200_000  # past the csv module's own 131,072 limit; row 4
    err = unreadable(csv_file(rows))
    assert err.details["errors"][-1]["row"] == 4
    assert str(MAX_LINE_CHARS) in err.details["errors"][-1]["reason"]


def test_control_characters_are_refused_and_format_characters_removed():
    rows = csv_rows("KUB Control")
    rows[0][7] = "Budi\x1b[31m"
    err = unreadable(csv_file(rows))
    assert err.details["errors"][0]["row"] == 2
    rows = csv_rows("KUB Twin")
    rows[3][5] = "KUB T\u200bwin\u202e"  # the same group, though it looks otherwise
    parsed = parse_groups_csv(csv_file(rows), CSV_CTX)
    assert [(g.name, g.row_count, g.errors) for g in parsed.groups] == [("KUB Twin", 10, [])]


def test_many_bad_rows_are_reported_first_hundred_and_a_count():
    rows = csv_rows("KUB Many", members=10) * 30
    for row in rows:
        row[7] = "bad\x00"
    err = unreadable(csv_file(rows))
    assert len(err.details["errors"]) == 100 and err.details["errors_total"] == 300


def test_a_quote_that_neutralised_a_formula_is_taken_off():
    rows = csv_rows("KUB Quote")
    for row in rows:
        row[8] = "'+62 812 3456 7890"
    parsed = parse_groups_csv(csv_file(rows), CSV_CTX)
    assert not parsed.groups[0].errors
    assert parsed.groups[0].members[0].phone is not None
