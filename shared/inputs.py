"""The field types of what people send: every request model of every service uses these.

`Text(n)`: the one constrained string. NUL and other control characters are refused (a
multi-line text keeps its line breaks, as "\\n"); the text is normalised to Unicode NFKC, its
format characters (category Cf: zero-width spaces and joiners, bidi marks and overrides, BOM)
are removed, it is trimmed, and a text that is then blank is refused. So two names that look the
same are the same string, and nothing reaches Postgres that it refuses (NUL) or that only
pretends to be text. `clean_text` does the same for text that does not come through pydantic
(CSV cells).

`Rupiah`, `Count`, `Year` are strict integers: "20000000", 20000000.0 and true are refused.
`ProgrammeDate` and `Period` stay inside the programme's plausible range.
"""

from __future__ import annotations

import unicodedata
from datetime import date
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints

# The programme began well after 2015; the upper bound matches the published contracts' Year
# (tests use far years so their data never meets another run's). A date or period outside
# these is a typo, refused with a 422 rather than stored.
PROGRAMME_FIRST_YEAR = 2015
PROGRAMME_LAST_YEAR = 2100
MAX_RUPIAH = 10**15  # far above any budget, well inside bigint
MAX_COUNT = 2**31 - 1  # inside a Postgres integer
_LINE_BREAKS = "\n"


class BlankTextError(ValueError):
    """Nothing is left of the text once cleaned."""


def clean_text(value: str, *, multiline: bool = False, max_length: int | None = None) -> str:
    """`value` normalised as described in the module docstring. Raises ValueError with the
    reason when it contains a control character or is blank (or too long) once cleaned."""
    if value.isascii() and value.isprintable():
        # the common case, fast: printable ASCII has no control or format character and NFKC
        # leaves it as it is
        value = value.strip()
        if not value:
            raise BlankTextError("must not be blank")
        if max_length is not None and len(value) > max_length:
            raise ValueError(f"must be at most {max_length} characters")
        return value
    allowed = _LINE_BREAKS if multiline else ""
    if multiline:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    value = unicodedata.normalize("NFKC", value)
    kept = []
    for char in value:
        kind = unicodedata.category(char)
        if kind == "Cf":
            continue
        if (kind == "Cc" or kind in ("Zl", "Zp")) and char not in allowed:
            raise ValueError(f"must not contain control characters (U+{ord(char):04X})"
                             + ("" if multiline else "; it is a single line"))
        kept.append(char)
    value = "".join(kept).strip()
    if not value:
        raise BlankTextError("must not be blank")
    if max_length is not None and len(value) > max_length:
        raise ValueError(f"must be at most {max_length} characters")
    return value


def Text(max_length: int = 200, *, multiline: bool = False, blank: bool = False,
         **field: Any) -> Any:
    """A free-text field of at most `max_length` characters (counted before and after
    cleaning, so no input costs more than its bound). `blank=True` for an optional text whose
    absence is "": blank input then becomes "" instead of being refused."""

    def clean(value: str) -> str:
        if blank and not value.strip():
            return ""
        try:
            return clean_text(value, multiline=multiline, max_length=max_length)
        except BlankTextError:
            if blank:
                return ""
            raise

    return Annotated[str, Field(min_length=0 if blank else 1, max_length=max_length, **field),
                     AfterValidator(clean)]


def _in_programme(day: date) -> date:
    if not PROGRAMME_FIRST_YEAR <= day.year <= PROGRAMME_LAST_YEAR:
        raise ValueError(f"must be between {PROGRAMME_FIRST_YEAR}-01-01 and "
                         f"{PROGRAMME_LAST_YEAR}-12-31")
    return day


def _plausible_period(period: str) -> str:
    if not PROGRAMME_FIRST_YEAR <= int(period[:4]) <= PROGRAMME_LAST_YEAR:
        raise ValueError(f"the year must be between {PROGRAMME_FIRST_YEAR} and "
                         f"{PROGRAMME_LAST_YEAR}")
    return period


ProgrammeDate = Annotated[date, AfterValidator(_in_programme)]
# an id a client sends back (a UUID, a TKS or group id): letters, digits and . _ : - only
REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
Ref = Annotated[str, StringConstraints(pattern=REF_PATTERN)]
Period = Annotated[str, StringConstraints(pattern=r"^\d{4}-(0[1-9]|1[0-2])$"),
                   AfterValidator(_plausible_period), Field(examples=["2023-05"])]


def Whole(*, ge: int = 0, le: int = MAX_COUNT, **field: Any) -> Any:
    """A strict integer in [ge, le]. Bounds go here, not in a second Field: pydantic lets the
    annotation's own bound win over the assignment's."""
    return Annotated[int, Field(strict=True, ge=ge, le=le, **field)]


Year = Whole(ge=PROGRAMME_FIRST_YEAR, le=PROGRAMME_LAST_YEAR, examples=[2023])
Rupiah = Whole(le=MAX_RUPIAH, description="whole rupiah")
Count = Whole()
