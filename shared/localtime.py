"""One time-zone rule for every service: a deadline or "today" is decided in the time zone of the
regency concerned, never in UTC.

Indonesia keeps three zones (Keppres 41/1987), all without daylight saving:

- WIB, UTC+7, Asia/Jakarta: Sumatra and its islands (provinces 11-19, 21 Kepulauan Riau), Java
  and Banten (31-36), Kalimantan Barat (61) and Kalimantan Tengah (62).
- WITA, UTC+8, Asia/Makassar: Bali, NTB, NTT (51-53), Kalimantan Selatan, Timur, Utara (63-65),
  the six Sulawesi provinces (71-76).
- WIT, UTC+9, Asia/Jayapura: Maluku (81), Maluku Utara (82) and every Papua province, under the
  numbering before 2022 (91 Papua Barat, 94 Papua) and after it (91-96: Papua, Papua Barat,
  Papua Selatan, Papua Tengah, Papua Pegunungan, Papua Barat Daya).

The zone follows from the province, the first two digits of a Kemendagri regency (or district,
village, NIK region) code; no province is split between two zones.
"""

from __future__ import annotations

from datetime import date, datetime, UTC
from zoneinfo import ZoneInfo

WIB = ZoneInfo("Asia/Jakarta")
WITA = ZoneInfo("Asia/Makassar")
WIT = ZoneInfo("Asia/Jayapura")

_WIB_PROVINCES = {"11", "12", "13", "14", "15", "16", "17", "18", "19", "21",
                  "31", "32", "33", "34", "35", "36", "61", "62"}
_WITA_PROVINCES = {"51", "52", "53", "63", "64", "65", "71", "72", "73", "74", "75", "76"}
_WIT_PROVINCES = {"81", "82", "91", "92", "93", "94", "95", "96"}

ZONES: dict[str, ZoneInfo] = ({p: WIB for p in _WIB_PROVINCES}
                              | {p: WITA for p in _WITA_PROVINCES}
                              | {p: WIT for p in _WIT_PROVINCES})


def zone_of(regency_code: str) -> ZoneInfo:
    """The zone of a province, regency or finer Kemendagri code (dots allowed: "91.71")."""
    province = regency_code.replace(".", "")[:2]
    try:
        return ZONES[province]
    except KeyError:
        raise ValueError(f"no Indonesian province {province!r}: the zone of {regency_code!r} "
                         "is unknown") from None


def _aware(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError("a naive datetime has no place on the time line: give its zone (UTC)")
    return instant


def local_date(regency_code: str, instant: datetime) -> date:
    """The calendar date in the regency at that instant."""
    return _aware(instant).astimezone(zone_of(regency_code)).date()


def local_today(regency_code: str, now: datetime | None = None) -> date:
    """Today in the regency (at `now`, default the current instant)."""
    return local_date(regency_code, now or datetime.now(UTC))
