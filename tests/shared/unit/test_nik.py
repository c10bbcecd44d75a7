import random
from datetime import date

import pytest
from stdnum.id import nik as stdnum_nik

from shared import regions
from shared.nik import InvalidNikError, NikInfo, make_nik, mask_nik, parse_nik, random_valid_nik

TODAY = date(2025, 6, 15)


def reason_of(nik: str, today: date = TODAY) -> str:
    with pytest.raises(InvalidNikError) as exc:
        parse_nik(nik, today=today)
    assert exc.value.field == "nik"
    assert isinstance(exc.value, ValueError)
    return exc.value.reason


def test_parse_man():
    info = parse_nik("3201011508950001", today=TODAY)
    assert info == NikInfo(
        nik="3201011508950001",
        district_code="320101",
        regency_code="3201",
        province_code="32",
        birth_date=date(1995, 8, 15),
        sex="M",
        serial=1,
    )


def test_parse_woman_day_plus_40():
    info = parse_nik("3201015508950001", today=TODAY)
    assert info.sex == "F"
    assert info.birth_date == date(1995, 8, 15)
    assert parse_nik("3201017112000001", today=TODAY).birth_date == date(2000, 12, 31)
    assert parse_nik("3201014101000001", today=TODAY).birth_date == date(2000, 1, 1)


@pytest.mark.parametrize(
    "nik",
    [
        "6501011508950001",  # Kab. Bulungan, Kalimantan Utara
        "6571011508950001",  # Kota Tarakan
        "9301015508950001",  # Kab. Merauke, Papua Selatan
        "9501011508950001",  # Kab. Jayawijaya, Papua Pegunungan
        "9671011508950001",  # Kota Sorong, Papua Barat Daya
    ],
)
def test_new_regencies_accepted_where_stdnum_rejects(nik):
    assert not stdnum_nik.is_valid(nik)
    assert parse_nik(nik, today=TODAY).regency_code == nik[:4]


def test_stdnum_takes_day_modulo_40_we_do_not():
    nik = "3201018101900001"  # day 81
    assert stdnum_nik.is_valid(nik)
    assert reason_of(nik) == "birth date part is not a real date"


def test_region_must_be_current_district():
    assert reason_of("9999991508950001") == (
        "region part 999999 is not a Kemendagri district, current or former"
    )
    # regency exists, district 99 does not
    assert "320199" in reason_of("3201991508950001")


@pytest.mark.parametrize(
    "nik",
    [
        "3201013202950001",  # 32 Feb
        "3201010013950001",  # month 13
        "3201010008950001",  # day 00
        "3201014008950001",  # day 40 (woman, day 0)
        "3201013208950001",  # day 32
        "3201017208950001",  # day 72
        "3201012902010001",  # 29 Feb in neither 1901 nor 2001
        "3201013104950001",  # 31 April
    ],
)
def test_bad_dates(nik):
    assert reason_of(nik) == "birth date part is not a real date"


@pytest.mark.parametrize("nik", ["", "320101150895000", "32010115089500011", "3201 0115089500"])
def test_wrong_length(nik):
    assert reason_of(nik) == "must be 16 digits"


@pytest.mark.parametrize(
    "nik",
    [
        "320101150895000A",
        "3201.01.150895.01",
        "-201011508950001",
        "３２０１０１１５０８９５０００１",
    ],
)
def test_non_digits(nik):
    assert reason_of(nik) == "must be 16 digits"


def test_surrounding_whitespace_ignored():
    assert parse_nik(" 3201011508950001\n", today=TODAY).nik == "3201011508950001"


def test_serial_0000():
    assert reason_of("3201011508950000") == "serial must not be 0000"
    assert parse_nik("3201011508959999", today=TODAY).serial == 9999


def test_century_relative_to_reference_date():
    assert parse_nik("3201011508250001", today=TODAY).birth_date == date(1925, 8, 15)
    assert parse_nik("3201011506250001", today=TODAY).birth_date == date(2025, 6, 15)  # age 0
    assert parse_nik("3201011606250001", today=TODAY).birth_date == date(1925, 6, 16)
    assert parse_nik("3201011508950001", today=date(2101, 1, 1)).birth_date == date(2095, 8, 15)
    assert parse_nik("3201012902000001", today=TODAY).birth_date == date(2000, 2, 29)


def test_future_birth_date():
    # 29 Feb 2000 is after the reference date and 29 Feb 1900 never existed
    assert reason_of("3201012902000001", today=date(2000, 1, 1)) == "birth date is in the future"


def test_default_today_is_used():
    assert parse_nik("3201011508950001").birth_date == date(1995, 8, 15)


def test_error_and_repr_do_not_leak_the_nik():
    with pytest.raises(InvalidNikError) as exc:
        parse_nik("3201013202950123", today=TODAY)
    assert "3201013202950123" not in str(exc.value)
    info = parse_nik("3201011508950123", today=TODAY)
    assert "3201011508950123" not in repr(info)
    assert "320101**********" in repr(info)


def test_mask():
    assert mask_nik("3201011508950001") == "320101**********"
    assert mask_nik(" 3201011508950001 ") == "320101**********"
    assert mask_nik("12345") == "*" * 16
    assert mask_nik("320101150895000A") == "*" * 16


def test_make_nik_round_trip():
    nik = make_nik("32.01.01", date(1995, 8, 15), "F", 1)
    assert nik == "3201015508950001"
    info = parse_nik(nik, today=TODAY)
    assert (info.district_code, info.birth_date, info.sex, info.serial) == (
        "320101",
        date(1995, 8, 15),
        "F",
        1,
    )
    assert make_nik(info.district_code, info.birth_date, info.sex, info.serial) == nik


def test_make_nik_rejects_bad_input():
    with pytest.raises(regions.UnknownRegionError):
        make_nik("999999", date(1995, 8, 15), "M", 1)
    with pytest.raises(ValueError):
        make_nik("320101", date(1995, 8, 15), "L", 1)
    for serial in (0, 10000):
        with pytest.raises(ValueError):
            make_nik("320101", date(1995, 8, 15), "M", serial)


def test_random_valid_nik_round_trip_over_seeds():
    for seed in range(500):
        nik = random_valid_nik(random.Random(seed), today=TODAY)
        info = parse_nik(nik, today=TODAY)
        assert regions.is_district(info.district_code)
        assert 18 <= (TODAY - info.birth_date).days // 365.25 <= 60


def test_random_valid_nik_constraints():
    for seed in range(100):
        rng = random.Random(seed)
        nik = random_valid_nik(rng, regency_code="9301", sex="F", birth_date=date(2000, 2, 29))
        info = parse_nik(nik)
        assert info.regency_code == "9301"
        assert info.province_code == "93"
        assert info.sex == "F"
        assert info.birth_date == date(2000, 2, 29)


def test_random_valid_nik_is_deterministic_and_covers_map():
    a = [random_valid_nik(random.Random(s), today=TODAY) for s in range(50)]
    b = [random_valid_nik(random.Random(s), today=TODAY) for s in range(50)]
    assert a == b
    rng = random.Random(1)
    provinces = {random_valid_nik(rng, today=TODAY)[:2] for _ in range(2000)}
    assert len(provinces) > 30


def test_random_valid_nik_unknown_regency():
    with pytest.raises(regions.UnknownRegionError):
        random_valid_nik(random.Random(0), regency_code="3299")
