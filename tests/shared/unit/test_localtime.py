from datetime import date, datetime, timedelta, UTC

import pytest

from shared.localtime import WIB, WIT, WITA, local_date, local_today, zone_of


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("code", "zone"), [
    ("1101", WIB), ("2171", WIB), ("3201", WIB), ("3674", WIB), ("6171", WIB), ("6271", WIB),
    ("5171", WITA), ("5201", WITA), ("5371", WITA), ("6371", WITA), ("6472", WITA),
    ("6501", WITA), ("7371", WITA), ("7601", WITA),
    ("8171", WIT), ("8271", WIT), ("9471", WIT), ("9171", WIT), ("9601", WIT),
    ("91.71", WIT), ("32", WIB), ("960139", WIT),
])
def test_each_province_has_its_zone(code, zone):
    assert zone_of(code) is zone


@pytest.mark.parametrize("code", ["99", "2201", "00", "4101", ""])
def test_a_code_of_no_province_is_refused(code):
    with pytest.raises(ValueError, match="no Indonesian province"):
        zone_of(code)


def test_the_last_utc_evening_of_january_is_february_in_the_east_only():
    instant = utc("2023-01-31T16:30:00")
    assert local_date("3201", instant) == date(2023, 1, 31)  # 23:30 WIB
    assert local_date("7371", instant) == date(2023, 2, 1)  # 00:30 WITA
    assert local_date("9471", instant) == date(2023, 2, 1)  # 01:30 WIT


@pytest.mark.parametrize(("instant", "wib", "wita", "wit"), [
    ("2023-06-10T16:59:59", 10, 11, 11),  # 23:59:59 WIB
    ("2023-06-10T17:00:00", 11, 11, 11),  # 00:00 WIB
    ("2023-06-10T15:59:59", 10, 10, 11),  # 23:59:59 WITA
    ("2023-06-10T16:00:00", 10, 11, 11),  # 00:00 WITA
    ("2023-06-10T14:59:59", 10, 10, 10),  # 23:59:59 WIT
    ("2023-06-10T15:00:00", 10, 10, 11),  # 00:00 WIT
    ("2023-06-10T23:00:00", 11, 11, 11),  # 06:00 WIB: the UTC date is still the 10th
    ("2023-06-11T00:00:00", 11, 11, 11),  # 07:00 WIB, UTC catches up
])
def test_day_boundaries_in_the_three_zones(instant, wib, wita, wit):
    at = utc(instant)
    assert (local_date("3578", at).day, local_date("5171", at).day,
            local_date("9171", at).day) == (wib, wita, wit)


@pytest.mark.parametrize("hour", range(7))
def test_between_midnight_and_seven_wib_the_local_date_is_a_day_after_utc(hour):
    at = datetime(2023, 3, 1, hour, 30, tzinfo=WIB)
    assert at.astimezone(UTC).date() == date(2023, 2, 28)
    assert local_date("3171", at) == date(2023, 3, 1)


def test_new_year_in_papua_comes_nine_hours_before_utc():
    assert local_date("9471", utc("2022-12-31T15:00:00")) == date(2023, 1, 1)
    assert local_date("9471", utc("2022-12-31T14:59:00")) == date(2022, 12, 31)


def test_local_today_reads_the_given_instant_or_the_clock():
    assert local_today("9171", utc("2023-05-10T23:30:00")) == date(2023, 5, 11)
    real = local_today("3201")
    utc_today = datetime.now(UTC).date()
    assert real in (utc_today, utc_today + timedelta(days=1))


def test_an_instant_without_a_zone_is_refused():
    with pytest.raises(ValueError, match="naive"):
        local_date("3201", datetime(2023, 1, 1, 12))
