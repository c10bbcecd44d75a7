"""The audit trail's pieces that need no broker or database: the auditor role and its tokens,
no command route of any service accepting an auditor, and row summaries naming no one."""

from __future__ import annotations

import httpx
import pytest

from shared.audit import LOOKUP_TYPE, AuditFilter, summary
from shared.auth import ANY_ROLE, Role, decode_token, mint_token, pseudonym
from shared.settings import DEV_SIGNING_KEY
from tests.support.edge import SERVICES, build_app

AUDITOR = {"Authorization": "Bearer " + mint_token(DEV_SIGNING_KEY, "inspektur@bpk.go.id",
                                                   Role.AUDITOR)}
WRITES = ("post", "put", "patch", "delete")


def test_an_auditor_token_is_minted_and_decoded_without_scope():
    token = mint_token(DEV_SIGNING_KEY, "inspektur@bpk.go.id", "auditor")
    actor = decode_token(DEV_SIGNING_KEY, token)
    assert (actor.role, actor.province_code, actor.tks_id) == (Role.AUDITOR, None, None)
    assert actor.id == f"auditor:{pseudonym(DEV_SIGNING_KEY, 'inspektur@bpk.go.id')}"
    # a province claim does not scope (or unscope) an auditor: it is ignored
    scoped = mint_token(DEV_SIGNING_KEY, "x", Role.AUDITOR, province_code="94")
    assert decode_token(DEV_SIGNING_KEY, scoped).province_code is None
    assert Role.AUDITOR not in ANY_ROLE


@pytest.mark.parametrize("service", SERVICES)
async def test_no_command_route_accepts_an_auditor(service):
    app = build_app(service)
    # a context that is not None: the route's own dependencies decide; one that accepted the
    # auditor would reach its handler and fail on this object (500), not answer 403
    app.state.ctx = object()
    writes = [(method, path) for path, item in app.openapi()["paths"].items()
              for method in item if method in WRITES]
    assert len(writes) >= 2, writes
    answers = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(
            app=app, raise_app_exceptions=False), base_url=f"http://{service}") as client:
        for method, path in writes:
            url = path.replace("{", "x-").replace("}", "")
            answer = await client.request(method, url, json={}, headers=AUDITOR)
            answers[f"{method} {path}"] = answer.status_code
    assert set(answers.values()) == {403}, answers
    # the same routes, read by the auditor: its one reading is the trail
    assert {"/audit", "/audit/actors/{pseudonym}"} <= set(app.openapi()["paths"])


def test_a_published_event_shows_its_decision():
    text = summary("GroupFunded", {
        "group_id": "g1", "tranche": 2, "amount": 7_500_000, "disbursed_on": "2026-03-15",
        "budget_year": 2026, "year": 2026, "province_code": "94", "regency_code": "9401",
        "lpj_due_on": "2026-06-13"})
    assert text.startswith("amount=7500000 tranche=2 budget_year=2026 ")
    assert "province_code=94" in text and "group_id=g1" in text


def test_an_internal_event_shows_only_its_ids_codes_and_dates():
    roster = summary("groups.RosterRecorded", {
        "group_id": "g1", "name": "KUB Maju Jaya", "external_ref": "REF-1",
        "registered_on": "2026-03-01",
        "members": [{"nik": "3201014101900001", "name": "Siti Aminah", "phone": "08123"}]})
    assert roster == "group_id=g1"
    applicant = summary("recruitment.ApplicantRegistered", {
        "applicant_id": "a1", "year": 2026, "nik": "3201014101900001", "full_name": "Budi",
        "sex": "M", "birth_date": "1990-01-01", "education": "s1", "phone": "0812",
        "email": "budi@example.id", "domicile_province_code": "32",
        "domicile_regency_code": "3201"})
    assert applicant == "applicant_id=a1 year=2026"
    unknown = summary("NotRegistered", {"group_id": "g1", "note": "Pak Budi said no"})
    assert unknown == "group_id=g1"


def test_a_long_string_is_not_a_code():
    text = summary("GroupRejected", {"group_id": "g1", "reason_code": "x" * 65})
    assert text == "group_id=g1"


def test_a_lookup_shows_whom_and_why():
    text = summary(LOOKUP_TYPE, {"pseudonym": "ab" * 10, "found": True,
                                 "reason": "Inspektorat case 2026/041"})
    assert text == f"pseudonym={'ab' * 10} found=true reason=Inspektorat case 2026/041"


def test_the_filter_takes_its_values_as_arguments():
    args: list = []
    where = AuditFilter(province="94", types=["GroupFunded"], actor="abc",
                        stream="g'1").where(args)
    assert args == ["94", ["GroupFunded"], "abc",
                    ["g'1", "group-g'1", "tks-g'1", "round-g'1"]]
    assert "g'1" not in where and "split_part(u.actor, ':', 2) = $3" in where
    args = []
    where = AuditFilter(actor="ministry_admin:abc").where(args)
    assert (args, where) == (["ministry_admin:abc"], "true AND u.actor = $1")


def test_a_four_eyes_request_shows_what_was_asked_and_by_whom_but_not_its_command_body():
    text = summary("approvals.ApprovalRequested", {
        "request_id": "r1", "command_type": "fund_group", "target": "group-g1",
        "payload": {"note": "Pak Budi's group"}, "province_code": "94", "year": 2023,
        "amount": 20_000_000, "maker": "mk", "maker_role": "province", "checker_roles": ["admin"]})
    assert text.startswith("amount=20000000")
    for part in ("command_type=fund_group", "target=group-g1", "maker=mk", "maker_role=province"):
        assert part in text
    assert "Budi" not in text and "payload" not in text
    rejected = summary("approvals.ApprovalRejected", {
        "checker": "ck", "checker_role": "admin", "reason_code": "budget_exhausted",
        "note": "Ibu Sari asked", "rejected_at": "2023-03-01T00:00:00Z"})
    assert "reason_code=budget_exhausted" in rejected and "checker=ck" in rejected
    assert "Sari" not in rejected
