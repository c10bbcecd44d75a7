"""Writing CSV that is safe to open in a spreadsheet: a text cell starting with = + - @, a tab
or a carriage return would run as a formula (CSV injection), so it is written with a leading
single quote, which spreadsheets show as text. Numbers are written as they are."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def write_rows(rows: Iterable[Iterable[Any]], out: io.StringIO | None = None,
               **dialect: Any) -> str:
    """Every row written through `safe_cell`; returns the text written (when `out` is a
    StringIO, the whole of it)."""
    out = out if out is not None else io.StringIO()
    writer = csv.writer(out, lineterminator="\n", **dialect)
    for row in rows:
        writer.writerow([safe_cell(cell) for cell in row])
    return out.getvalue()
