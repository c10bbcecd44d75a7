"""One fail-closed scope helper decides which province a read covers."""

import pytest

from shared.auth import Actor, Role
from shared.errors import ForbiddenError
from shared.scope import province_scope

OFFICER = Actor("o", Role.PROVINCE, province_code="32")


def test_a_provincial_officer_reads_its_own_province_whatever_it_asks():
    assert province_scope(OFFICER) == "32"
    assert province_scope(OFFICER, "32") == "32"
    assert province_scope(OFFICER, None, "3201") == "32"


@pytest.mark.parametrize(("province", "regency", "field"), [
    ("33", None, "province_code"), (None, "3301", "regency_code"), ("32", "3301", "regency_code")])
def test_another_province_or_its_regency_is_forbidden(province, regency, field):
    with pytest.raises(ForbiddenError) as refused:
        province_scope(OFFICER, province, regency)
    assert refused.value.field == field


def test_an_officer_without_a_province_reads_nothing_rather_than_everything():
    with pytest.raises(ForbiddenError):
        province_scope(Actor("o", Role.PROVINCE), None)


@pytest.mark.parametrize("role", [Role.ADMIN, Role.AGENCY, Role.TKS])
def test_unscoped_roles_read_what_they_ask(role):
    actor = Actor("a", role, tks_id="t" if role is Role.TKS else None)
    assert province_scope(actor) is None
    assert province_scope(actor, "33", "3301") == "33"


def test_no_service_keeps_a_scope_copy_of_its_own():
    from pathlib import Path

    root = Path(__file__).resolve().parents[3] / "services"
    copies = [p for p in root.glob("*/api.py") if "def _scope" in p.read_text()]
    assert not copies
    asserts = [p for p in root.glob("*/api.py") if "\n        assert " in p.read_text()]
    assert not asserts, "an assert is a 500 in production, and gone under -O"
