"""Two instances of every service on the real broker and Postgres (issue 15, several instances):
each pair shares its service's database and consumer group, clients go round-robin over them
(scripts.balancer). Racing commands split over both instances keep the rules; kill -9 of an
instance under load loses nothing and applies nothing twice; a frozen relay leader is replaced
by the other instance and the backlog drains."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from scripts import services as service_processes
from scripts.api_client import Api, ApiError
from scripts.approvals import CHECKER, carried_out, checker_of
from scripts.balancer import RoundRobinTransport, SyncRoundRobinTransport, round_robin_client
from shared.auth import Role, mint_token
from shared.settings import DEV_SIGNING_KEY
from shared.topics import EVALUATION, GROUPS, MENTORING, RECRUITMENT
from tests.groups.groups_support import registration
from tests.recruitment.recruitment_helpers import ADMIN, applicant
from tests.support.databases import create_database
from tests.support.kafka import eventually, kafka_client, partitions

pytestmark = pytest.mark.integration

CAP = 3  # the caseload cap these instances of mentoring run with
REGENCY, PROVINCE = "3201", "32"
FUNDING = {"tranche": 1, "amount": 20_000_000, "disbursed_on": "2023-06-01",
           "budget_year": 2023}
# four eyes (docs/four-eyes.md): another ministry admin grants what ADMIN asked for
CHECKING = {"Authorization": f"Bearer {mint_token(DEV_SIGNING_KEY, CHECKER, Role.ADMIN)}"}


@dataclass
class Cluster:
    running: service_processes.RunningServices
    databases: dict[str, str]
    client: httpx.AsyncClient  # round-robin over the instances, as ADMIN
    urls: dict[str, str]  # each service's virtual base URL for `client`
    bootstrap: str


@pytest.fixture(scope="module")
async def cluster(infra, tmp_path_factory) -> AsyncIterator[Cluster]:
    databases = {name: await create_database(infra, f"mi_{name}")
                 for name in service_processes.SERVICES}
    running = await asyncio.to_thread(
        service_processes.start, infra, tmp_path_factory.mktemp("multi-instance-logs"),
        databases=databases, instances=2,
        extra_env={"TKM_LOG_LEVEL": "WARNING"})
    client, urls = round_robin_client(running.instance_urls, headers=ADMIN, timeout=30)
    try:
        # the cap is a rule of the programme year (shared.rules), adopted through one instance
        # long before the race: both learn of it (LISTEN/NOTIFY) and decide by it
        adopted = await client.put(urls["mentoring"] + "/rules/2023", json={
            "rules": {"assignment": {"caseload_cap": CAP, "allow_same_province": False}},
            "note": "multi-instance test: a small cap to race for"})
        assert adopted.status_code == 200, adopted.text
        yield Cluster(running, databases, client, urls, infra.kafka_bootstrap)
        # the consumer groups are the services' own, which later modules' services join: they
        # must find nothing of this module's left to consume
        await eventually(lambda: _caught_up(databases), timeout=90)
    finally:
        await client.aclose()
        await asyncio.to_thread(running.stop)


async def test_racing_commands_on_two_instances_keep_quota_caseload_and_membership(cluster):
    c, u = cluster.client, cluster.urls
    # recruitment: ten briefed applicants race for the four places of a regency
    answer = await c.post(u["recruitment"] + "/rounds", json={
        "year": 2023, "stage": 1,
        "quotas": [{"province_code": PROVINCE, "regency_code": REGENCY, "places": 4}]})
    assert answer.status_code == 201, answer.text
    round_id = answer.json()["round_id"]
    contenders = await asyncio.gather(*(_briefed(cluster) for _ in range(10)))
    answers = await asyncio.gather(*(
        c.post(f"{u['recruitment']}/rounds/{round_id}/recruitments",
               json={"applicant_id": a, "regency_code": REGENCY}) for a in contenders))
    recruited = [a for a, r in zip(contenders, answers, strict=True) if r.status_code == 201]
    assert len(recruited) == 4, [r.text for r in answers]
    assert {r.status_code for r in answers if r.status_code != 201} == {422}
    fill = (await c.get(f"{u['recruitment']}/rounds/{round_id}")).json()
    assert (fill["places"], fill["filled"], fill["recruited"]) == (4, 4, 4)
    assert _both_answered(cluster, "recruitment", "/rounds/{round_id}/recruitments")

    # groups: eight registrations naming one person race; one group gets that person
    shared = registration(REGENCY)["members"][0]
    bodies = [registration(REGENCY) for _ in range(8)]
    for body in bodies:
        body["members"][0] = shared
    answers = await asyncio.gather(*(c.post(u["groups"] + "/groups", json=b) for b in bodies))
    assert sorted(r.status_code for r in answers) == [201] + [409] * 7, [r.text for r in answers]
    assert all(r.json()["error"]["field"].endswith("nik") for r in answers if r.status_code == 409), \
        [r.text for r in answers]
    assert _both_answered(cluster, "groups", "/groups")

    # mentoring: six funded groups of the regency race for one TKS whose cap is three
    funded = list(await asyncio.gather(*(_funded_group(cluster) for _ in range(6))))
    tks = recruited[0]
    await _known_to_mentoring(cluster, tks, funded)
    answers = await asyncio.gather(*(
        c.post(f"{u['mentoring']}/groups/{g}/mentor",
               json={"tks_id": tks, "assigned_on": "2023-07-01"}) for g in funded))
    assert sorted(r.status_code for r in answers) == [201] * CAP + [422] * (6 - CAP), \
        [r.text for r in answers]
    view = (await c.get(f"{u['mentoring']}/tks/{tks}")).json()
    assert view["caseload"] == CAP and len(view["groups"]) == CAP
    assert _both_answered(cluster, "mentoring", "/groups/{group_id}/mentor")


async def test_kill_9_of_an_instance_under_load_loses_nothing_and_applies_nothing_twice(cluster):
    running = cluster.running
    # the instances that do not publish: a kill of the relay leader is the next test's
    groups_victim = 1 - (await _leader(running, "groups"))
    mentoring_victim = 1 - (await _leader(running, "mentoring"))
    token_before = await _fencing_token(cluster.databases["groups"], "groups")
    api = Api(running.instance_urls, concurrency=6, timeout=20)
    checker = checker_of(api)
    registered: list[str] = []
    funded: list[str] = []
    errors: list[Exception] = []
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            try:
                group_id = (await api.post("groups", "/groups", registration(REGENCY)))[
                    "group_id"]
                registered.append(group_id)
                await api.post("groups", f"/groups/{group_id}/approval")
                asked = await api.post("groups", f"/groups/{group_id}/funding", FUNDING)
                await carried_out(checker, "groups", asked)  # granted, when four eyes ask
                funded.append(group_id)
            except (ApiError, httpx.HTTPError) as exc:
                errors.append(exc)

    workers = [asyncio.create_task(worker()) for _ in range(6)]
    try:
        await eventually(lambda: _at_least(funded, 6), timeout=60)
        # the groups instance mid-request, the mentoring instance mid-batch (GroupFunded)
        running.kill_instance("groups", groups_victim)
        running.kill_instance("mentoring", mentoring_victim)
        killed_at = len(funded)
        await eventually(lambda: _at_least(funded, killed_at + 12), timeout=60)
    finally:
        stop.set()
        await asyncio.gather(*workers)
        await api.close()

    # the killed groups instance comes back on its port meanwhile
    restart = asyncio.create_task(asyncio.to_thread(running.start_instance, "groups",
                                                    groups_victim))
    try:
        # the client saw at most the requests that were in flight on the killed instance: every
        # later request found the other instance (the balancer resends what was never sent)
        assert len(errors) <= 6, errors
        assert all(isinstance(e, ApiError) and e.status == 409 for e in errors), errors
        assert api.transport is not None and api.transport.resent >= 1

        print(f"kill -9 under load: {len(registered)} registered, {len(funded)} funded, "
              f"{len(errors)} client-visible errors, {api.transport.resent} requests resent")

        # every 2xx command is in the read model, whichever instance answered it
        c, u = cluster.client, cluster.urls
        views = await asyncio.gather(*(c.get(f"{u['groups']}/groups/{g}") for g in registered))
        assert all(v.status_code == 200 for v in views)
        status = {v.json()["group_id"]: v.json()["status"] for v in views}
        assert all(status[g] == "funded" for g in funded)

        # every event of groups is on its topic, once per event id unless the relay changed hands
        events = await _drained_events(cluster.databases["groups"], GROUPS)
        on_topic = await _topic_counts(cluster.bootstrap, GROUPS, set(events))
        assert set(on_topic) == set(events)
        if await _fencing_token(cluster.databases["groups"], "groups") == token_before:
            assert set(on_topic.values()) == {1}

        # downstream, with one mentoring instance killed mid-batch: each GroupFunded of these
        # groups applied once (one inbox row, applied), and the read models hold every group
        fundings = {e for e, kind in events.items() if kind == "GroupFunded"}
        for service, table in (("mentoring", "mentored_groups"), ("evaluation", "group_facts")):
            async def applied(service: str = service) -> dict | None:
                seen = await _inbox(cluster.databases[service], fundings)
                return seen if len(seen) == len(fundings) else None

            outcomes = await eventually(applied, timeout=90)
            assert set(outcomes.values()) == {"applied"}
            async with _db(cluster.databases[service]) as conn:
                rows = await conn.fetch(f"SELECT group_id FROM {table} WHERE group_id = ANY($1)",
                                        funded)
            assert sorted(r["group_id"] for r in rows) == sorted(set(funded))
    finally:
        await restart
    answer = await cluster.client.get(running.instance_urls["groups"][groups_victim] + "/readyz")
    assert answer.status_code == 200 and answer.json()["service"] == "groups"


async def test_a_frozen_relay_leader_is_replaced_and_the_backlog_drains(cluster):
    running, db = cluster.running, cluster.databases["recruitment"]
    answer = await cluster.client.post(cluster.urls["recruitment"] + "/rounds", json={
        "year": 2024, "stage": 1,
        "quotas": [{"province_code": PROVINCE, "regency_code": REGENCY, "places": 40}]})
    assert answer.status_code == 201, answer.text
    round_id = answer.json()["round_id"]
    leader = await _leader(running, "recruitment")
    standby = 1 - leader
    token_before = await _fencing_token(db, "recruitment")
    direct = running.instance_urls["recruitment"][standby]
    running.freeze_instance("recruitment", leader)
    try:
        frozen_at = time.monotonic()
        # commands keep coming, through the instance that still answers: 20 TKS recruited
        answers = await asyncio.gather(*(
            cluster.client.post(f"{direct}/rounds/{round_id}/recruitments:batch", json={
                "items": [{"applicant": applicant(2024, REGENCY), "regency_code": REGENCY,
                           "briefing": {"city": "Jakarta", "briefed_on": "2024-03-06"}}
                          for _ in range(4)]}) for _ in range(5)))
        assert {r.status_code for r in answers} == {200}, [r.text for r in answers]
        tks = {i["tks_id"] for r in answers for i in r.json()["results"] if i["status"] == 201}
        assert len(tks) == 20, [r.text for r in answers]

        # the standby takes the lease once it expired (10 s) and sends the backlog
        async def drained() -> bool:
            return await _unsent(db) == 0

        await eventually(drained, timeout=60)
        took = time.monotonic() - frozen_at
        assert await _fencing_token(db, "recruitment") > token_before
        assert await _leader(running, "recruitment") == standby
    finally:
        running.thaw_instance("recruitment", leader)
    assert took < 45
    print(f"frozen relay leader: backlog of 20 TKS drained {took:.1f} s after the freeze")
    events = await _drained_events(db, RECRUITMENT)
    on_topic = await _topic_counts(cluster.bootstrap, RECRUITMENT, set(events))
    assert set(on_topic) == set(events)  # at least once: a late send of the old leader at most
    # the thawed old leader stands by: it cannot take the lease back while it is renewed
    await asyncio.sleep(2)
    assert await asyncio.to_thread(running.relay_leader, "recruitment") == standby

    # downstream: each TksRecruited applied once by evaluation, every TKS in its facts
    recruited = {e for e, kind in events.items() if kind == "TksRecruited"}

    async def consumed() -> dict | None:
        seen = await _inbox(cluster.databases["evaluation"], recruited)
        return seen if len(seen) == len(recruited) else None

    outcomes = await eventually(consumed, timeout=90)
    assert set(outcomes.values()) == {"applied"}
    async with _db(cluster.databases["evaluation"]) as conn:
        contracts = await conn.fetchval("SELECT count(*) FROM tks_contracts "
                                        "WHERE tks_id = ANY($1) AND year = 2024", list(tks))
    assert contracts == len(tks)


# ---- the balancer on its own (no processes) ---------------------------------------------------

def _fake_instances(down: set[int], cut_after_send: set[int] = frozenset()):
    """An inner transport for instances at ports 1, 2, 3: `down` refuse connections,
    `cut_after_send` drop the connection once the request was sent; the others echo their
    port. Returns it and the (port, method) of every request that reached an instance."""
    seen: list[tuple[int, str]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        port = request.url.port
        if port in down:
            raise httpx.ConnectError("refused", request=request)
        seen.append((port, request.method))
        if port in cut_after_send:
            raise httpx.ReadError("connection reset", request=request)
        assert request.headers["Host"] == f"127.0.0.1:{port}"
        return httpx.Response(200, json={"port": port, "body": request.content.decode()})

    return httpx.MockTransport(handle), seen


INSTANCES = {"groups": [f"http://127.0.0.1:{p}" for p in (1, 2, 3)]}


async def test_the_balancer_takes_instances_in_turn_and_passes_other_hosts_through():
    inner, _ = _fake_instances(down=set())
    async with httpx.AsyncClient(transport=RoundRobinTransport(INSTANCES, transport=inner)) as c:
        ports = [(await c.get("http://groups.balanced.invalid/groups")).json()["port"]
                 for _ in range(6)]
        assert ports == [1, 2, 3, 1, 2, 3]
        other = await c.get("http://127.0.0.1:3/readyz")
        assert other.json()["port"] == 3


async def test_the_balancer_resends_only_what_cannot_be_applied_twice():
    # never connected: any request goes to the next instance, and the dead one is passed over
    inner, _ = _fake_instances(down={1})
    transport = RoundRobinTransport(INSTANCES, transport=inner, cooldown_s=60)
    async with httpx.AsyncClient(transport=transport) as c:
        answers = [await c.post("http://groups.balanced.invalid/groups", content=b"x")
                   for _ in range(4)]
    assert [a.json()["port"] for a in answers] == [2, 3, 2, 3]
    assert all(a.json()["body"] == "x" for a in answers)
    assert transport.resent == 1

    # cut off after sending: a POST without a key is the caller's to decide; with one, or a GET,
    # it goes to the next instance
    for method, headers, resent in (("POST", {}, None), ("POST", {"Idempotency-Key": "k1"}, 2),
                                    ("GET", {}, 2)):
        inner, seen = _fake_instances(down=set(), cut_after_send={1})
        transport = RoundRobinTransport(INSTANCES, transport=inner)
        async with httpx.AsyncClient(transport=transport) as c:
            if resent is None:
                with pytest.raises(httpx.ReadError):
                    await c.request(method, "http://groups.balanced.invalid/groups",
                                    content=b"x", headers=headers)
                assert seen == [(1, method)]
            else:
                answer = await c.request(method, "http://groups.balanced.invalid/groups",
                                         content=b"x", headers=headers)
                assert answer.json() == {"port": resent, "body": "x"}
                assert seen == [(1, method), (2, method)] and transport.resent == 1

    # every instance refusing: the last error is raised
    inner, _ = _fake_instances(down={1, 2, 3})
    with httpx.Client(transport=SyncRoundRobinTransport(INSTANCES, transport=inner)) as c:
        with pytest.raises(httpx.ConnectError):
            c.get("http://groups.balanced.invalid/groups")


# ---- helpers -----------------------------------------------------------------------------------

async def _briefed(cluster: Cluster) -> str:
    c, base = cluster.client, cluster.urls["recruitment"]
    r = await c.post(base + "/applicants", json=applicant(2023, REGENCY))
    assert r.status_code == 201, r.text
    applicant_id = r.json()["applicant_id"]
    r = await c.post(f"{base}/applicants/{applicant_id}/screening", json={"passed": True})
    assert r.status_code == 200, r.text
    r = await c.post(f"{base}/applicants/{applicant_id}/briefing",
                     json={"stage": 1, "city": "Jakarta", "briefed_on": "2023-03-06"})
    assert r.status_code == 200, r.text
    return applicant_id


async def _funded_group(cluster: Cluster) -> str:
    c, base = cluster.client, cluster.urls["groups"]
    r = await c.post(base + "/groups", json=registration(REGENCY))
    assert r.status_code == 201, r.text
    group_id = r.json()["group_id"]
    r = await c.post(f"{base}/groups/{group_id}/approval")
    assert r.status_code == 200, r.text
    r = await c.post(f"{base}/groups/{group_id}/funding", json=FUNDING)
    if r.status_code == 202:  # four eyes: another admin grants it
        r = await c.post(f"{base}/approvals/{r.json()['request_id']}/grant", headers=CHECKING)
        assert r.status_code == 200 and r.json()["state"] == "granted", r.text
    else:
        assert r.status_code == 201, r.text
    return group_id


async def _known_to_mentoring(cluster: Cluster, tks: str, groups: list[str]) -> None:
    async def known() -> bool:
        paths = [f"/tks/{tks}", *(f"/groups/{g}" for g in groups)]
        answers = await asyncio.gather(*(cluster.client.get(cluster.urls["mentoring"] + p)
                                         for p in paths))
        return all(a.status_code == 200 for a in answers)

    await eventually(known, timeout=90)


def _both_answered(cluster: Cluster, service: str, route: str) -> bool:
    """Whether every instance of `service` answered a POST of `route` (its HTTP counter)."""
    needle = f'method="POST",route="{route}"'
    with httpx.Client(timeout=5) as client:
        for url in cluster.running.instance_urls[service]:
            lines = [line for line in client.get(url + "/metrics").text.splitlines()
                     if line.startswith("tkm_http_requests_total{") and needle in line]
            if not any(float(line.rsplit(" ", 1)[1]) > 0 for line in lines):
                return False
    return True


async def _leader(running: service_processes.RunningServices, service: str) -> int:
    """The instance leading `service`'s relay, waiting up to a minute for one to."""
    deadline = time.monotonic() + 60
    while (leader := await asyncio.to_thread(running.relay_leader, service)) is None:
        assert time.monotonic() < deadline, f"no instance of {service} leads its relay"
        await asyncio.sleep(0.5)
    return leader


async def _at_least(items: list, n: int) -> bool:
    return len(items) >= n


@contextlib.asynccontextmanager
async def _db(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def _fencing_token(url: str, service: str) -> int:
    async with _db(url) as conn:
        return await conn.fetchval("SELECT fencing_token FROM relay_lease WHERE service = $1",
                                   service) or 0


async def _unsent(url: str) -> int:
    async with _db(url) as conn:
        return await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")


async def _drained_events(url: str, topic: str) -> dict[uuid.UUID, str]:
    """Every event the service's outbox holds for `topic` (id -> type; internal events, such as
    those with member data, never reach the outbox), once the outbox is all sent."""
    async def drained() -> bool:
        return await _unsent(url) == 0

    await eventually(drained, timeout=60)
    async with _db(url) as conn:
        assert await conn.fetchval("SELECT count(*) FROM outbox "
                                   "WHERE failed_reason IS NOT NULL") == 0
        rows = await conn.fetch("SELECT o.event_id, e.event_type FROM outbox o "
                                "JOIN events e USING (event_id) WHERE o.topic = $1", topic)
    return {r["event_id"]: r["event_type"] for r in rows}


async def _topic_counts(bootstrap: str, topic: str, ids: set[uuid.UUID]) -> Counter:
    """How often each of `ids` is on `topic`, read from the beginning up to its end now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                group_id=None, **kafka_client())
    await consumer.start()
    try:
        tps = await partitions(bootstrap, [topic])
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        counts: Counter = Counter()
        deadline = time.monotonic() + 60
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"{topic} not read to its end in 60 s"
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for record in records:
                    event_id = _event_id(record.value)
                    if event_id in ids:
                        counts[event_id] += 1
        return counts
    finally:
        await consumer.stop()


def _event_id(value: bytes) -> uuid.UUID | None:
    try:
        return uuid.UUID(json.loads(value)["event_id"])
    except (ValueError, KeyError, TypeError):
        return None


CONSUMES = {"recruitment": (EVALUATION,), "mentoring": (RECRUITMENT, GROUPS),
            "evaluation": (RECRUITMENT, GROUPS, MENTORING)}
PRODUCER = {RECRUITMENT: "recruitment", GROUPS: "groups", MENTORING: "mentoring",
            EVALUATION: "evaluation"}


async def _caught_up(databases: dict[str, str]) -> bool:
    """Every event of every outbox sent, and in the inbox of each service consuming it."""
    for consumer, topics in CONSUMES.items():
        for topic in topics:
            async with _db(databases[PRODUCER[topic]]) as conn:
                if await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL "
                                       "AND failed_reason IS NULL"):
                    return False
                ids = {r["event_id"] for r in await conn.fetch(
                    "SELECT event_id FROM outbox WHERE topic = $1", topic)}
            if len(await _inbox(databases[consumer], ids)) < len(ids):
                return False
    return True


async def _inbox(url: str, ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    async with _db(url) as conn:
        rows = await conn.fetch("SELECT event_id, outcome FROM inbox WHERE event_id = ANY($1)",
                                list(ids))
    return {r["event_id"]: r["outcome"] for r in rows}
