"""Personal data typed into any free-text field of the groups API stays in the groups service:
none of it reaches tkm.groups.v1 (issue 10, part 7)."""

from __future__ import annotations

import json
import uuid
from datetime import date

import pytest

from shared.topics import GROUPS
from tests.groups.groups_support import ADMIN, csv_file, fund, member_inputs, registration
from tests.support.kafka import read_topic
from tests.support.personal_data import (
    EMAIL,
    LOCAL_PHONE,
    NIK,
    PHONE,
    TYPED,
    personal_data_in,
)

pytestmark = pytest.mark.integration

CSV = {"Content-Type": "text/csv"}


def test_the_patterns_find_what_was_typed():
    assert personal_data_in(json.dumps({"a": TYPED})) == [NIK, LOCAL_PHONE, PHONE, EMAIL]
    assert personal_data_in(json.dumps({"event_id": "3f2a0812-3456-4789-a081-234567890123",
                                        "amount": 20_000_000, "on": "2023-06-01"})) == []


async def test_personal_data_typed_anywhere_never_reaches_the_topic(groups):
    post, put = groups.client.post, groups.client.put
    members = member_inputs(10, "3201")
    members[0]["name"] = f"Siti {EMAIL}"
    fresh = uuid.uuid4().hex[:8]  # group ids derive from the name; the topic keeps every run's
    body = {**registration("3201"), "name": f"KUB {fresh} {TYPED}", "members": members,
            "external_ref": f"{NIK} {LOCAL_PHONE}"}
    registered = await post("/groups", json=body, headers=ADMIN)
    assert registered.status_code == 201, registered.text
    group_id = registered.json()["group_id"]
    newcomer = member_inputs(1, "3201")[0] | {"name": f"Budi {EMAIL}", "phone": LOCAL_PHONE}
    changed = await put(f"/groups/{group_id}/members", headers=ADMIN,
                        json={"members": [*members[1:], newcomer]})
    assert changed.status_code == 200, changed.text
    assert (await post(f"/groups/{group_id}/approval", headers=ADMIN)).status_code == 200
    funded = await fund(groups.client, group_id, {
        "tranche": 1, "amount": 20_000_000, "disbursed_on": "2023-06-01", "budget_year": 2023})
    assert funded["status"] == "funded", funded
    lpj = await post(f"/groups/{group_id}/lpj", headers=ADMIN, json={
        "tools": 12_000_000, "materials": 8_000_000, "evidence_count": 3})
    returned = await post(f"/groups/{group_id}/lpj/{lpj.json()['report_id']}/return",
                          headers=ADMIN, json={"reason_code": "evidence_missing", "note": TYPED})
    assert returned.status_code == 200, returned.text
    for path, payload in (
            ("bimtek", {"subject": TYPED, "held_on": "2023-09-12"}),
            ("product-evidence", {"product": TYPED, "evidence_count": 2,
                                  "recorded_on": "2023-10-02"})):
        answer = await post(f"/groups/{group_id}/{path}", headers=ADMIN, json=payload)
        assert answer.status_code == 201, answer.text
    # the expo takes codes only: typed text is refused, not published
    for typed in ({"expo_code": TYPED}, {"expo_code": "other", "regency_code": TYPED},
                  {"expo": TYPED, "place": TYPED, "expo_code": "other", "regency_code": "3201"}):
        refused = await post(f"/groups/{group_id}/expos", headers=ADMIN,
                             json={"held_on": "2023-11-20", **typed})
        assert 400 <= refused.status_code < 500, refused.text
    expo = await post(f"/groups/{group_id}/expos", headers=ADMIN,
                      json={"expo_code": "other", "regency_code": "3201", "held_on": "2023-11-20"})
    assert expo.status_code == 201, expo.text
    dissolved = await post(f"/groups/{group_id}/dissolution", headers=ADMIN,
                           json={"reason_code": "other", "note": TYPED})
    assert dissolved.status_code == 200, dissolved.text

    rejected_body = {**registration("3201"), "name": f"KUB {fresh} ditolak {EMAIL}"}
    rejected_id = (await post("/groups", json=rejected_body, headers=ADMIN)).json()["group_id"]
    rejected = await post(f"/groups/{rejected_id}/rejection", headers=ADMIN,
                          json={"reason_code": "members_employed", "note": TYPED})
    assert rejected.status_code == 200, rejected.text

    rows = [[f"REF {NIK}", "2023", "pemula", "3201", "poultry", f"KUB {fresh} CSV {PHONE}", m["nik"],
             f"Ani {EMAIL}", LOCAL_PHONE] for m in member_inputs(10, "3201")]
    imported = await post("/groups/imports", content=csv_file(rows), headers={**ADMIN, **CSV})
    assert imported.status_code == 200, imported.text
    [csv_group] = [r["group_id"] for r in imported.json()["results"]]

    # the service kept what was typed (for its officers) ...
    detail = (await groups.client.get(f"/groups/{group_id}", headers=ADMIN)).json()
    assert TYPED in json.dumps(detail)
    # ... and published every step, as codes and counts
    wanted = {f"group-{group_id}": ["GroupRegistered", "GroupMembersChanged", "GroupApproved",
                                    "GroupFunded", "AccountabilityReportSubmitted",
                                    "AccountabilityReportReturned", "GroupShowcasedAtExpo",
                                    "GroupDissolved"],
              f"group-{rejected_id}": ["GroupRegistered", "GroupRejected"],
              f"group-{csv_group}": ["GroupRegistered"]}

    def mine(records: list) -> list:
        return [r for r in records if r.key and r.key.decode() in wanted]

    records = await read_topic(groups.kafka_bootstrap, GROUPS,
                               until=lambda recs: len(mine(recs)) >= sum(map(len, wanted.values())))
    published: dict[str, list[str]] = {}
    for r in mine(records):
        published.setdefault(r.key.decode(), []).append(json.loads(r.value)["event_type"])
    assert published == wanted
    everything = [r.value.decode() for r in mine(records)]
    typed_values = [NIK, PHONE, LOCAL_PHONE, EMAIL, "Siti", "Budi", "Ani", body["name"],
                    *(m["nik"] for m in [*members, newcomer]), *(row[6] for row in rows)]
    for value in everything:
        assert personal_data_in(value) == [], value
        assert not [t for t in typed_values if t in value], value
    expo_event = next(json.loads(v)["payload"] for v in everything
                      if json.loads(v)["event_type"] == "GroupShowcasedAtExpo")
    assert expo_event == {"group_id": group_id, "expo_code": "other", "regency_code": "3201",
                          "held_on": date(2023, 11, 20).isoformat()}
