"""Evaluation outcomes consumed from tkm.evaluation.v1 drive the contract lifecycle."""

import json

import pytest

from shared.contracts.evaluation import Indicator, TksEvaluated
from shared.envelope import encode
from shared.topics import EVALUATION, RECRUITMENT
from tests.recruitment.recruitment_helpers import ADMIN, envelope
from tests.support.kafka import eventually, produce, read_topic

pytestmark = pytest.mark.integration


def evaluated(tks_id: str, decision: str, score: float) -> TksEvaluated:
    return TksEvaluated(
        year=2029, tks_id=tks_id, province_code="65", regency_code="6504", score=score,
        decision=decision, policy_version="test-1",
        indicators=(Indicator(name="reports_on_time", value=score, weight=1.0,
                              contribution=score),))


async def test_continue_twice_renews_once_and_replace_releases_with_a_vacancy(recruitment):
    client = recruitment.client
    round_id = await recruitment.open_round([{"province_code": "65", "regency_code": "6504",
                                              "places": 2}], year=2029)
    keeper = await recruitment.briefed(2029, "6504")
    leaver = await recruitment.briefed(2029, "6504")
    for tks_id in (keeper, leaver):
        assert (await recruitment.recruit(round_id, tks_id, "6504")).status_code == 201

    twice = encode(envelope(evaluated(keeper, "continue", 82.5), f"tks-{keeper}"))
    replaced = encode(envelope(evaluated(leaver, "replace", 41.0), f"tks-{leaver}"))
    # one key, one partition: when the replacement is applied the duplicates were handled
    key = f"tks-{keeper}".encode()
    await produce(recruitment.kafka, EVALUATION, [(key, twice), (key, twice), (key, replaced)])

    async def leaver_released():
        r = await client.get(f"/tks/{leaver}", headers=ADMIN)
        return r.json() if r.json()["contracts"][0]["status"] == "released" else None

    record = await eventually(leaver_released, timeout=30)
    assert record["contracts"][0]["end_reason"] == "evaluation"
    assert record["contracts"][0]["ended_on"] == "2029-12-31"

    kept = (await client.get(f"/tks/{keeper}", headers=ADMIN)).json()["contracts"]
    assert [(c["year"], c["status"], c["contract_start"], c["contract_end"], c["regency_code"])
            for c in kept] == [
        (2029, "renewed", "2029-03-06", "2029-12-31", "6504"),
        (2030, "active", "2030-01-01", "2030-12-31", "6504")]
    assert kept[0]["evaluation_score"] == 82.5
    roster = await client.get("/tks", headers=ADMIN, params={"year": 2030, "regency_code": "6504"})
    assert [x["tks_id"] for x in roster.json()["items"]] == [keeper]

    vacancies = await client.get("/vacancies", headers=ADMIN,
                                 params={"year": 2030, "regency_code": "6504"})
    [vacancy] = vacancies.json()["items"]
    assert (vacancy["replaces_tks_id"], vacancy["reason"], vacancy["province_code"]) == (
        leaver, "replacement", "65")

    def events(records, tks_id):
        return [e for e in map(lambda x: json.loads(x.value), records)
                if e["payload"].get("tks_id") == tks_id
                or e["payload"].get("replaces_tks_id") == tks_id]

    records = await read_topic(recruitment.kafka, RECRUITMENT, until=lambda recs: any(
        e["event_type"] == "VacancyOpened" for e in events(recs, leaver)))
    renewals = [e for e in events(records, keeper) if e["event_type"] == "TksContractRenewed"]
    assert len(renewals) == 1
    assert renewals[0]["payload"]["contract_start"] == "2030-01-01"
    assert renewals[0]["payload"]["year"] == 2030
    released = [e["payload"] for e in events(records, leaver) if e["event_type"] == "TksReleased"]
    assert [(p["reason"], p["effective_date"]) for p in released] == [("evaluation", "2029-12-31")]
