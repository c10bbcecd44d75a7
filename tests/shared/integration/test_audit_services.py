"""The audit trail in another service than groups (the kernel mounts it in every one): a
provincial officer's applicant registration in the recruitment service, whose internal event
holds the applicant's NIK, name, birth date, phone and e-mail, is listed under the applicant's
province with the officer's pseudonym and none of that personal data; the admin's screening of
that applicant takes its province from the stream."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from shared.auth import Role, mint_token, pseudonym
from shared.settings import DEV_SIGNING_KEY
from tests.recruitment.recruitment_helpers import applicant
from tests.support.edge import running

pytestmark = pytest.mark.integration


def bearer(subject: str, role: Role, **scope) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(DEV_SIGNING_KEY, subject, role, **scope)}"}


async def test_recruitment_s_trail_by_province_without_the_applicant_s_data(infra):
    officer = bearer("petugas@papuatengah.go.id", Role.PROVINCE, province_code="94")
    admin = bearer("admin@kemnaker.go.id", Role.ADMIN)
    auditor = bearer("inspektur@bpk.go.id", Role.AUDITOR)
    async with running(infra, "recruitment") as (_, client):
        began = datetime.now(UTC)
        person = applicant(regency="9401")
        registered = await client.post("/applicants", json=person, headers=officer)
        assert registered.status_code == 201, registered.text
        applicant_id = registered.json()["applicant_id"]
        screened = await client.post(f"/applicants/{applicant_id}/screening", headers=admin,
                                     json={"passed": True})
        assert screened.status_code == 200, screened.text
        elsewhere = await client.post("/applicants", json=applicant(regency="3201"),
                                      headers=admin)
        assert elsewhere.status_code == 201, elsewhere.text

        params = {"province": "94", "from": began.isoformat()}
        page = await client.get("/audit", headers=auditor, params=params)
        assert page.status_code == 200, page.text
        rows = page.json()["items"]
        assert [(r["event_type"], r["actor_role"]) for r in rows] == [
            ("recruitment.ApplicantRegistered", "provincial_officer"),
            ("recruitment.ApplicantPassedScreening", "ministry_admin")]
        assert {r["province_code"] for r in rows} == {"94"}
        assert {r["service"] for r in rows} == {"recruitment"}
        assert rows[0]["actor"] == pseudonym(DEV_SIGNING_KEY, "petugas@papuatengah.go.id")
        assert rows[0]["summary"] == f"applicant_id={applicant_id} year=2023"

        exported = await client.get("/audit", headers={**auditor, "Accept": "text/csv"},
                                    params=params)
        assert len(list(csv.DictReader(io.StringIO(exported.text)))) == 2
        personal = [person["nik"], person["full_name"], person["birth_date"], person["phone"],
                    person["email"], "petugas@papuatengah.go.id"]
        for text in (page.text, exported.text):
            leaked = [value for value in personal if value in text]
            assert not leaked, leaked

        # the officer's own province only, and only the admin names the officer
        own = await client.get("/audit", headers=officer, params={"from": began.isoformat()})
        assert [r["province_code"] for r in own.json()["items"]] == ["94", "94"]
        named = await client.get(f"/audit/actors/{rows[0]['actor']}", headers=admin,
                                 params={"reason": "Itjen case 2026/007"})
        assert named.status_code == 200, named.text
        assert named.json()["subject"] == "petugas@papuatengah.go.id"
        assert [r["role"] for r in named.json()["roles"]] == ["provincial_officer"]
