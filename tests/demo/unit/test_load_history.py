"""Reading a past year's CSV files for `tkm load-history` (docs/history.md): what a row holds is
checked per row (file, line, field, reason) and a refused row takes no neighbour with it; the
seeded 2021 shape reads back whole."""

from __future__ import annotations

import re
import shutil
from datetime import date
from pathlib import Path

import pytest

from scripts.history_example import generate
from scripts.load_history import (
    LayoutError,
    RowError,
    compare,
    figures_of,
    read_history,
)
from shared.nik import parse_nik

TODAY = date(2026, 12, 2)


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("h2021")
    generate(out, year=2021, scale=0.04, seed=7, reports=True)
    return out


@pytest.fixture
def files(example, tmp_path) -> Path:
    copy = tmp_path / "files"
    shutil.copytree(example, copy)
    return copy


def _edit(path: Path, line: int, column: str, value: str) -> None:
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[line - 1].split(",")
    cells[header.index(column)] = value
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


def test_the_seeded_2021_shape_reads_whole(example):
    history = read_history(example, 2021, TODAY)
    assert history.errors == []
    figures = figures_of(history)
    assert (figures["tks"], figures["groups"], figures["people"]) == (27, 250, 4000)
    assert figures["rupiah"] == 250 * 20_000_000 and figures["mentored"] == 250
    assert figures["reports"] > 0
    # every member is 18-60 on every day of 2021, every NIK readable, ages from the NIK
    for group in history.groups.values():
        assert len(group.members) == 16
        assert group.registered_on.year == 2021
        for member in group.members:
            born = parse_nik(member.nik, TODAY).birth_date
            assert date(1960, 12, 31) < born <= date(2002, 12, 31), member


def test_same_seed_same_files(tmp_path):
    generate(tmp_path / "a", scale=0.01, seed=3)
    generate(tmp_path / "b", scale=0.01, seed=3)
    for name in ("tks.csv", "groups.csv", "members.csv", "fundings.csv", "mentors.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_a_bad_member_is_refused_alone(files):
    history = read_history(files, 2021, TODAY)
    group = next(iter(history.groups.values()))
    _edit(files / "members.csv", group.members[3].line, "nik", "12345")
    again = read_history(files, 2021, TODAY)
    assert again.errors == [RowError("members.csv", group.members[3].line, "nik",
                                     "must be 16 digits")]
    assert len(again.groups[group.ref].members) == 15  # the other members stay
    assert figures_of(again)["people"] == 3999


def test_each_bad_cell_is_reported_with_its_file_line_and_field(files):
    _edit(files / "fundings.csv", 2, "amount", "20.000.000")
    _edit(files / "fundings.csv", 3, "disbursed_on", "15/04/2021")
    _edit(files / "tks.csv", 2, "sex", "X")
    _edit(files / "groups.csv", 4, "registered_on", "2027-01-01")
    _edit(files / "groups.csv", 5, "stage", "dewasa")
    history = read_history(files, 2021, TODAY)
    found = {(e.file, e.line, e.field) for e in history.errors}
    assert {("fundings.csv", 2, "amount"), ("fundings.csv", 3, "disbursed_on"),
            ("tks.csv", 2, "sex"), ("groups.csv", 4, "registered_on"),
            ("groups.csv", 5, "stage")} <= found
    reasons = {(e.file, e.line): e.reason for e in history.errors}
    assert "digits only" in reasons["fundings.csv", 2]
    assert "in the future" in reasons["groups.csv", 4]
    # members of a refused group name it, once each; the other 247 groups are whole
    member_errors = [e for e in history.errors if e.file == "members.csv"]
    assert len(member_errors) == 32 and all("is refused" in e.reason for e in member_errors)
    assert len(history.groups) == 248
    # a refused TKS takes its mentor rows with it, and nothing else
    assert len(history.tks) == 26


def test_references_between_files_and_duplicates(files):
    history = read_history(files, 2021, TODAY)
    first, second = list(history.groups.values())[:2]
    # the same person in two groups: the second row is refused, the first stays
    _edit(files / "members.csv", second.members[0].line, "nik", first.members[0].nik)
    _edit(files / "fundings.csv", 2, "group_ref", "KUB-NOPE")
    _edit(files / "mentors.csv", 3, "tks_ref", "TKS-NOPE")
    again = read_history(files, 2021, TODAY)
    by_place = {(e.file, e.line): e for e in again.errors}
    assert "one group a person and year" in by_place["members.csv",
                                                     second.members[0].line].reason
    assert by_place["fundings.csv", 2].field == "group_ref"
    assert by_place["mentors.csv", 3].field == "tks_ref"


def test_the_year_must_match(files):
    _edit(files / "groups.csv", 2, "year", "2023")
    history = read_history(files, 2021, TODAY)
    assert RowError("groups.csv", 2, "year", "must be 2021 (--year)") in history.errors


def test_a_missing_column_or_file_refuses_the_load(files):
    text = (files / "groups.csv").read_text().replace("registered_on", "tanggal", 1)
    (files / "groups.csv").write_text(text)
    with pytest.raises(LayoutError, match=re.escape(
            "groups.csv: the header lacks column(s) registered_on")):
        read_history(files, 2021, TODAY)
    (files / "fundings.csv").unlink()
    # every problem at once, before any row is read
    with pytest.raises(LayoutError, match=re.escape(
            "registered_on; fundings.csv: the file is missing")):
        read_history(files, 2021, TODAY)


def test_optional_files_and_semicolons(files):
    (files / "mentors.csv").unlink()
    with pytest.raises(LayoutError, match=re.escape("reports.csv needs mentors.csv")):
        read_history(files, 2021, TODAY)
    (files / "reports.csv").unlink()
    members = files / "members.csv"
    members.write_text(members.read_text().replace(",", ";"))
    history = read_history(files, 2021, TODAY)
    assert history.mentors is None and history.errors == []
    assert figures_of(history)["people"] == 4000
    assert figures_of(history)["mentored"] == 250  # by the rule: every funded group


def test_compare_flags_a_service_that_differs():
    files = {"groups": 10, "rupiah": 200}
    expected = {"groups": 10, "rupiah": 200}
    rows, agree = compare(files, expected, {"groups": {"groups": 10},
                                            "rupiah": {"groups": 200}})
    assert agree and all(r["agree"] for r in rows)
    rows, agree = compare(files, expected, {"groups": {"groups": 10, "mentoring": 9},
                                            "rupiah": {"groups": 200}})
    assert not agree and [r["figure"] for r in rows if not r["agree"]] == ["groups"]
    # a service that cannot say (evaluation with no open cycle) is not a difference
    _, agree = compare(files, expected, {"groups": {"groups": 10, "evaluation": None},
                                         "rupiah": {"groups": 200}})
    assert agree


def test_the_command_refuses_unreadable_files_before_sending_anything(files):
    """Exit 2 and every layout problem named; no service is needed to say so (none runs)."""
    import os
    import subprocess
    import sys

    (files / "tks.csv").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "scripts.cli", "load-history", str(files), "--year", "2021"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": ".", "COLUMNS": "200",
             "RECRUITMENT_URL": "http://127.0.0.1:9", "GROUPS_URL": "http://127.0.0.1:9"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "tks.csv: the file is missing" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
