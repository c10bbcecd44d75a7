"""Personal data typed into any free-text field of the mentoring API stays in the mentoring
service: none of it reaches tkm.mentoring.v1 (issue 10, part 7)."""

from __future__ import annotations

import json
from datetime import date

import pytest

from tests.support.personal_data import (
    EMAIL,
    LOCAL_PHONE,
    NIK,
    PHONE,
    TYPED,
    personal_data_in,
)
from tests.mentoring.integration.mentoring_helpers import ADMIN, fresh, report, tks_headers

pytestmark = pytest.mark.integration


async def test_personal_data_typed_anywhere_never_reaches_the_topic(mentoring):
    tks, groups = fresh("tks"), [fresh("grp") for _ in range(3)]
    await mentoring.recruit(tks, "3201")
    for g in groups:
        await mentoring.fund(g, "3201", date(2023, 3, 1))
    await mentoring.known(tks=(tks,), groups=tuple(groups))
    for g in groups:
        assert (await mentoring.assign(g, tks, date(2023, 3, 1))).status_code == 201
    post, put = mentoring.client.post, mentoring.client.put
    as_tks = tks_headers(tks)

    # the unit is a code: typed text is refused, not published
    for unit in (TYPED, NIK, LOCAL_PHONE, EMAIL, "karung"):
        refused = await post(f"/groups/{groups[0]}/reports", headers=as_tks,
                             json=report("2023-04", production_unit=unit))
        assert refused.status_code == 422, refused.text
    refused = await post(f"/groups/{groups[0]}/reports", headers=ADMIN,
                         json=report("2023-04", tks_id=NIK))
    assert 400 <= refused.status_code < 500, refused.text

    filed = await post(f"/groups/{groups[0]}/reports", headers=as_tks,
                       json=report("2023-04", problems=TYPED))
    assert filed.status_code == 201, filed.text
    amended = await put(f"/groups/{groups[0]}/reports/2023-04", headers=as_tks,
                        json=report("2023-04", problems=f"{TYPED} (lagi)", revenue=1_000,
                                    production_unit="porsi"))
    assert amended.status_code == 200, amended.text
    batch = await post("/reports/batch", headers=as_tks, json={"reports": [
        {**report("2023-05", problems=TYPED), "group_id": g} for g in groups[1:]]})
    assert batch.status_code == 200 and batch.json()["filed"] == 2, batch.text

    # the service kept the problems (for the ministry) ...
    view = (await mentoring.client.get(f"/groups/{groups[0]}", headers=ADMIN)).json()
    assert NIK in json.dumps(view)
    # ... and published the reports with codes and figures only
    keys = {f"group-{g}" for g in groups}  # other tests' services publish on the topic too

    def mine(seen: list[dict]) -> list[dict]:
        return [s for s in seen if s["key"] in keys]

    published = mine(await mentoring.published(until=lambda seen: len(
        [s for s in mine(seen) if s["type"].startswith("Report")]) >= 4))
    reports = [s for s in published if s["type"].startswith("Report")]
    assert sorted((s["type"], s["key"]) for s in reports) == sorted([
        ("ReportFiled", f"group-{groups[0]}"), ("ReportAmended", f"group-{groups[0]}"),
        ("ReportFiled", f"group-{groups[1]}"), ("ReportFiled", f"group-{groups[2]}")])
    assert {s["payload"]["production_unit"] for s in reports} == {"kg", "porsi"}
    assert all(json.loads(s["raw"])["schema_version"] == 2 for s in reports)
    assert {s["type"] for s in published} == {"MentorAssigned", "ReportFiled", "ReportAmended"}
    for s in published:
        raw = s["raw"].decode()
        assert personal_data_in(raw) == [], raw
        assert not [t for t in (NIK, PHONE, LOCAL_PHONE, EMAIL, "Siti", "problems") if t in raw]
