"""The programme year read back from the services' query APIs (and the topics' offsets), never
echoed from the simulator's input: a lost or doubled event shows as a wrong number."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from rich.table import Table

from scripts.api_client import Api
from shared.regions import province
from shared.topics import CONTRACT_TOPICS


async def collect(api: Api, year: int, bootstrap: str,
                  client: dict[str, Any] | None = None) -> dict[str, Any]:
    """`client`: how the topics' offsets are read (aiokafka security kwargs), by default as the
    admin (`ADMIN_KAFKA_*`, shared.kafka_security): the tallies read every contract topic."""
    (roster, roster_next, vacancies, vacancies_next, groups, funding, people,
     results) = await asyncio.gather(
        api.get_all("recruitment", "/tks", year=year),
        api.get_all("recruitment", "/tks", year=year + 1),
        api.get_all("recruitment", "/vacancies", year=year),
        api.get_all("recruitment", "/vacancies", year=year + 1),
        api.get_all("groups", "/groups", year=year),
        api.get("groups", "/reports/funding", budget_year=year),
        api.get("groups", "/reports/people-reached", year=year),
        api.get_all("evaluation", f"/evaluations/{year}/results"))
    # the report counts of every TKS in a few pages (one GET /tks/{id} a TKS took ~20 s)
    mentoring = await api.get_all("mentoring", "/tks", page_size=1000)
    provinces = sorted({t["province_code"] for t in roster} | {g["province_code"] for g in groups})
    summaries = await asyncio.gather(*(api.get("mentoring", f"/provinces/{p}/summary", year=year)
                                       for p in provinces))
    return {
        "year": year,
        "by_stage": _by_stage(roster, groups, mentoring, results),
        "by_province": _by_province(provinces, roster, funding, people, summaries, results),
        "vacancies_in_year": dict(Counter(v["reason"] for v in vacancies)),
        "next_year": {"renewed": len(roster_next),
                      "vacancies": dict(Counter(v["reason"] for v in vacancies_next)),
                      "replaced": sum(r["decision"] == "replace" for r in results),
                      "continued": sum(r["decision"] == "continue" for r in results)},
        "events_per_topic": await topic_counts(bootstrap, client),
    }


def _by_stage(roster: list, groups: list, mentoring: list, results: list) -> list[dict]:
    decision = {r["tks_id"]: r["decision"] for r in results}
    rows = []
    for stage in sorted({t["stage"] for t in roster}):
        tks = [t for t in roster if t["stage"] == stage]
        ids = {t["tks_id"] for t in tks}
        regencies = {t["regency_code"] for t in tks}
        views = [m for m in mentoring if m["tks_id"] in ids]
        # the funded groups of the regencies this stage's TKS serve; a year-end release
        # unassigns a replaced TKS's groups, so current caseloads would undercount the year
        mentored = [g for g in groups if g["regency_code"] in regencies and g["funded_total"]]
        filed = sum(m["filed"] for m in views)
        on_time = sum(m["on_time"] for m in views)
        overdue = sum(m["overdue"] for m in views)
        rows.append({
            "stage": stage, "tks": len(tks), "regencies": len(regencies),
            "groups_mentored": len(mentored),
            "people_reached": sum(g["member_count"] for g in mentored),
            "rupiah_disbursed": sum(g["funded_total"] for g in mentored),
            "rupiah_accounted": sum(g["accounted_total"] for g in mentored),
            "reports_filed": filed, "reports_overdue": overdue,
            "compliance": round(on_time / (filed + overdue), 3) if filed + overdue else None,
            "continued": sum(decision.get(t) == "continue" for t in ids),
            "replaced": sum(decision.get(t) == "replace" for t in ids),
            "resigned": sum(t["status"] == "resigned" for t in tks),
        })
    return rows


def _by_province(provinces: list, roster: list, funding: list, people: list, summaries: list,
                 results: list) -> list[dict]:
    money = {f["province_code"]: f for f in funding}
    reached = {p["province_code"]: p for p in people}
    decisions: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        decisions[r["province_code"]][r["decision"]] += 1
    tks = Counter(t["province_code"] for t in roster)
    rows = []
    for code, summary in zip(provinces, summaries, strict=True):
        rows.append({
            "province_code": code, "province": province(code).name if province(code) else code,
            "tks": tks[code], "groups_funded": money.get(code, {}).get("groups_funded", 0),
            "people_reached": reached.get(code, {}).get("members_funded", 0),
            "rupiah_disbursed": money.get(code, {}).get("amount_disbursed", 0),
            "rupiah_accounted": money.get(code, {}).get("amount_accounted", 0),
            "compliance": summary.get("compliance_rate"),
            "continued": decisions[code]["continue"], "replaced": decisions[code]["replace"],
        })
    return rows


async def topic_counts(bootstrap: str, client: dict[str, Any] | None = None) -> dict[str, int]:
    """Messages on each contract topic: the sum of its partitions' end offsets."""
    if client is None:
        from shared.kafka_security import kafka_security

        client = kafka_security(service="admin").client_kwargs()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                **client)
    await admin.start()
    await consumer.start()
    try:
        counts = {}
        for described in await admin.describe_topics(list(CONTRACT_TOPICS)):
            partitions = [TopicPartition(described["topic"], p["partition"])
                          for p in described["partitions"]]
            counts[described["topic"]] = sum((await consumer.end_offsets(partitions)).values())
        return dict(sorted(counts.items()))
    finally:
        await consumer.stop()
        await admin.close()


def render(results: dict[str, Any], phases: dict[str, float], console: Console) -> None:
    stage = Table(title=f"Programme {results['year']} by briefing stage (tahap)")
    for col in ("tahap", "TKS", "regencies", "groups mentored", "people reached",
                "Rp disbursed", "Rp accounted (LPJ)", "reports filed", "overdue", "compliance",
                "continued", "replaced", "resigned"):
        stage.add_column(col, justify="right")
    for r in results["by_stage"]:
        stage.add_row(("I", "II", "III")[r["stage"] - 1], f"{r['tks']:,}", f"{r['regencies']:,}",
                      f"{r['groups_mentored']:,}", f"{r['people_reached']:,}",
                      f"{r['rupiah_disbursed']:,}", f"{r['rupiah_accounted']:,}",
                      f"{r['reports_filed']:,}", f"{r['reports_overdue']:,}", _pct(r["compliance"]),
                      f"{r['continued']:,}", f"{r['replaced']:,}", f"{r['resigned']:,}")
    console.print(stage)

    prov = Table(title="By province")
    for col in ("code", "province", "TKS", "groups funded", "people reached", "Rp disbursed",
                "Rp accounted (LPJ)", "compliance", "continued", "replaced"):
        prov.add_column(col, justify="left" if col == "province" else "right")
    for r in results["by_province"]:
        prov.add_row(r["province_code"], r["province"], f"{r['tks']:,}",
                     f"{r['groups_funded']:,}", f"{r['people_reached']:,}",
                     f"{r['rupiah_disbursed']:,}", f"{r['rupiah_accounted']:,}",
                     _pct(r["compliance"]), f"{r['continued']:,}", f"{r['replaced']:,}")
    console.print(prov)

    nxt = results["next_year"]
    console.print(f"Vacancies opened in {results['year']}: " + _reasons(results["vacancies_in_year"]))
    console.print(f"Next year ({results['year'] + 1}): {nxt['renewed']:,} contracts renewed "
                  f"({nxt['continued']:,} continued by evaluation, {nxt['replaced']:,} replaced); "
                  "vacancies opened: " + _reasons(nxt["vacancies"]))
    topics = Table(title="Events per topic")
    topics.add_column("topic")
    topics.add_column("events", justify="right")
    for topic, n in results["events_per_topic"].items():
        topics.add_row(topic, f"{n:,}")
    console.print(topics)
    timing = Table(title="Wall time per phase")
    timing.add_column("phase")
    timing.add_column("seconds", justify="right")
    for phase, seconds in phases.items():
        timing.add_row(phase, f"{seconds:.1f}")
    console.print(timing)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {reason}" for reason, n in sorted(counts.items())) or "none"
