"""Request bodies: reason codes with an optional note, and bounded numbers (422, never a 500)."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from services.groups.commands import (
    MAX_COUNT,
    MAX_RUPIAH,
    DissolveGroup,
    FundGroup,
    RecordProductEvidence,
    RejectGroup,
    ReturnLpj,
    SubmitLpj,
)

FUND = dict(tranche=1, amount=20_000_000, disbursed_on=date(2023, 6, 1), budget_year=2023)
LPJ = dict(tools=1, materials=1, other=0, evidence_count=1)


def test_reasons_are_codes_with_an_optional_note():
    assert RejectGroup(reason_code="members_employed").note is None
    assert ReturnLpj(reason_code="evidence_missing", note="kuitansi hilang").note
    assert DissolveGroup(reason_code="merged").reason_code == "merged"
    with pytest.raises(ValidationError):
        RejectGroup(reason="sudah bekerja")  # free text alone is no longer a reason
    with pytest.raises(ValidationError):
        RejectGroup(reason_code="sudah bekerja")
    with pytest.raises(ValidationError):
        DissolveGroup(reason_code="members_employed")
    with pytest.raises(ValidationError):
        RejectGroup(reason_code="other", note="x" * 501)


def test_the_bounds_are_what_postgres_and_the_budget_can_hold():
    assert MAX_RUPIAH == 10**15 and MAX_COUNT == 2**31 - 1
    FundGroup(**{**FUND, "amount": MAX_RUPIAH})
    SubmitLpj(**{**LPJ, "tools": MAX_RUPIAH, "evidence_count": MAX_COUNT})


@pytest.mark.parametrize("model, base, field, value", [
    (FundGroup, FUND, "amount", MAX_RUPIAH + 1),
    (FundGroup, FUND, "amount", 10**30),
    (FundGroup, FUND, "tranche", 2**31),
    (SubmitLpj, LPJ, "tools", MAX_RUPIAH + 1),
    (SubmitLpj, LPJ, "materials", 10**19),
    (SubmitLpj, LPJ, "other", 10**19),
    (SubmitLpj, LPJ, "evidence_count", 2**31),
    (RecordProductEvidence, dict(product="Telur", evidence_count=1,
                                 recorded_on=date(2023, 9, 1)), "evidence_count", 2**31),
])
def test_huge_numbers_are_refused(model, base, field, value):
    with pytest.raises(ValidationError) as err:
        model(**{**base, field: value})
    assert err.value.errors()[0]["loc"] == (field,)
