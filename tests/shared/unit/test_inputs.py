"""The request field types: one text type, strict numbers, plausible dates and periods."""

import json

import pytest
from pydantic import BaseModel, ValidationError

from services.groups.domain import group_id_for
from shared.csv_export import safe_cell, write_rows
from shared.inputs import Period, ProgrammeDate, Rupiah, Text, Year, clean_text


class Form(BaseModel):
    name: Text(200)
    note: Text(500, multiline=True) | None = None
    amount: Rupiah = 1
    year: Year = 2023
    period: Period = "2023-05"
    held_on: ProgrammeDate | None = None


def refused(**fields) -> str:
    with pytest.raises(ValidationError) as err:
        Form.model_validate_json(json.dumps({"name": "KUB Maju", **fields}))
    return err.value.errors()[0]["msg"]


def test_nul_and_control_characters_are_refused_but_a_note_keeps_its_line_breaks():
    assert "NUL" in refused(name="KUB\x00Maju")
    assert "control" in refused(name="KUB\x1bMaju")
    assert "control" in refused(name="KUB\nMaju")
    assert "NUL" in refused(note="line one\x00")
    assert Form(name="x", note="one\r\ntwo\rthree\n").note == "one\ntwo\nthree"


def test_format_characters_are_removed_and_text_blank_after_that_is_refused():
    assert "blank" in refused(name="\u200b\u200c\u200d\u2060\ufeff")
    assert "blank" in refused(name=" \u202e \u200f ")
    assert "blank" in refused(name="   ")
    assert Form(name="  KUB\u200b Maju\u202e ").name == "KUB Maju"


def test_look_alikes_are_one_name_after_normalisation():
    plain = Form(name="KUB Maju Bersama").name
    for twin in ("KUB Ma\u200bju Bersama", "KUB Maju Bersama\u200f", "ＫＵＢ Maju Bersama",
                 "\ufeffKUB Maju Bersama"):
        assert Form(name=twin).name == plain
        assert group_id_for(2023, "3201", Form(name=twin).name) == group_id_for(2023, "3201",
                                                                                 plain)


def test_length_is_bounded_before_and_after_normalisation():
    assert "200" in refused(name="x" * 201)
    # U+FDFA becomes 18 characters under NFKC: the bound still holds afterwards
    assert "200" in refused(name="\ufdfa" * 20)


def test_rupiah_and_years_are_strict_integers():
    for amount in ("20000000", 20000000.0, True):
        assert "integer" in refused(amount=amount)
    assert refused(amount=-1)
    assert "integer" in refused(year="2023")
    assert Form(name="x", amount=20_000_000, year=2023).amount == 20_000_000


def test_periods_and_dates_stay_in_the_programme_range():
    for period in ("0000-01", "9999-12", "2023-13", "2023-00", "2023-5"):
        assert refused(period=period)
    assert refused(held_on="0001-01-01")
    assert refused(held_on="9999-12-31")
    assert str(Form(name="x", held_on="2023-06-01").held_on) == "2023-06-01"


def test_clean_text_reports_its_reason():
    with pytest.raises(ValueError, match="NUL"):
        clean_text("a\x00")
    assert clean_text("  Rumah\u00a0Jahit ") == "Rumah Jahit"


def test_cells_that_a_spreadsheet_would_run_as_formulas_are_written_as_text():
    for cell in ("=1+1", "+62812", "-2", "@SUM(A1)", "\tx", "\rx"):
        assert safe_cell(cell) == "'" + cell
    assert safe_cell("KUB Maju") == "KUB Maju"
    assert safe_cell(2023) == 2023
    text = write_rows([["name", "phone"], ['=HYPERLINK("http://x")', "+62812"]])
    assert text.splitlines()[1] == "\"'=HYPERLINK(\"\"http://x\"\")\",'+62812"
