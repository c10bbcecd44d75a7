"""Bulk registration from a labour office's CSV file."""

from __future__ import annotations

import asyncpg
import pytest

from shared.auth import Role
from tests.groups.groups_support import ADMIN, auth, csv_file, csv_rows, registration

pytestmark = pytest.mark.integration
CSV = {"Content-Type": "text/csv"}


async def upload(groups, body: bytes, headers: dict = ADMIN):
    return await groups.client.post("/groups/imports", content=body, headers={**headers, **CSV})


async def test_bad_rows_are_reported_and_the_good_groups_registered_once(groups):
    taken = registration("3201")
    assert (await groups.client.post("/groups", json=taken, headers=ADMIN)).status_code == 201
    good_a, good_b = csv_rows("Upload Alpha"), csv_rows("Upload Beta", regency_code="6501")
    bad_nik = csv_rows("Upload Gamma")
    bad_nik[3][6] = "0000000000000000"                 # row 25
    in_other_group = csv_rows("Upload Delta")
    in_other_group[2][6] = taken["members"][5]["nik"]  # row 34: already in an active group
    small = csv_rows("Upload Epsilon", members=4)      # rows 42-45
    body = csv_file(good_a + good_b + bad_nik + in_other_group + small)

    report = (await upload(groups, body)).json()
    assert (report["rows"], report["groups"]) == (44, 5)
    assert (report["registered"], report["already_registered"], report["refused"]) == (2, 0, 3)
    assert [(e["row"], e["field"]) for e in report["errors"]] == [
        (25, "member_nik"), (34, "member_nik"), (42, "group_name")]
    assert taken["name"] in report["errors"][1]["reason"]
    statuses = {r["group_name"]: r["status"] for r in report["results"]}
    assert statuses == {"Upload Alpha": "registered", "Upload Beta": "registered",
                        "Upload Gamma": "refused", "Upload Delta": "refused",
                        "Upload Epsilon": "refused"}
    registered_ids = {r["group_id"] for r in report["results"] if r["status"] == "registered"}

    again = (await upload(groups, body)).json()
    assert (again["registered"], again["already_registered"], again["refused"]) == (0, 2, 3)
    assert await _streams(groups.database_url, registered_ids) == {
        f"group-{g}": 2 for g in registered_ids}  # GroupRegistered + roster, once each

    listed = await groups.client.get("/groups", params={"regency_code": "6501",
                                                        "page_size": 500}, headers=ADMIN)
    beta = [g for g in listed.json()["items"] if g["name"] == "Upload Beta"]
    assert len(beta) == 1 and beta[0]["member_count"] == 10
    assert beta[0]["external_ref"] == "REF-Upload Beta"


async def test_a_provincial_officer_uploads_only_for_its_province(groups):
    body = csv_file(csv_rows("Upload Zeta", regency_code="3201")
                    + csv_rows("Upload Eta", regency_code="6501"))
    report = (await upload(groups, body, auth(Role.PROVINCE, "65"))).json()
    statuses = {r["group_name"]: r["status"] for r in report["results"]}
    assert statuses == {"Upload Zeta": "refused", "Upload Eta": "registered"}
    assert report["errors"][0]["field"] == "province_code"


async def test_an_unreadable_file_is_a_400_and_multipart_is_a_415(groups):
    missing = await upload(groups, b"year,group_name\n2023,KUB\n")
    assert (missing.status_code, missing.json()["error"]["field"]) == (400, "header")
    empty = await upload(groups, b"")
    assert empty.status_code == 400
    multipart = await groups.client.post("/groups/imports", files={"file": ("g.csv", b"x")},
                                         headers=ADMIN)
    assert multipart.status_code == 415


async def _streams(database_url: str, group_ids: set[str]) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT stream_id, count(*) AS n FROM events "
                                "WHERE stream_id = ANY($1) GROUP BY stream_id",
                                [f"group-{g}" for g in group_ids])
        return {r["stream_id"]: r["n"] for r in rows}
    finally:
        await conn.close()
