"""Four eyes on money (shared.approvals) in a small service of its own, on the real Postgres and
Kafka, through HTTP: a maker cannot fund alone, the checker's grant funds exactly once (a second
grant, a retried grant under one Idempotency-Key and two checkers racing do not fund twice),
rejected and expired requests are never granted, a bulk funding is made and granted item by item,
and pending requests are listed per role and province."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from shared.aggregate import Aggregate, UnitOfWork
from shared.approvals import APPROVALS_SCHEMA, ApprovalRequested, FourEyes, FourEyesRules
from shared.auth import Actor, Role, mint_token, require
from shared.envelope import Event, register
from shared.errors import ConflictError, NotFoundError
from shared.kafka_security import kafka_security
from shared.rules import RuleBook
from shared.service import ServiceContext, ServiceSpec, context, create_app
from shared.settings import DEV_SIGNING_KEY, load_settings
from tests.support.databases import create_database, drop_database

pytestmark = pytest.mark.integration

SERVICE = "evaluation"  # a principal the secured broker knows; the topic is the test's own
RULES_2023 = """
[four_eyes]
expires_after_days = 7
reason_codes = ["wrong_amount", "not_eligible", "duplicate"]

[four_eyes.commands.fund]
makers = ["ministry_admin", "provincial_officer"]
checkers = ["ministry_admin"]
threshold = 0

[four_eyes.commands.change_tranche]
makers = ["provincial_officer"]
checkers = ["ministry_admin", "provincial_officer"]
threshold = 10_000_000
"""


# -- the demo service: pots of money funded tranche by tranche ---------------------------------

class DemoRules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    four_eyes: FourEyesRules = Field(default_factory=FourEyesRules)


@register
class PotFunded(Event):
    event_type = "approvalstest.PotFunded"
    tranche: int
    amount: int


class Pot(Aggregate):
    def __init__(self, stream_id: str):
        super().__init__(stream_id)
        self.tranches: dict[int, int] = {}

    def apply(self, event: Event) -> None:
        assert isinstance(event, PotFunded)
        self.tranches[event.tranche] = event.amount

    def fund(self, tranche: int, amount: int) -> None:
        if tranche in self.tranches:
            raise ConflictError(f"tranche {tranche} is already funded", field="tranche")
        self.record(PotFunded(tranche=tranche, amount=amount))


CARRIED_OUT: list[str] = []  # every run of the executor that committed or not


async def fund_pot(uow: UnitOfWork, target: str, payload: dict[str, Any]) -> dict[str, Any]:
    pot = await uow.load(Pot, target) or Pot(target)
    pot.fund(payload["tranche"], payload["amount"])
    await uow.save(pot)
    return {"pot": target, "funded_total": sum(pot.tranches.values())}


async def carry_out_funding(uow: UnitOfWork, req: ApprovalRequested,
                            checker: Actor) -> dict[str, Any]:
    """The executor: what the checker's grant carries out."""
    CARRIED_OUT.append(req.target)
    return await fund_pot(uow, req.target, req.payload)


class Clock:
    def __init__(self) -> None:
        self.shift = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift


class FundIn(BaseModel):
    pot_id: str
    province_code: str = Field(pattern=r"^\d{2}$")
    tranche: int = Field(ge=1)
    amount: int = Field(ge=1)


class FundMany(BaseModel):
    items: list[FundIn] = Field(min_length=1)


def build(tmp: Path, clock: Clock) -> tuple[ServiceSpec, FourEyes]:
    (tmp / "rules").mkdir()
    (tmp / "rules" / "2023.toml").write_text(RULES_2023)
    (tmp / "migrations").mkdir()
    (tmp / "migrations" / "001_approvals.sql").write_text(APPROVALS_SCHEMA)
    book = RuleBook(SERVICE, DemoRules, tmp / "rules")
    four_eyes = FourEyes(book, lambda rules: rules.four_eyes,
                         {"fund": carry_out_funding, "change_tranche": carry_out_funding},
                         clock=clock)
    router = APIRouter()
    Maker = require(Role.ADMIN, Role.PROVINCE)

    async def fund(ctx: ServiceContext, actor: Actor, item: FundIn,
                   batch_id: uuid.UUID | None = None) -> dict[str, Any]:
        async def decide(uow: UnitOfWork) -> dict[str, Any]:
            target = f"pot-{item.pot_id}"
            command = "fund" if item.tranche == 1 else "change_tranche"
            payload = {"tranche": item.tranche, "amount": item.amount}
            pending = await four_eyes.submit(
                uow, actor, command_type=command, target=target, payload=payload,
                province_code=item.province_code, year=2023, amount=item.amount,
                batch_id=batch_id)
            if pending is not None:
                return pending.out()
            return {"state": "carried_out", "result": await fund_pot(uow, target, payload)}

        return await ctx.command(decide, actor)

    @router.post("/pots/funding")
    async def fund_one(item: FundIn, ctx: ServiceContext = Depends(context),
                       actor: Actor = Depends(Maker)) -> dict[str, Any]:
        return await fund(ctx, actor, item)

    @router.post("/pots/funding/bulk")
    async def fund_many(body: FundMany, ctx: ServiceContext = Depends(context),
                        actor: Actor = Depends(Maker)) -> dict[str, Any]:
        batch_id = uuid.uuid4()
        return {"batch_id": str(batch_id),
                "results": [await fund(ctx, actor, item, batch_id) for item in body.items]}

    @router.get("/pots/{pot_id}")
    async def pot(pot_id: str, ctx: ServiceContext = Depends(context),
                  actor: Actor = Depends(Maker)) -> dict[str, Any]:
        async with ctx.pool.acquire() as conn:
            rows = await ctx.store.read_stream(conn, f"pot-{pot_id}")
        if not rows:
            raise NotFoundError("no such pot", field="pot_id")
        return {"tranches": {e.tranche: e.amount for _, e in rows}}

    spec = ServiceSpec(name=SERVICE, topic=f"tkm.approvalstest-{uuid.uuid4().hex[:8]}.v1",
                       routers=[router, four_eyes.router()], migrations=tmp / "migrations",
                       background=(book.background(),))
    return spec, four_eyes


def auth(subject: str, role: Role, province: str | None = None) -> dict[str, str]:
    return {"Authorization": "Bearer " + mint_token(DEV_SIGNING_KEY, subject, role,
                                                    province_code=province)}


MAKER = auth("maker@kemnaker.go.id", Role.ADMIN)
MAKER_PAPUA = auth("maker@kemnaker.go.id", Role.PROVINCE, "94")  # the same person
CHECKER = auth("checker@kemnaker.go.id", Role.ADMIN)
CHECKER_2 = auth("second@kemnaker.go.id", Role.ADMIN)
PAPUA = auth("officer@papuatengah.go.id", Role.PROVINCE, "94")
PAPUA_2 = auth("officer2@papuatengah.go.id", Role.PROVINCE, "94")
ACEH = auth("officer@aceh.go.id", Role.PROVINCE, "11")


class Demo:
    def __init__(self, client: httpx.AsyncClient, conn: asyncpg.Connection,
                 four_eyes: FourEyes, ctx: ServiceContext, clock: Clock):
        self.client, self.conn, self.four_eyes, self.ctx, self.clock = (
            client, conn, four_eyes, ctx, clock)

    async def ask(self, headers: dict[str, str], tranche: int = 1, amount: int = 20_000_000,
                  province: str = "94", pot: str | None = None) -> dict[str, Any]:
        pot = pot or uuid.uuid4().hex[:10]
        answer = await self.client.post("/pots/funding", headers=headers, json={
            "pot_id": pot, "province_code": province, "tranche": tranche, "amount": amount})
        assert answer.status_code == 200, answer.text
        return {**answer.json(), "pot": pot}

    async def funded(self, pot: str) -> int:
        return await self.conn.fetchval(
            "SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = $2",
            f"pot-{pot}", PotFunded.event_type)

    async def approval_events(self, request_id: str) -> list[tuple[str, str]]:
        rows = await self.conn.fetch("SELECT event_type, actor FROM events WHERE stream_id = $1 "
                                     "ORDER BY stream_version", f"approval-{request_id}")
        return [(r["event_type"].removeprefix("approvals."), r["actor"].split(":")[0])
                for r in rows]


@pytest.fixture(scope="module")
async def demo(infra, tmp_path_factory):
    database_url = await create_database(infra, "t_approvals")
    clock = Clock()
    spec, four_eyes = build(tmp_path_factory.mktemp("approvals"), clock)
    app = create_app(spec, load_settings(SERVICE, database_url=database_url,
                                         kafka_bootstrap_servers=infra.kafka_bootstrap),
                     security=kafka_security(service="admin"))
    conn = await asyncpg.connect(database_url)
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://demo") as client:
                for _ in range(500):
                    if getattr(app.state, "ctx", None) is not None:
                        break
                    await asyncio.sleep(0.02)
                yield Demo(client, conn, four_eyes, app.state.ctx, clock)
    finally:
        await conn.close()
        await drop_database(infra, database_url)


@pytest.fixture(autouse=True)
def _reset_clock(demo):
    demo.clock.shift = timedelta()
    yield
    demo.clock.shift = timedelta()


async def test_a_maker_cannot_fund_alone_and_the_checker_funds_exactly_once(demo):
    asked = await demo.ask(MAKER)
    assert asked["state"] == "pending" and asked["checker_roles"] == ["ministry_admin"]
    request_id, pot = asked["request_id"], asked["pot"]
    assert await demo.funded(pot) == 0  # nothing moved yet

    for who in (MAKER, MAKER_PAPUA):  # the maker, under any of their roles
        refused = await demo.client.post(f"/approvals/{request_id}/grant", headers=who)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["field"] == "checker"
    assert "cannot check their own request" in refused.json()["error"]["reason"]
    refused = await demo.client.post(f"/approvals/{request_id}/grant", headers=PAPUA)
    assert refused.status_code == 403  # funding is checked by admins only
    assert await demo.funded(pot) == 0

    runs = len(CARRIED_OUT)
    granted = await demo.client.post(f"/approvals/{request_id}/grant", headers=CHECKER)
    assert granted.status_code == 200, granted.text
    assert granted.json()["result"] == {"pot": f"pot-{pot}", "funded_total": 20_000_000}
    again = await demo.client.post(f"/approvals/{request_id}/grant", headers=CHECKER_2)
    assert again.status_code == 409
    assert again.json()["error"]["result"] == {"pot": f"pot-{pot}", "funded_total": 20_000_000}
    assert len(CARRIED_OUT) == runs + 1
    assert await demo.funded(pot) == 1
    # each step an event with its actor; the funding in the grant's transaction
    assert await demo.approval_events(request_id) == [
        ("ApprovalRequested", "ministry_admin"), ("ApprovalGranted", "ministry_admin"),
        ("ApprovalCarriedOut", "ministry_admin")]
    same_tx = await demo.conn.fetchval(
        "SELECT count(DISTINCT tx_id) FROM events WHERE stream_id IN ($1, $2) "
        "AND event_type <> 'approvals.ApprovalRequested'", f"approval-{request_id}", f"pot-{pot}")
    assert same_tx == 1
    caused_by = await demo.conn.fetch(
        "SELECT DISTINCT causation_id FROM events WHERE stream_id IN ($1, $2) "
        "AND event_type <> 'approvals.ApprovalRequested'", f"approval-{request_id}", f"pot-{pot}")
    assert [r["causation_id"] for r in caused_by] == [await demo.conn.fetchval(
        "SELECT event_id FROM events WHERE stream_id = $1 AND stream_version = 1",
        f"approval-{request_id}")]
    row = await demo.conn.fetchrow("SELECT * FROM approval_requests WHERE request_id = $1",
                                   uuid.UUID(request_id))
    assert row["state"] == "granted" and row["maker"] != row["checker"]
    assert row["checker_role"] == "ministry_admin"


async def test_a_retried_grant_under_one_key_and_racing_checkers_fund_once(demo):
    asked = await demo.ask(PAPUA)
    key = {"Idempotency-Key": f"grant-{uuid.uuid4()}"}
    first = await demo.client.post(f"/approvals/{asked['request_id']}/grant",
                                   headers={**CHECKER, **key})
    retry = await demo.client.post(f"/approvals/{asked['request_id']}/grant",
                                   headers={**CHECKER, **key})
    assert first.status_code == retry.status_code == 200
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert retry.json() == first.json()
    assert await demo.funded(asked["pot"]) == 1

    raced = await demo.ask(PAPUA)
    answers = await asyncio.gather(*(
        demo.client.post(f"/approvals/{raced['request_id']}/grant", headers=who)
        for who in (CHECKER, CHECKER_2, CHECKER, CHECKER_2)))
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]
    assert await demo.funded(raced["pot"]) == 1


async def test_a_command_refused_at_grant_rolls_the_grant_back(demo):
    pot = uuid.uuid4().hex[:10]
    done = await demo.ask(MAKER, pot=pot, amount=5_000_000)  # tranche 1 of pot
    first = await demo.ask(PAPUA, pot=pot, tranche=1)  # the same tranche asked again
    assert (await demo.client.post(f"/approvals/{done['request_id']}/grant",
                                   headers=CHECKER)).status_code == 200
    refused = await demo.client.post(f"/approvals/{first['request_id']}/grant", headers=CHECKER)
    assert refused.status_code == 409 and refused.json()["error"]["field"] == "tranche"
    assert await demo.approval_events(first["request_id"]) == [
        ("ApprovalRequested", "provincial_officer")]  # still pending, nothing written
    assert await demo.funded(pot) == 1
    rejected = await demo.client.post(f"/approvals/{first['request_id']}/reject",
                                      headers=CHECKER, json={"reason_code": "duplicate"})
    assert rejected.status_code == 200


async def test_a_command_refused_in_a_granted_list_rolls_back_alone(demo):
    """Grants of one list share a transaction, each in a savepoint: the second request for a
    tranche its pot already got in the same list is refused with nothing of it written, the
    grants before and after it stand."""
    pot, other = uuid.uuid4().hex[:10], uuid.uuid4().hex[:10]
    first = await demo.ask(MAKER, pot=pot, amount=5_000_000)
    again = await demo.ask(PAPUA, pot=pot, tranche=1)  # the same tranche asked again
    after = await demo.ask(MAKER, pot=other)
    granted = await demo.client.post("/approvals/grant", headers=CHECKER, json={
        "request_ids": [first["request_id"], again["request_id"], after["request_id"]]})
    assert granted.status_code == 200, granted.text
    results = granted.json()["results"]
    assert [r["status"] for r in results] == [200, 409, 200]
    assert results[1]["error"]["field"] == "tranche"
    assert await demo.approval_events(again["request_id"]) == [
        ("ApprovalRequested", "provincial_officer")]  # still pending, nothing written
    assert await demo.approval_events(after["request_id"]) == [
        ("ApprovalRequested", "ministry_admin"), ("ApprovalGranted", "ministry_admin"),
        ("ApprovalCarriedOut", "ministry_admin")]
    assert (await demo.funded(pot), await demo.funded(other)) == (1, 1)


async def test_rejected_requests_are_never_granted_and_need_a_known_reason(demo):
    asked = await demo.ask(MAKER)
    url = f"/approvals/{asked['request_id']}"
    missing = await demo.client.post(f"{url}/reject", headers=CHECKER, json={})
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "reason_code"
    unknown = await demo.client.post(f"{url}/reject", headers=CHECKER,
                                     json={"reason_code": "dislike"})
    assert unknown.status_code == 422
    assert "wrong_amount, not_eligible, duplicate" in unknown.json()["error"]["reason"]
    own = await demo.client.post(f"{url}/reject", headers=MAKER,
                                 json={"reason_code": "duplicate"})
    assert own.status_code == 403
    assert await demo.approval_events(asked["request_id"]) == [
        ("ApprovalRequested", "ministry_admin")]
    rejected = await demo.client.post(f"{url}/reject", headers=CHECKER, json={
        "reason_code": "wrong_amount", "note": "the tranche is Rp 10.000.000"})
    assert rejected.status_code == 200 and rejected.json()["state"] == "rejected"
    granted = await demo.client.post(f"{url}/grant", headers=CHECKER_2)
    assert granted.status_code == 409 and granted.json()["error"]["state"] == "rejected"
    assert await demo.funded(asked["pot"]) == 0
    shown = (await demo.client.get(url, headers=CHECKER)).json()
    assert (shown["state"], shown["reason_code"], shown["note"]) == (
        "rejected", "wrong_amount", "the tranche is Rp 10.000.000")


async def test_expired_requests_are_swept_in_utc_and_never_granted(demo):
    swept = await demo.ask(MAKER)
    lazy = await demo.ask(MAKER)
    expires_at = datetime.fromisoformat(swept["expires_at"])
    requested_at = await demo.conn.fetchval(
        "SELECT requested_at FROM approval_requests WHERE request_id = $1",
        uuid.UUID(swept["request_id"]))
    assert expires_at - requested_at == timedelta(days=7)
    assert expires_at.utcoffset() == timedelta(0)

    assert await demo.four_eyes.expire_due(demo.ctx.pool, demo.ctx.store,
                                           now=expires_at - timedelta(seconds=1)) == 0
    count = await demo.four_eyes.expire_due(demo.ctx.pool, demo.ctx.store,
                                            now=expires_at + timedelta(seconds=1))
    assert count >= 1  # every earlier test's pending request is past due too
    refused = await demo.client.post(f"/approvals/{swept['request_id']}/grant", headers=CHECKER)
    assert refused.status_code == 409 and refused.json()["error"]["state"] == "expired"
    assert await demo.approval_events(swept["request_id"]) == [
        ("ApprovalRequested", "ministry_admin"), ("ApprovalExpired", "system")]

    # past due but not swept yet: the grant records the expiry instead of funding
    demo.clock.shift = timedelta(days=8)
    fresh = await demo.ask(MAKER)
    demo.clock.shift = timedelta(days=16)
    refused = await demo.client.post(f"/approvals/{fresh['request_id']}/grant", headers=CHECKER)
    assert refused.status_code == 409 and refused.json()["error"]["state"] == "expired"
    assert await demo.approval_events(fresh["request_id"]) == [
        ("ApprovalRequested", "ministry_admin"), ("ApprovalExpired", "ministry_admin")]
    assert await demo.funded(fresh["pot"]) == await demo.funded(lazy["pot"]) == 0


async def test_the_sweeper_expires_what_is_due_in_the_background(demo):
    asked = await demo.ask(PAPUA)
    demo.clock.shift = timedelta(days=7, seconds=1)
    stop = asyncio.Event()
    job = asyncio.create_task(demo.four_eyes.sweeper(interval_s=0.05)(demo.ctx, stop))
    try:
        for _ in range(200):
            state = await demo.conn.fetchval(
                "SELECT state FROM approval_requests WHERE request_id = $1",
                uuid.UUID(asked["request_id"]))
            if state == "expired":
                break
            await asyncio.sleep(0.05)
        assert state == "expired"
    finally:
        stop.set()
        await asyncio.wait_for(job, 5)
    pending = await demo.conn.fetchval(
        "SELECT count(*) FROM approval_requests WHERE state = 'pending' AND expires_at <= $1",
        demo.clock())
    assert pending == 0


async def test_the_threshold_and_the_provincial_checker(demo):
    pot = uuid.uuid4().hex[:10]
    small = await demo.ask(PAPUA, pot=pot, tranche=2, amount=9_999_999)  # under the threshold
    assert small["state"] == "carried_out" and await demo.funded(pot) == 1
    big = await demo.ask(PAPUA, pot=pot, tranche=3, amount=10_000_000)
    assert big["state"] == "pending"
    assert big["checker_roles"] == ["ministry_admin", "provincial_officer"]
    outside = await demo.client.post(f"/approvals/{big['request_id']}/grant", headers=ACEH)
    assert outside.status_code == 403
    granted = await demo.client.post(f"/approvals/{big['request_id']}/grant", headers=PAPUA_2)
    assert granted.status_code == 200, granted.text
    assert await demo.funded(pot) == 2
    # an admin may not ask for a tranche change, nor a provincial officer outside its province
    refused = await demo.client.post("/pots/funding", headers=MAKER, json={
        "pot_id": pot, "province_code": "94", "tranche": 4, "amount": 10_000_000})
    assert refused.status_code == 403
    refused = await demo.client.post("/pots/funding", headers=ACEH, json={
        "pot_id": pot, "province_code": "94", "tranche": 4, "amount": 10_000_000})
    assert refused.status_code == 403
    assert await demo.funded(pot) == 2


async def test_bulk_funding_goes_through_the_same_flow_item_by_item(demo):
    pots = [uuid.uuid4().hex[:10] for _ in range(4)]
    made = await demo.client.post("/pots/funding/bulk", headers=PAPUA, json={"items": [
        {"pot_id": p, "province_code": "94", "tranche": 1, "amount": 20_000_000}
        for p in pots]})
    assert made.status_code == 200, made.text
    batch_id = made.json()["batch_id"]
    ids = [r["request_id"] for r in made.json()["results"]]
    assert [r["state"] for r in made.json()["results"]] == ["pending"] * 4
    listed = (await demo.client.get("/approvals", headers=CHECKER,
                                    params={"batch_id": batch_id})).json()
    assert listed["total"] == 4 and {i["request_id"] for i in listed["items"]} == set(ids)
    # one rejected first; then the batch granted with one unknown id: per-item results
    assert (await demo.client.post(f"/approvals/{ids[1]}/reject", headers=CHECKER,
                                   json={"reason_code": "not_eligible"})).status_code == 200
    unknown = str(uuid.uuid4())
    granted = await demo.client.post("/approvals/grant", headers=CHECKER,
                                     json={"request_ids": [*ids, unknown]})
    assert granted.status_code == 200, granted.text
    body = granted.json()
    assert [r["status"] for r in body["results"]] == [200, 409, 200, 200, 404]
    assert body["granted"] == 3
    assert [await demo.funded(p) for p in pots] == [1, 0, 1, 1]
    self_check = await demo.client.post("/approvals/grant", headers=PAPUA,
                                        json={"request_ids": ids})
    assert [r["status"] for r in self_check.json()["results"]] == [403] * 4


async def test_pending_requests_are_listed_per_role_and_province(demo):
    papua = await demo.ask(MAKER, province="94")
    aceh = await demo.ask(MAKER, province="11")
    tranche = await demo.ask(PAPUA, province="94", tranche=2, amount=15_000_000)

    async def listed(headers: dict[str, str], **params: Any) -> set[str]:
        answer = await demo.client.get("/approvals", headers=headers,
                                       params={"limit": 1000, **params})
        assert answer.status_code == 200, answer.text
        return {i["request_id"] for i in answer.json()["items"]}

    mine = {papua["request_id"], aceh["request_id"], tranche["request_id"]}
    assert mine <= await listed(CHECKER)
    assert mine & await listed(CHECKER, province="11") == {aceh["request_id"]}
    # a provincial officer sees its own province only, and may not ask for another
    assert mine & await listed(PAPUA) == {papua["request_id"], tranche["request_id"]}
    forbidden = await demo.client.get("/approvals", headers=PAPUA, params={"province": "11"})
    assert forbidden.status_code == 403
    hidden = await demo.client.get(f"/approvals/{aceh['request_id']}", headers=PAPUA)
    assert hidden.status_code == 404
    # checkable: what the caller's role checks, not made by the caller
    assert mine & await listed(PAPUA_2, checkable="true") == {tranche["request_id"]}
    assert mine & await listed(PAPUA, checkable="true") == set()
    assert mine & await listed(MAKER, checkable="true") == {tranche["request_id"]}
    assert mine & await listed(CHECKER, checkable="true") == mine
    assert mine & await listed(CHECKER, command_type="change_tranche") == {
        tranche["request_id"]}
    page = (await demo.client.get("/approvals", headers=CHECKER,
                                  params={"limit": 1, "offset": 1})).json()
    assert (page["limit"], page["offset"], len(page["items"])) == (1, 1, 1)
    assert page["total"] >= 3
    every = (await demo.client.get("/approvals", headers=CHECKER,
                                   params={"state": "any", "limit": 1})).json()["total"]
    pending = (await demo.client.get("/approvals", headers=CHECKER,
                                     params={"limit": 1})).json()["total"]
    granted = (await demo.client.get("/approvals", headers=CHECKER,
                                     params={"state": "granted", "limit": 1})).json()["total"]
    assert every >= pending + granted and granted >= 1
    bad = await demo.client.get("/approvals", headers=CHECKER, params={"state": "lost"})
    assert bad.status_code == 422
    agency = await demo.client.get("/approvals", headers=auth("a@bps.go.id", Role.AGENCY))
    assert agency.status_code == 403


async def test_no_personal_data_in_the_events_and_the_read_model_rebuilds(demo):
    """The read table is a projection of the events: replayed into an empty copy, it holds
    the same rows."""
    from shared.approvals import project
    from shared.eventstore import event_from_row, envelope_from_row

    rows = await demo.conn.fetch("SELECT * FROM events WHERE stream_id LIKE 'approval-%' "
                                 "ORDER BY global_position")
    assert rows
    async with demo.conn.transaction():
        await demo.conn.execute("CREATE TEMP TABLE approval_requests "
                                "(LIKE public.approval_requests INCLUDING ALL) ON COMMIT DROP")
        await project(demo.conn, [(envelope_from_row(r), event_from_row(r)) for r in rows])
        rebuilt = await demo.conn.fetch("SELECT * FROM pg_temp.approval_requests "
                                        "ORDER BY request_id")
        live = await demo.conn.fetch("SELECT * FROM public.approval_requests "
                                     "ORDER BY request_id")
        assert [dict(r) for r in rebuilt] == [dict(r) for r in live]
    published = await demo.conn.fetchval(
        "SELECT count(*) FROM outbox o JOIN events e USING (event_id) "
        "WHERE e.stream_id LIKE 'approval-%'")
    assert published == 0  # internal events: never on a topic


async def test_the_audit_trail_shows_the_maker_and_the_checker_of_a_funding(demo):
    asked = await demo.ask(PAPUA)
    assert (await demo.client.post(f"/approvals/{asked['request_id']}/grant",
                                   headers=CHECKER)).status_code == 200
    trail = await demo.client.get("/audit", headers=CHECKER, params={
        "province": "94", "stream": f"approval-{asked['request_id']}"})
    assert trail.status_code == 200, trail.text
    rows = trail.json()["items"]
    assert [(r["event_type"], r["actor_role"], r["province_code"]) for r in rows] == [
        ("approvals.ApprovalRequested", "provincial_officer", "94"),
        ("approvals.ApprovalGranted", "ministry_admin", "94"),
        ("approvals.ApprovalCarriedOut", "ministry_admin", "94")]
    assert rows[0]["actor"] != rows[1]["actor"]
    funded = await demo.client.get("/audit", headers=CHECKER, params={
        "stream": f"pot-{asked['pot']}"})
    assert [r["correlation_id"] for r in funded.json()["items"]] == [rows[1]["correlation_id"]]
