import dataclasses

import pytest

from shared import regions
from shared.regions import Province, Regency, UnknownRegionError

NEW_PROVINCES = {
    "65": "Kalimantan Utara",
    "93": "Papua Selatan",
    "94": "Papua Tengah",
    "95": "Papua Pegunungan",
    "96": "Papua Barat Daya",
}


def test_counts_match_current_kemendagri_map():
    regs = regions.regencies()
    assert len(regions.provinces()) == 38
    assert len(regs) == 514
    assert sum(not r.is_city for r in regs) == 416
    assert sum(r.is_city for r in regs) == 98
    assert len(regions.districts()) == 7285


def test_codes_are_well_formed_and_sorted():
    provs = regions.provinces()
    assert [p.code for p in provs] == sorted(p.code for p in provs)
    assert all(len(p.code) == 2 and p.code.isdigit() for p in provs)
    for r in regions.regencies():
        assert len(r.code) == 4 and r.code.isdigit()
        assert r.province_code == r.code[:2]
        assert regions.province(r.province_code) is not None
        assert 1 <= int(r.code[2:]) <= 99 and int(r.code[2:]) != 70
    assert all(len(d) == 6 and regions.regency(d[:4]) for d in regions.districts())


def test_is_city_follows_numbering_and_name():
    for r in regions.regencies():
        assert r.is_city == (int(r.code[2:]) >= 71)
        assert r.is_city == r.name.startswith("Kota ")


@pytest.mark.parametrize(("code", "name"), sorted(NEW_PROVINCES.items()))
def test_new_provinces_present(code, name):
    assert regions.province(code) == Province(code, name)
    assert regions.regencies(code)


def test_new_regencies_present():
    assert regions.regency("6501") == Regency("6501", "Kabupaten Bulungan", "65", False)
    assert regions.regency("6571") == Regency("6571", "Kota Tarakan", "65", True)
    assert regions.regency("9301") == Regency("9301", "Kabupaten Merauke", "93", False)
    assert regions.regency("9671") == Regency("9671", "Kota Sorong", "96", True)
    assert [r.code for r in regions.regencies("65")] == ["6501", "6502", "6503", "6504", "6571"]
    assert regions.is_district("650101")
    assert regions.is_district("930101")


def test_lookups_and_dotted_codes():
    assert regions.province("32") == Province("32", "Jawa Barat")
    assert regions.regency("32.76") == regions.regency("3276")
    assert regions.regency("3276").name == "Kota Depok"
    assert regions.is_district("32.01.01") and regions.is_district("320101")
    assert regions.province_of("32.01") == "32"
    assert regions.districts("32.76") == regions.districts("3276")
    assert len(regions.districts("3276")) == 11


@pytest.mark.parametrize("code", ["", "99", "3", "abc", "320", "32011", "3201011"])
def test_unknown_codes(code):
    assert regions.province(code) is None
    assert regions.regency(code) is None
    assert not regions.is_district(code)


def test_unknown_district_in_known_regency():
    assert regions.regency("3201") is not None
    assert not regions.is_district("320199")
    assert not regions.is_district("999999")


def test_province_of_unknown_raises_value_error():
    with pytest.raises(UnknownRegionError):
        regions.province_of("3299")
    with pytest.raises(ValueError):
        regions.province_of("32")  # a province, not a regency


def test_filters_reject_unknown_parent():
    with pytest.raises(UnknownRegionError):
        regions.regencies("99")
    with pytest.raises(UnknownRegionError):
        regions.districts("3299")


def test_regencies_by_province_partition_all():
    by_province = [r for p in regions.provinces() for r in regions.regencies(p.code)]
    assert by_province == regions.regencies()


def test_values_are_frozen_and_lists_are_copies():
    p = regions.provinces()[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "x"  # type: ignore[misc]
    regions.provinces().clear()
    regions.districts("3201").clear()
    assert len(regions.provinces()) == 38
    assert regions.districts("3201")
