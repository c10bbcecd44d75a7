"""The evaluation policy is a rule of each programme year (issue 17, item 1): 2021 and 2023
shipped, readable and changeable through the API; the close of year Y uses Y's policy as in
force when it closes."""

import uuid
from datetime import date

import pytest

from shared.auth import Role
from shared.contracts import groups as g
from shared.contracts import mentoring as m
from shared.contracts import recruitment as r
from tests.evaluation.integration.evaluation_helpers import (
    ADMIN,
    close_year,
    envelope,
    headers,
    publish,
    running_service,
)
from tests.support.kafka import eventually

pytestmark = pytest.mark.integration


def _poor_year(tks: str, year: int) -> list:
    """A TKS of `year` scoring 20 under the shipped weights: 2 of 12 reports on time, its one
    group active at year end, no LPJ accepted."""
    group, stream = f"grp-{tks}", f"group-grp-{tks}"
    events = [
        envelope(r.TksRecruited(tks_id=tks, round_id=f"round-{year}", year=year, stage=1,
                                province_code="32", regency_code="3273",
                                contract_start=date(year, 1, 1),
                                contract_end=date(year, 12, 31)), f"tks-{tks}"),
        envelope(g.GroupFunded(group_id=group, tranche=1, amount=20_000_000,
                               disbursed_on=date(year, 2, 1), budget_year=year, year=year,
                               province_code="32", regency_code="3273",
                               lpj_due_on=date(year, 8, 1)), stream),
        envelope(m.MentorAssigned(group_id=group, tks_id=tks, province_code="32",
                                  regency_code="3273", assigned_on=date(year, 1, 5)), stream)]
    for month in range(1, 13):
        period = f"{year}-{month:02d}"
        events.append(envelope(
            m.ReportFiled(group_id=group, tks_id=tks, period=period, revenue=900_000,
                          production_units=40, production_unit="kg", members_active=10,
                          new_workers=0, on_time=True) if month <= 2
            else m.ReportOverdue(group_id=group, tks_id=tks, period=period), stream))
    return events


async def test_each_year_is_closed_under_its_own_policy(infra, database_url):
    run = uuid.uuid4().hex[:8]
    tks = {2021: f"tks-2021-{run}", 2023: f"tks-2023-{run}"}
    async with running_service(infra.kafka_bootstrap, database_url) as (_, client):
        shipped = {y: (await client.get(f"/rules/{y}", headers=ADMIN)).json()
                   for y in (2021, 2022, 2023)}
        assert (shipped[2021]["version"], shipped[2021]["actor"]) == (1, "system")
        assert shipped[2021]["rules"]["version"] == "2021.1"
        assert shipped[2023]["rules"]["version"] == "2023.1"
        assert shipped[2022]["year_defined"] == 2021  # 2021's rules until 2023's
        assert shipped[2021]["rules"]["threshold"] == shipped[2023]["rules"]["threshold"] == 60

        for year in (2021, 2023):
            opened = await client.post(f"/evaluations/{year}/open", headers=ADMIN)
            assert opened.status_code == 201, opened.text
            assert opened.json()["policy_version"] == f"{year}.1"
        await publish(infra.kafka_bootstrap, _poor_year(tks[2021], 2021)
                      + _poor_year(tks[2023], 2023))

        # the ministry adopts a lenient 2021 policy while 2021 is open
        lenient = {**shipped[2021]["rules"], "version": "2021.2", "threshold": 15.0}
        refused = await client.put("/rules/2021", json={"rules": lenient},
                                   headers=headers(Role.PROVINCE, province_code="32"))
        assert refused.status_code == 403, refused.text
        broken = await client.put("/rules/2021", headers=ADMIN, json={
            "rules": {**lenient, "threshold": 150}})
        assert (broken.status_code, broken.json()["error"]["field"]) == (422, "rules.threshold")
        adopted = await client.put("/rules/2021", headers=ADMIN,
                                   json={"rules": lenient, "note": "2021 guideline"})
        assert adopted.status_code == 200, adopted.text
        assert adopted.json()["version"] == 2

        async def previewed(year: int):
            page = (await client.get(f"/evaluations/{year}/preview", headers=ADMIN)).json()
            mine = [i for i in page["items"] if i["tks_id"] == tks[year]]
            basis = mine[0]["indicators"][0]["basis"] if mine else None
            return page if basis == {"on_time": 2, "due": 12} else None

        preview_2021 = await eventually(lambda: previewed(2021), timeout=60)
        preview_2023 = await eventually(lambda: previewed(2023), timeout=60)
        assert preview_2021["policy_version"] == "2021.2"  # what the close will use
        assert [(i["score"], i["decision"]) for i in preview_2021["items"]] == [(20.0, "continue")]
        assert [(i["score"], i["decision"]) for i in preview_2023["items"]] == [(20.0, "replace")]

        closed = {}
        for year in (2021, 2023):
            closed[year] = await close_year(client, year)
        assert [(o["tks_id"], o["decision"], o["policy_version"])
                for o in closed[2021]["outcomes"]] == [(tks[2021], "continue", "2021.2")]
        assert [(o["tks_id"], o["decision"], o["policy_version"])
                for o in closed[2023]["outcomes"]] == [(tks[2023], "replace", "2023.1")]
        assert closed[2021]["summary"]["policy_version"] == "2021.2"
        assert closed[2021]["summary"]["policy"]["threshold"] == 15.0
        assert closed[2023]["summary"]["policy"]["threshold"] == 60.0
