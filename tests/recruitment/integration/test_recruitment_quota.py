import asyncio

import pytest

from tests.recruitment.recruitment_helpers import ADMIN

pytestmark = pytest.mark.integration


async def test_twenty_concurrent_recruitments_for_the_last_five_places(recruitment):
    round_id = await recruitment.open_round([{"province_code": "65", "regency_code": "6503",
                                              "places": 7}], year=2028)
    early = [await recruitment.briefed(2028, "6503") for _ in range(2)]
    for applicant_id in early:
        assert (await recruitment.recruit(round_id, applicant_id, "6503")).status_code == 201
    contenders = await asyncio.gather(*(recruitment.briefed(2028, "6503") for _ in range(20)))

    answers = await asyncio.gather(*(recruitment.recruit(round_id, a, "6503")
                                     for a in contenders))

    won = [r for r in answers if r.status_code == 201]
    lost = [r for r in answers if r.status_code != 201]
    assert len(won) == 5
    assert {r.status_code for r in lost} == {422}
    assert all(r.json()["error"]["remaining_quota"] == 0 for r in lost)
    assert sorted(r.json()["remaining_quota"] for r in won) == [0, 1, 2, 3, 4]
    fill = (await recruitment.client.get(f"/rounds/{round_id}", headers=ADMIN)).json()
    assert (fill["places"], fill["filled"], fill["recruited"]) == (7, 7, 7)
    assert fill["quotas"][0]["remaining"] == 0
    rounds = await recruitment.client.get("/rounds", headers=ADMIN, params={"year": 2028})
    assert [(x["round_id"], x["recruited"]) for x in rounds.json()] == [(round_id, 7)]
    roster = await recruitment.client.get("/tks", headers=ADMIN,
                                          params={"year": 2028, "regency_code": "6503"})
    assert roster.json()["total"] == 7
