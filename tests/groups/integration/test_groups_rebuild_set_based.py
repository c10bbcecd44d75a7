"""The set-based rebuild of the groups read models (a page of events across transactions,
applied in layers) gives exactly what the live projector wrote event by event, for every event
type; and it reads the event store in bounded pages, never the whole history at once."""

from __future__ import annotations

import dataclasses
import random
import uuid
from datetime import date
from pathlib import Path

import asyncpg
import pytest

import services.groups
from services.groups.domain import (
    BimtekAttended,
    MemberRecord,
    ProductEvidenceRecorded,
    ReasonNoted,
    RosterChanged,
    RosterRecorded,
)
from services.groups.projections import READ_MODELS, REBUILD, project_read_models
from shared.contracts.groups import (
    AccountabilityReportAccepted,
    AccountabilityReportReturned,
    AccountabilityReportSubmitted,
    GroupAdvanced,
    GroupApproved,
    GroupDissolved,
    GroupFunded,
    GroupRegistered,
    GroupRejected,
    GroupShowcasedAtExpo,
)
from shared.eventstore import EventStore, migrate
from shared.projections import rebuild_plan
from tests.shared.integration.rebuild_support import leftovers, table_rows, table_shapes

pytestmark = pytest.mark.integration
MIGRATIONS = Path(services.groups.__file__).parent / "migrations"


def _member(rng: random.Random) -> MemberRecord:
    return MemberRecord(nik=f"{rng.randrange(10 ** 15, 10 ** 16)}", name="Anggota",
                        phone=None, birth_date="1990-01-01")


def _history(group_id: str, n: int, rng: random.Random) -> list[list]:
    """A group's commands, each a list of the events one transaction saved."""
    province = f"{11 + n % 4}"
    regency = f"{province}{1 + n % 3:02d}"
    members = tuple(_member(rng) for _ in range(3 + n % 3))
    year = 2031

    def funded(tranche: int, amount: int) -> GroupFunded:
        return GroupFunded(group_id=group_id, tranche=tranche, amount=amount,
                           disbursed_on=date(year, 2 + tranche, 1), budget_year=year,
                           year=year, province_code=province, regency_code=regency,
                           lpj_due_on=date(year, 8 + tranche, 1))

    def report(r: str, tools: int) -> AccountabilityReportSubmitted:
        return AccountabilityReportSubmitted(group_id=group_id, report_id=r, tools=tools,
                                             materials=1_000_000, other=0,
                                             remaining_balance=500_000, evidence_count=2)

    txs: list[list] = [
        [GroupRegistered(group_id=group_id, year=year, stage="pemula", province_code=province,
                         regency_code=regency, business_type="kuliner",
                         member_count=len(members)),
         RosterRecorded(group_id=group_id, name=f"KUB {n}", registered_on=date(year, 1, 5),
                        members=members)]]
    if n % 7 == 6:  # rejected before approval
        return [*txs, [GroupRejected(group_id=group_id, reason_code="other"),
                       ReasonNoted(group_id=group_id, subject="rejection", note="tidak")]]
    if n % 5 == 1:
        txs.append([RosterChanged(group_id=group_id, added=(_member(rng),),
                                  removed=(members[0].nik,), changed_on=date(year, 1, 20))])
    txs.append([GroupApproved(group_id=group_id)])
    txs.append([funded(1, 10_000_000 + 1_000 * n)])
    first, second = f"lpj-{group_id}-1", f"lpj-{group_id}-2"
    txs.append([report(first, 2_000_000)])
    if n % 3 == 0:
        txs.append([AccountabilityReportReturned(group_id=group_id, report_id=first,
                                                 reason_code="evidence_missing"),
                    ReasonNoted(group_id=group_id, subject="lpj_return", report_id=first,
                                note="bukti kurang")])
        txs.append([report(second, 2_500_000)])
        first = second
    txs.append([AccountabilityReportAccepted(group_id=group_id, report_id=first)])
    txs.append([BimtekAttended(group_id=group_id, subject="pemasaran",
                               held_on=date(year, 4, 2))])
    txs.append([ProductEvidenceRecorded(group_id=group_id, product="keripik",
                                        evidence_count=3, recorded_on=date(year, 5, 2))])
    txs.append([GroupShowcasedAtExpo(group_id=group_id, expo_code="other",
                                     regency_code=regency, held_on=date(year, 6, 2))])
    if n % 2 == 0:
        txs.append([funded(2, 5_000_000)])
        txs.append([GroupAdvanced(group_id=group_id, from_stage="pemula", to_stage="lanjutan")])
    if n % 4 == 3:
        txs.append([GroupDissolved(group_id=group_id, reason_code="members_left"),
                    ReasonNoted(group_id=group_id, subject="dissolution", note="bubar")])
    return txs


async def test_a_set_based_rebuild_in_tiny_pages_equals_the_live_tables(database_url):
    rng = random.Random(16)
    store = EventStore("groups")
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "groups", MIGRATIONS)
        # 24 groups' commands interleaved as a live service would commit them
        run = uuid.uuid4().hex[:8]
        histories = {f"grp-{run}-{n}": _history(f"grp-{run}-{n}", n, rng) for n in range(24)}
        versions = dict.fromkeys(histories, 0)
        pending = {g: list(txs) for g, txs in histories.items()}
        while pending:
            group_id = rng.choice(sorted(pending))
            events = pending[group_id].pop(0)
            if not pending[group_id]:
                del pending[group_id]
            async with conn.transaction():
                saved = await store.append_many(
                    conn, [(f"group-{group_id}", versions[group_id], events)], actor="test",
                    correlation_id=uuid.uuid4())
                versions[group_id] += len(events)
                await project_read_models(conn, [(e, ev) for e, ev in
                                                 zip(saved, events, strict=True)])
        total = await conn.fetchval("SELECT count(*) FROM events")
        live = await table_rows(conn, READ_MODELS)
        assert all(live[t] for t in READ_MODELS)  # every table has rows to compare

        pages: list[int] = []

        async def counted(c, items):
            pages.append(len(items))
            await REBUILD.projector(c, items)

        plan = dataclasses.replace(REBUILD, projector=counted)
        shapes = await table_shapes(conn, REBUILD.tables)
        await conn.execute("TRUNCATE people_reached, funding_by_province")  # damage
        stats = await rebuild_plan(conn, plan, batch_size=7)
        assert stats.own_events == total
        assert await table_rows(conn, READ_MODELS) == live
        assert await leftovers(conn) == []
        # the indexes built after the fill (`indexes_after_fill`) are back, by their names
        assert REBUILD.indexes_after_fill
        assert await table_shapes(conn, REBUILD.tables) == shapes
        # bounded: never more than a page of events in memory, and every page a full one
        # until the last
        assert max(pages) == 7 and sum(pages) == total
        assert len(pages) == -(-total // 7)
        # and in one page: layers of many groups, each type in one statement or two
        await conn.execute("TRUNCATE people_reached, group_members")
        assert (await rebuild_plan(conn, REBUILD, batch_size=total)).own_events == total
        assert await table_rows(conn, READ_MODELS) == live
    finally:
        await conn.close()


async def test_a_unique_index_cannot_wait_for_the_fill(database_url):
    """A unique index is a rule the replayed writes may rely on (ON CONFLICT): a plan naming
    one is refused before anything is written, and the live tables stay."""
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "groups", MIGRATIONS)
        before = await table_shapes(conn, REBUILD.tables)
        plan = dataclasses.replace(REBUILD, indexes_after_fill=("group_registry_pkey",))
        with pytest.raises(ValueError, match="group_registry_pkey is unique"):
            await rebuild_plan(conn, plan)
        assert await table_shapes(conn, REBUILD.tables) == before
        assert await leftovers(conn) == []
    finally:
        await conn.close()


async def test_the_copies_are_analyzed_as_they_grow_and_their_commits_do_not_wait(
        database_url):
    """While pages are replayed the copies have statistics from the first page on (else the
    planner takes a growing copy for a small one and scans it whole for each set-based
    statement), the read-side indexes wait for the fill, the registry's pages keep room for
    its updates, and the pages' commits do not wait for the disk; the session's setting and
    the tables' storage are back afterwards."""
    rng = random.Random(7)
    store = EventStore("groups")
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "groups", MIGRATIONS)
        run = uuid.uuid4().hex[:8]
        for n in range(6):
            group_id = f"grp-{run}-{n}"
            version = 0
            for events in _history(group_id, n, rng):
                async with conn.transaction():
                    saved = await store.append_many(
                        conn, [(f"group-{group_id}", version, events)], actor="test",
                        correlation_id=uuid.uuid4())
                    version += len(events)
                    await project_read_models(conn, list(zip(saved, events, strict=True)))
        setting = await conn.fetchval("SHOW synchronous_commit")
        seen: list[tuple[float, str, int, list | None]] = []

        async def observed(c, items):
            seen.append((
                await c.fetchval("SELECT reltuples FROM pg_class "
                                 "WHERE oid = 'tkm_rebuild.group_registry'::regclass"),
                await c.fetchval("SHOW synchronous_commit"),
                await c.fetchval("SELECT count(*) FROM pg_indexes WHERE schemaname = "
                                 "'tkm_rebuild' AND tablename = 'group_registry'"),
                await c.fetchval("SELECT reloptions FROM pg_class "
                                 "WHERE oid = 'tkm_rebuild.group_registry'::regclass")))
            await REBUILD.projector(c, items)

        await rebuild_plan(conn, dataclasses.replace(REBUILD, projector=observed), batch_size=5)
        assert len(seen) >= 3
        assert seen[0][0] == -1  # never analyzed before the first page
        assert all(tuples > 0 for tuples, _, _, _ in seen[1:])
        assert {commit for _, commit, _, _ in seen} == {"off"}
        assert {indexes for _, _, indexes, _ in seen} == {1}  # the key alone while filling
        # room on each page for the row's updates while filling (`updated_in_place`), the live
        # tables' setting (none) once swapped in
        assert {tuple(options) for _, _, _, options in seen} == {("fillfactor=50",)}
        assert await conn.fetchval("SELECT reloptions FROM pg_class WHERE oid = "
                                   "'group_registry'::regclass") is None
        assert await conn.fetchval("SHOW synchronous_commit") == setting
        live = await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE tablename = "
                                   "'group_registry' AND schemaname = current_schema()")
        assert live == 4
    finally:
        await conn.close()


async def test_a_single_funding_is_projected_in_one_statement(database_url):
    """A funding carried out alone (an HTTP funding, a granted request) writes the registry
    and both counters in one statement, with what the event-by-event handlers wrote before:
    a second tranche counts the money and the tranche, not the group or its members again."""
    store = EventStore("groups")
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, "groups", MIGRATIONS)
        group_id = f"grp-{uuid.uuid4().hex[:8]}-0"
        txs = _history(group_id, 0, random.Random(3))
        fundings = [tx for tx in txs if isinstance(tx[0], GroupFunded)]
        assert [tx[0].tranche for tx in fundings] == [1, 2]
        sent: list[str] = []

        def logged(record) -> None:
            sent.append(record.query)

        async def save(events: list, version: int, *, counted: bool = False) -> None:
            async with conn.transaction():
                saved = await store.append_many(conn, [(f"group-{group_id}", version, events)],
                                                actor="test", correlation_id=uuid.uuid4())
                if counted:
                    conn.add_query_logger(logged)
                await project_read_models(conn, list(zip(saved, events, strict=True)))
                if counted:
                    conn.remove_query_logger(logged)

        version = 0
        for events in txs:
            if isinstance(events[0], AccountabilityReportSubmitted):
                break  # registration, approval and the first tranche
            await save(events, version, counted=isinstance(events[0], GroupFunded))
            version += len(events)
        assert len(sent) == 1, sent
        members = len(txs[0][1].members)
        assert tuple(await conn.fetchrow(
            "SELECT groups_funded, members_funded FROM people_reached")) == (1, members)
        assert tuple(await conn.fetchrow(
            "SELECT groups_funded, tranches, amount_disbursed FROM funding_by_province")) == (
            1, 1, fundings[0][0].amount)
        assert tuple(await conn.fetchrow(
            "SELECT status, tranches, funded_total, lpj_status FROM group_registry")) == (
            "funded", 1, fundings[0][0].amount, "due")
        second = fundings[1]
        await save(second, version)
        assert tuple(await conn.fetchrow(
            "SELECT groups_funded, members_funded FROM people_reached")) == (1, members)
        assert tuple(await conn.fetchrow(
            "SELECT groups_funded, tranches, amount_disbursed FROM funding_by_province")) == (
            1, 2, fundings[0][0].amount + second[0].amount)
    finally:
        await conn.close()
