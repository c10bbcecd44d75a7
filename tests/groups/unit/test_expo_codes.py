"""An expo is recorded by codes: the catalogue's expo and a Kemendagri regency, never typed text."""

from __future__ import annotations

from datetime import date

import pytest

from services.groups.domain import Group
from shared.contracts.groups import GroupShowcasedAtExpo
from shared.errors import DomainError
from tests.groups.unit.test_groups_rules import CONFIG, funded

HELD = date(2023, 11, 20)


def showcased(group: Group) -> GroupShowcasedAtExpo:
    return next(e for e in group.pending if isinstance(e, GroupShowcasedAtExpo))


def test_an_expo_with_a_fixed_place_publishes_its_code_and_regency():
    group = funded()
    group.showcase("gelar_produk_tkm_bali", None, HELD, CONFIG)
    assert showcased(group).model_dump() == {
        "group_id": group.group_id, "expo_code": "gelar_produk_tkm_bali",
        "regency_code": "5171", "held_on": HELD}
    assert group.expos == 1


def test_the_place_given_overrides_the_catalogue_and_is_normalised():
    group = funded()
    group.showcase("pameran_produk_provinsi", "65.01", HELD, CONFIG)
    assert (showcased(group).expo_code, showcased(group).regency_code) == (
        "pameran_produk_provinsi", "6501")


@pytest.mark.parametrize(("expo", "regency", "field"), [
    ("Pameran Produk TKM di rumah Siti 081234567890", "5171", "expo_code"),
    ("", "5171", "expo_code"),
    ("bazar_umkm_daerah", None, "regency_code"),  # no fixed place in the catalogue
    ("bazar_umkm_daerah", "Denpasar, Jl. Melati 3", "regency_code"),
    ("bazar_umkm_daerah", "9999", "regency_code"),
])
def test_anything_but_catalogue_and_regency_codes_is_refused(expo, regency, field):
    group = funded()
    before = len(group.pending)
    with pytest.raises(DomainError) as err:
        group.showcase(expo, regency, HELD, CONFIG)
    assert err.value.field == field
    assert len(group.pending) == before
