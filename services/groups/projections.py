"""Inline projector: the groups service's read models, updated in the command's transaction.

Counters (people_reached, funding_by_province) are upserted in place and touched last in each
transaction, so concurrent commands in one province hold that row only until they commit.

Members' personal fields are `pii1:` tokens copied from the events (services/groups/privacy.py),
so a rebuild gives byte-identical tables; `nik_hash` beside them is what removals and the
membership rule compare. `active_memberships` (one active group per person and year, keyed by
the NIK's hash) is not a read model but the rule itself: a service table kept by `keep_memberships` in the command's transaction. `project` runs
both; a rebuild (`REBUILD`) replays only `project_read_models` and never touches the rule, so a
history whose commit order differs from its insert order rebuilds without a conflict.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from services.groups.domain import (
    BimtekAttended,
    MemberRecord,
    ProductEvidenceRecorded,
    ReasonNoted,
    RosterChanged,
    RosterRecorded,
)
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
from shared import approvals
from shared.envelope import Envelope, Event
from shared.auth import Actor, Role
from shared.errors import ConflictError
from shared.privacy import PersonCorrected
from shared.projections import RebuildPlan

READ_MODELS = ("group_registry", "group_members", "people_reached", "funding_by_province",
               "lpj_reports", "group_activities")


class MembershipTakenError(ConflictError):
    """A member already belongs to another active group that year. `nik` (the member's key:
    the NIK's hash) lets the caller point at the member (row, list index) without the NIK
    appearing in the error body. As raised it
    names nothing of the other group: `told_to(actor)` names it to whoever may read that
    group's province (a provincial officer must not learn another province's groups)."""

    def __init__(self, nik: str, year: int, other_group_id: str, other_group_name: str,
                 other_province_code: str | None, *, named: bool = False):
        if named:
            super().__init__(
                f"this person is already a member of active group '{other_group_name}' "
                f"({other_group_id}) in {year}", field="nik",
                other_group_id=other_group_id, other_group_name=other_group_name)
        else:
            super().__init__(f"this person is already a member of another active group in "
                             f"{year}", field="nik")
        self.nik, self.year, self.other_province_code = nik, year, other_province_code
        self.other = (other_group_id, other_group_name)

    def told_to(self, actor: Actor) -> MembershipTakenError:
        if actor.role is Role.ADMIN or (actor.role is Role.PROVINCE and self.other_province_code
                                        and actor.province_code == self.other_province_code):
            return MembershipTakenError(self.nik, self.year, *self.other,
                                        self.other_province_code, named=True)
        return self


async def project(conn: asyncpg.Connection, items: list[tuple[Envelope, Event]]) -> None:
    """The inline projector: read models and the membership rule, event by event. A run of
    events of one type that never touches the membership rule (what a bulk request of
    approvals, fundings or LPJ reviews saves) is written set-based, as a rebuild writes a page
    (`_layers`: a few statements for the whole run, each group's events in order), with the
    effect of the single handlers: the rebuild tests hold the two equal."""
    start = 0
    while start < len(items):
        pairs = _registration_pairs(items, start)
        if pairs > 1:  # a CSV import's groups
            await _registrations_many(conn, items[start:start + 2 * pairs])
            start += 2 * pairs
            continue
        kind, end = type(items[start][1]), start + 1
        while end < len(items) and type(items[end][1]) is kind:
            end += 1
        if kind in _SET_BASED_LIVE and end - start > 1:
            await _layers(conn, items[start:end])
        else:
            for envelope, event in items[start:end]:
                handler = _HANDLERS.get(type(event))
                if handler is not None:
                    await handler(conn, envelope, event)
                await keep_memberships(conn, envelope, event)
        start = end


async def project_read_models(conn: asyncpg.Connection,
                              items: list[tuple[Envelope, Event]]) -> None:
    """The read models alone: what a rebuild replays."""
    for envelope, event in items:
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            await handler(conn, envelope, event)


async def keep_memberships(conn: asyncpg.Connection, envelope: Envelope, event: Event) -> None:
    """The one-group-per-person rule (raises MembershipTakenError), after the event's read-model
    update (a roster's year is the registry's)."""
    match event:
        case RosterRecorded():
            year = await conn.fetchval("SELECT year FROM group_registry WHERE group_id = $1",
                                       event.group_id)
            await _reserve(conn, event.group_id, year, event.members)
        case RosterChanged():
            if event.removed:
                await conn.execute(
                    "DELETE FROM active_memberships WHERE group_id = $1 AND nik_hash = ANY($2)",
                    event.group_id, list(event.removed))
            year = await conn.fetchval("SELECT year FROM group_registry WHERE group_id = $1",
                                       event.group_id)
            await _reserve(conn, event.group_id, year, event.added)
        case GroupRejected() | GroupDissolved():
            await conn.execute("DELETE FROM active_memberships WHERE group_id = $1",
                               event.group_id)


async def _registered(conn: asyncpg.Connection, env: Envelope, e: GroupRegistered) -> None:
    await conn.execute(
        "INSERT INTO group_registry (group_id, year, stage, province_code, regency_code, "
        "business_type, status, member_count, registered_at, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, 'registered', $7, $8, $8)",
        e.group_id, e.year, e.stage, e.province_code, e.regency_code, e.business_type,
        e.member_count, env.occurred_at)


async def _roster_recorded(conn: asyncpg.Connection, env: Envelope, e: RosterRecorded) -> None:
    row = await conn.fetchrow(
        "UPDATE group_registry SET name = $2, external_ref = $3, registered_on = $4, "
        "registration_backdated = $5 WHERE group_id = $1 "
        "RETURNING year, province_code", e.group_id, e.name, e.external_ref, e.registered_on,
        e.backdated)
    await _insert_members(conn, e.group_id, e.members)
    await _reached(conn, row["year"], row["province_code"], groups=1, members=len(e.members))


async def _roster_changed(conn: asyncpg.Connection, env: Envelope, e: RosterChanged) -> None:
    delta = len(e.added) - len(e.removed)
    row = await conn.fetchrow(
        "UPDATE group_registry SET member_count = member_count + $2, updated_at = $3 "
        "WHERE group_id = $1 RETURNING year, province_code", e.group_id, delta, env.occurred_at)
    if e.removed:
        # a member is removed by key: the NIK's hash (the NIK itself for a version 1 member)
        await conn.execute("DELETE FROM group_members WHERE group_id = $1 "
                           "AND (nik_hash = ANY($2) OR (nik_hash IS NULL AND nik = ANY($2)))",
                           e.group_id, list(e.removed))
    await _insert_members(conn, e.group_id, e.added)
    await _reached(conn, row["year"], row["province_code"], members=delta)


async def _person_corrected(conn: asyncpg.Connection, env: Envelope,
                            e: PersonCorrected) -> None:
    """A member's corrected fields, re-sealed under their new key (shared.privacy), in every
    group they are a member of (person_ref = the NIK's hash)."""
    await conn.execute(
        "UPDATE group_members SET nik = coalesce($2, nik), name = coalesce($3, name), "
        "phone = $4, birth_date = coalesce($5, birth_date) WHERE nik_hash = $1",
        e.person_ref, e.values.get("nik"), e.values.get("name"), e.values.get("phone"),
        e.values.get("birth_date"))


_INSERT_MEMBERS = (
    "INSERT INTO group_members (group_id, nik, name, phone, birth_date, nik_hash) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
    "$6::text[])")


_MEMBER_COLUMNS = ("group_id", "nik", "name", "phone", "birth_date", "nik_hash")
# from this many rows on, COPY: asyncpg checks every element of an array parameter against
# three abstract base classes (in Python), which made the arrays of a rebuild's page of
# rosters cost more client CPU than the database's insert
_COPY_FROM = 64


async def _insert_member_rows(conn: asyncpg.Connection,
                              members: Sequence[tuple[str, MemberRecord]]) -> None:
    """(group id, member) rows: the sealed fields as the events hold them."""
    if len(members) >= _COPY_FROM:
        # the table as the connection's search_path finds it (a rebuild's copy)
        await conn.copy_records_to_table(
            "group_members", columns=_MEMBER_COLUMNS,
            records=[(g, m.nik, m.name, m.phone, m.birth_date, m.nik_hash) for g, m in members])
    elif members:
        await conn.execute(
            _INSERT_MEMBERS, [g for g, _ in members], [m.nik for _, m in members],
            [m.name for _, m in members], [m.phone for _, m in members],
            [m.birth_date for _, m in members], [m.nik_hash for _, m in members])


async def _insert_members(conn: asyncpg.Connection, group_id: str,
                          members: Sequence[MemberRecord]) -> None:
    await _insert_member_rows(conn, [(group_id, m) for m in members])


async def _reserve(conn: asyncpg.Connection, group_id: str, year: int,
                   members: Sequence[MemberRecord]) -> None:
    # sorted, so two groups claiming overlapping persons lock them in the same order
    keys = sorted(m.key for m in members)
    if not keys:
        return
    claimed = await conn.fetch(
        "INSERT INTO active_memberships (year, nik_hash, group_id) "
        "SELECT $1, n, $3 FROM unnest($2::text[]) AS n ON CONFLICT (year, nik_hash) DO NOTHING "
        "RETURNING nik_hash", year, keys, group_id)
    if len(claimed) == len(keys):
        return
    taken = sorted(set(keys) - {r["nik_hash"] for r in claimed})
    await _refuse_taken(conn, year, taken[0])


async def _refuse_taken(conn: asyncpg.Connection, year: int, key: str) -> None:
    holder = await conn.fetchrow(
        "SELECT m.nik_hash, m.group_id, coalesce(g.name, '') AS name, g.province_code "
        "FROM active_memberships m LEFT JOIN group_registry g USING (group_id) "
        "WHERE m.year = $1 AND m.nik_hash = $2", year, key)
    raise MembershipTakenError(key, year, holder["group_id"], holder["name"],
                               holder["province_code"])


_REACHED = (
    "INSERT INTO people_reached AS p (year, province_code, groups_registered, "
    "members_registered, groups_funded, members_funded) VALUES ($1, $2, $3, $4, $5, $6) "
    "ON CONFLICT (year, province_code) DO UPDATE SET "
    "groups_registered = p.groups_registered + EXCLUDED.groups_registered, "
    "members_registered = p.members_registered + EXCLUDED.members_registered, "
    "groups_funded = p.groups_funded + EXCLUDED.groups_funded, "
    "members_funded = p.members_funded + EXCLUDED.members_funded")


async def _reached(conn: asyncpg.Connection, year: int, province_code: str, *, groups: int = 0,
                   members: int = 0, funded_groups: int = 0, funded_members: int = 0) -> None:
    await conn.execute(_REACHED, year, province_code, groups, members, funded_groups,
                       funded_members)


async def _status(conn: asyncpg.Connection, env: Envelope, group_id: str, status: str,
                  reason_code: str | None = None) -> asyncpg.Record:
    # a note, if the officer wrote one, follows in a ReasonNoted of the same transaction
    return await conn.fetchrow(
        "UPDATE group_registry SET status = $2, status_reason_code = $3, status_note = NULL, "
        "updated_at = $4 WHERE group_id = $1 "
        "RETURNING year, province_code, member_count, tranches",
        group_id, status, reason_code, env.occurred_at)


async def _approved(conn: asyncpg.Connection, env: Envelope, e: GroupApproved) -> None:
    await _status(conn, env, e.group_id, "approved")


async def _rejected(conn: asyncpg.Connection, env: Envelope, e: GroupRejected) -> None:
    row = await _status(conn, env, e.group_id, "rejected", e.reason_code)
    await _reached(conn, row["year"], row["province_code"], groups=-1,
                   members=-row["member_count"])


async def _dissolved(conn: asyncpg.Connection, env: Envelope, e: GroupDissolved) -> None:
    row = await _status(conn, env, e.group_id, "dissolved", e.reason_code)
    if row["tranches"] == 0:  # never funded: it reached nobody; funded members stay reached
        await _reached(conn, row["year"], row["province_code"], groups=-1,
                       members=-row["member_count"])


async def _funded(conn: asyncpg.Connection, env: Envelope, e: GroupFunded) -> None:
    # one statement (the registry, then the counters: touched last), as _page_funded writes a
    # page; with scalar parameters, so the server keeps one plan for it
    await conn.execute(
        "WITH reg AS (UPDATE group_registry SET status = 'funded', tranches = $2, "
        "funded_total = funded_total + $3, last_budget_year = $4, last_disbursed_on = $5, "
        "lpj_due_on = $6, lpj_status = CASE WHEN lpj_status = 'submitted' THEN 'submitted' "
        "ELSE 'due' END, updated_at = $7 WHERE group_id = $1 RETURNING member_count), "
        "reached AS (INSERT INTO people_reached AS p (year, province_code, groups_registered, "
        "members_registered, groups_funded, members_funded) "
        "SELECT $8, $9, 0, 0, 1, member_count FROM reg WHERE $2 = 1 " + _REACHED_SUMS + ") "
        "INSERT INTO funding_by_province AS f (budget_year, province_code, groups_funded, "
        "tranches, amount_disbursed) VALUES ($4, $9, ($2 = 1)::int, 1, $3) "
        "ON CONFLICT (budget_year, province_code) DO UPDATE SET "
        "groups_funded = f.groups_funded + EXCLUDED.groups_funded, tranches = f.tranches + 1, "
        "amount_disbursed = f.amount_disbursed + EXCLUDED.amount_disbursed",
        e.group_id, e.tranche, e.amount, e.budget_year, e.disbursed_on, e.lpj_due_on,
        env.occurred_at, e.year, e.province_code)


async def _lpj_submitted(conn: asyncpg.Connection, env: Envelope,
                         e: AccountabilityReportSubmitted) -> None:
    await conn.execute(
        "INSERT INTO lpj_reports (report_id, group_id, tools, materials, other, "
        "remaining_balance, evidence_count, funds_covered, status, submitted_at) "
        "SELECT $1, $2, $3, $4, $5, $6, $7, funded_total, 'submitted', $8 "
        "FROM group_registry WHERE group_id = $2",
        e.report_id, e.group_id, e.tools, e.materials, e.other, e.remaining_balance,
        e.evidence_count, env.occurred_at)
    await conn.execute("UPDATE group_registry SET lpj_status = 'submitted', updated_at = $2 "
                       "WHERE group_id = $1", e.group_id, env.occurred_at)


async def _lpj_accepted(conn: asyncpg.Connection, env: Envelope,
                        e: AccountabilityReportAccepted) -> None:
    report = await conn.fetchrow(
        "UPDATE lpj_reports SET status = 'accepted', reviewed_at = $2 WHERE report_id = $1 "
        "RETURNING tools + materials + other AS spent, remaining_balance, funds_covered",
        e.report_id, env.occurred_at)
    before = await conn.fetchrow(
        "SELECT accounted_total, funded_total, last_budget_year, province_code "
        "FROM group_registry WHERE group_id = $1", e.group_id)
    covered = report["funds_covered"] >= before["funded_total"]
    await conn.execute(
        "UPDATE group_registry SET accounted_total = $2, lpj_status = $3, updated_at = $4 "
        "WHERE group_id = $1",
        e.group_id, report["spent"], "accepted" if covered else "due", env.occurred_at)
    await conn.execute(
        "UPDATE funding_by_province SET amount_accounted = amount_accounted + $3 "
        "WHERE budget_year = $1 AND province_code = $2", before["last_budget_year"],
        before["province_code"], report["spent"] - before["accounted_total"])


async def _lpj_returned(conn: asyncpg.Connection, env: Envelope,
                        e: AccountabilityReportReturned) -> None:
    await conn.execute("UPDATE lpj_reports SET status = 'returned', reason_code = $2, "
                       "reviewed_at = $3 WHERE report_id = $1",
                       e.report_id, e.reason_code, env.occurred_at)
    await conn.execute("UPDATE group_registry SET lpj_status = 'returned', updated_at = $2 "
                       "WHERE group_id = $1", e.group_id, env.occurred_at)


async def _reason_noted(conn: asyncpg.Connection, env: Envelope, e: ReasonNoted) -> None:
    if e.subject == "lpj_return":
        await conn.execute("UPDATE lpj_reports SET note = $2 WHERE report_id = $1",
                           e.report_id, e.note)
    else:
        await conn.execute("UPDATE group_registry SET status_note = $2 WHERE group_id = $1",
                           e.group_id, e.note)


_COUNTER = {"bimtek": "bimtek_count", "product": "product_evidence_count", "expo": "expo_count"}


async def _activity(conn: asyncpg.Connection, env: Envelope, group_id: str, kind: str,
                    title: str, held_on: Any, place: str | None = None,
                    evidence_count: int | None = None) -> None:
    await conn.execute(
        "INSERT INTO group_activities (group_id, stream_version, kind, title, place, held_on, "
        "evidence_count) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        group_id, env.stream_version, kind, title, place, held_on, evidence_count)
    column = _COUNTER[kind]
    await conn.execute(f"UPDATE group_registry SET {column} = {column} + 1, updated_at = $2 "
                       "WHERE group_id = $1", group_id, env.occurred_at)


async def _bimtek(conn: asyncpg.Connection, env: Envelope, e: BimtekAttended) -> None:
    await _activity(conn, env, e.group_id, "bimtek", e.subject, e.held_on)


async def _product(conn: asyncpg.Connection, env: Envelope, e: ProductEvidenceRecorded) -> None:
    await _activity(conn, env, e.group_id, "product", e.product, e.recorded_on,
                    evidence_count=e.evidence_count)


async def _expo(conn: asyncpg.Connection, env: Envelope, e: GroupShowcasedAtExpo) -> None:
    # codes since GroupShowcasedAtExpo v2 (v1's free text is upcast to "other" / no place)
    await _activity(conn, env, e.group_id, "expo", e.expo_code, e.held_on, place=e.regency_code)


async def _advanced(conn: asyncpg.Connection, env: Envelope, e: GroupAdvanced) -> None:
    await conn.execute("UPDATE group_registry SET stage = $2, updated_at = $3 "
                       "WHERE group_id = $1", e.group_id, e.to_stage, env.occurred_at)


# ---- set-based forms of the handlers above, for runs of one event type (see `project`) -------

def _registration_pairs(items: list[tuple[Envelope, Event]], start: int) -> int:
    """How many registrations (GroupRegistered then its RosterRecorded) follow from `start`."""
    n = 0
    while start + 2 * n + 1 < len(items):
        first, second = items[start + 2 * n][1], items[start + 2 * n + 1][1]
        if not (type(first) is GroupRegistered and type(second) is RosterRecorded
                and first.group_id == second.group_id):
            break
        n += 1
    return n


async def _registrations_many(conn: asyncpg.Connection,
                              run: list[tuple[Envelope, Any]]) -> None:
    """`_registered`, `_roster_recorded` and the membership rule for many registrations: a
    person already in an active group that year, or in an earlier group of the run, raises
    MembershipTakenError for the first group (in order) that names one."""
    pairs = [(run[i][0], run[i][1], run[i + 1][1]) for i in range(0, len(run), 2)]
    await conn.executemany(
        "INSERT INTO group_registry (group_id, year, stage, province_code, regency_code, "
        "business_type, status, member_count, registered_at, updated_at, name, external_ref, "
        "registered_on, registration_backdated) "
        "VALUES ($1, $2, $3, $4, $5, $6, 'registered', $7, $8, $8, $9, $10, $11, $12)",
        [(g.group_id, g.year, g.stage, g.province_code, g.regency_code, g.business_type,
          g.member_count, env.occurred_at, r.name, r.external_ref, r.registered_on, r.backdated)
         for env, g, r in pairs])
    await _insert_member_rows(conn, [(r.group_id, m) for _, _, r in pairs for m in r.members])
    reached: dict[tuple[int, str], list[int]] = {}
    for _, g, r in pairs:
        tally = reached.setdefault((g.year, g.province_code), [0, 0])
        tally[0] += 1
        tally[1] += len(r.members)
    await conn.executemany(_REACHED, [(year, province, groups, people, 0, 0)
                                      for (year, province), (groups, people)
                                      in sorted(reached.items())])
    # key order (as `_reserve`), an earlier group first for a person named twice
    claims = [(g.year, m.key, g.group_id) for _, g, r in pairs for m in r.members]
    if not claims:
        return
    claimed = await conn.fetch(
        "INSERT INTO active_memberships (year, nik_hash, group_id) "
        "SELECT y, n, g FROM unnest($1::int[], $2::text[], $3::text[]) WITH ORDINALITY "
        "AS u(y, n, g, i) ORDER BY n, i ON CONFLICT (year, nik_hash) DO NOTHING "
        "RETURNING nik_hash, group_id",
        [c[0] for c in claims], [c[1] for c in claims], [c[2] for c in claims])
    if len(claimed) == len(claims):
        return
    got = {(c["nik_hash"], c["group_id"]) for c in claimed}
    for _, g, r in pairs:
        taken = sorted(m.key for m in r.members if (m.key, g.group_id) not in got)
        if taken:
            await _refuse_taken(conn, g.year, taken[0])


# ---- a rebuild's page, set-based: events across transactions in a few statements ----------
# Every read-model row and every value an event's update reads belongs to the event's group,
# whose events are one stream; the counters (people_reached, funding_by_province) are sums. So
# a page is applied in layers: layer k holds the k-th event of each stream in the page, which
# keeps every stream's order, and within a layer each type's events go in one statement or
# two (a layer has one event per group: no row is updated twice by one statement).

Items = list[tuple[Envelope, Any]]


def _cols(items: Items, *getters: Callable[[Envelope, Any], Any]) -> list[list[Any]]:
    return [[get(env, e) for env, e in items] for get in getters]


_REACHED_SUMS = (
    "ON CONFLICT (year, province_code) DO UPDATE SET "
    "groups_registered = p.groups_registered + excluded.groups_registered, "
    "members_registered = p.members_registered + excluded.members_registered, "
    "groups_funded = p.groups_funded + excluded.groups_funded, "
    "members_funded = p.members_funded + excluded.members_funded")


async def _page_registered(conn: asyncpg.Connection, items: Items) -> None:
    await conn.execute(
        "INSERT INTO group_registry (group_id, year, stage, province_code, regency_code, "
        "business_type, status, member_count, registered_at, updated_at) "
        "SELECT g, y, s, p, r, b, 'registered', n, t, t FROM unnest($1::text[], $2::int[], "
        "$3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::timestamptz[]) "
        "AS u(g, y, s, p, r, b, n, t)",
        *_cols(items, lambda _, e: e.group_id, lambda _, e: e.year, lambda _, e: e.stage,
               lambda _, e: e.province_code, lambda _, e: e.regency_code,
               lambda _, e: e.business_type, lambda _, e: e.member_count,
               lambda env, _: env.occurred_at))


async def _page_registrations(conn: asyncpg.Connection, items: Items) -> None:
    """`_page_registered` then `_page_roster_recorded` of the same groups, in one row each."""
    pairs = [(env, g, r) for env, (g, r) in items]
    await conn.execute(
        "WITH u AS (SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], "
        "$5::text[], $6::text[], $7::int[], $8::timestamptz[], $9::text[], $10::text[], "
        "$11::date[], $12::bool[], $13::int[]) "
        "AS u(g, y, s, p, r, b, n, t, name, ref, ron, back, m)), "
        "reg AS (INSERT INTO group_registry (group_id, year, stage, province_code, "
        "regency_code, business_type, status, member_count, registered_at, updated_at, name, "
        "external_ref, registered_on, registration_backdated) "
        "SELECT g, y, s, p, r, b, 'registered', n, t, t, name, ref, ron, back FROM u) "
        "INSERT INTO people_reached AS p (year, province_code, groups_registered, "
        "members_registered, groups_funded, members_funded) "
        "SELECT y, p, count(*), sum(m), 0, 0 FROM u GROUP BY 1, 2 ORDER BY 1, 2 "
        + _REACHED_SUMS,
        [g.group_id for _, g, _ in pairs], [g.year for _, g, _ in pairs],
        [g.stage for _, g, _ in pairs], [g.province_code for _, g, _ in pairs],
        [g.regency_code for _, g, _ in pairs], [g.business_type for _, g, _ in pairs],
        [g.member_count for _, g, _ in pairs], [env.occurred_at for env, _, _ in pairs],
        [r.name for _, _, r in pairs], [r.external_ref for _, _, r in pairs],
        [r.registered_on for _, _, r in pairs], [r.backdated for _, _, r in pairs],
        [len(r.members) for _, _, r in pairs])
    await _insert_member_rows(conn, [(r.group_id, m) for _, _, r in pairs for m in r.members])


async def _page_roster_recorded(conn: asyncpg.Connection, items: Items) -> None:
    await conn.execute(
        "WITH u AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], "
        "$5::date[], $6::bool[]) AS u(g, name, ref, n, ron, back)), "
        "reg AS (UPDATE group_registry r SET name = u.name, external_ref = u.ref, "
        "registered_on = u.ron, registration_backdated = u.back FROM u "
        "WHERE r.group_id = u.g RETURNING r.year, r.province_code, u.n) "
        "INSERT INTO people_reached AS p (year, province_code, groups_registered, "
        "members_registered, groups_funded, members_funded) "
        "SELECT year, province_code, count(*), sum(n), 0, 0 FROM reg GROUP BY 1, 2 "
        "ORDER BY 1, 2 " + _REACHED_SUMS,
        *_cols(items, lambda _, e: e.group_id, lambda _, e: e.name,
               lambda _, e: e.external_ref, lambda _, e: len(e.members),
               lambda _, e: e.registered_on, lambda _, e: e.backdated))
    await _insert_member_rows(conn, [(e.group_id, m) for _, e in items for m in e.members])


async def _page_approved(conn: asyncpg.Connection, items: Items) -> None:
    await conn.execute(
        "UPDATE group_registry r SET status = 'approved', status_reason_code = NULL, "
        "status_note = NULL, updated_at = u.t FROM unnest($1::text[], $2::timestamptz[]) "
        "AS u(g, t) WHERE r.group_id = u.g",
        *_cols(items, lambda _, e: e.group_id, lambda env, _: env.occurred_at))


async def _page_funded(conn: asyncpg.Connection, items: Items) -> None:
    await conn.execute(
        "WITH u AS (SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::int[], "
        "$5::date[], $6::date[], $7::timestamptz[], $8::int[], $9::text[]) "
        "AS u(g, tranche, amount, budget_year, disbursed_on, due_on, t, year, province_code)), "
        "reg AS (UPDATE group_registry r SET status = 'funded', tranches = u.tranche, "
        "funded_total = r.funded_total + u.amount, last_budget_year = u.budget_year, "
        "last_disbursed_on = u.disbursed_on, lpj_due_on = u.due_on, lpj_status = CASE "
        "WHEN r.lpj_status = 'submitted' THEN 'submitted' ELSE 'due' END, updated_at = u.t "
        "FROM u WHERE r.group_id = u.g RETURNING u.tranche, u.year, u.province_code, "
        "r.member_count), "
        "reached AS (INSERT INTO people_reached AS p (year, province_code, groups_registered, "
        "members_registered, groups_funded, members_funded) "
        "SELECT year, province_code, 0, 0, count(*), sum(member_count) FROM reg "
        "WHERE tranche = 1 GROUP BY 1, 2 ORDER BY 1, 2 " + _REACHED_SUMS + ") "
        "INSERT INTO funding_by_province AS f (budget_year, province_code, groups_funded, "
        "tranches, amount_disbursed) SELECT budget_year, province_code, "
        "count(*) FILTER (WHERE tranche = 1), count(*), sum(amount) FROM u GROUP BY 1, 2 "
        "ORDER BY 1, 2 ON CONFLICT (budget_year, province_code) DO UPDATE SET "
        "groups_funded = f.groups_funded + excluded.groups_funded, "
        "tranches = f.tranches + excluded.tranches, "
        "amount_disbursed = f.amount_disbursed + excluded.amount_disbursed",
        *_cols(items, lambda _, e: e.group_id, lambda _, e: e.tranche, lambda _, e: e.amount,
               lambda _, e: e.budget_year, lambda _, e: e.disbursed_on,
               lambda _, e: e.lpj_due_on, lambda env, _: env.occurred_at,
               lambda _, e: e.year, lambda _, e: e.province_code))


async def _page_lpj_submitted(conn: asyncpg.Connection, items: Items) -> None:
    cols = _cols(items, lambda _, e: e.report_id, lambda _, e: e.group_id,
                 lambda _, e: e.tools, lambda _, e: e.materials, lambda _, e: e.other,
                 lambda _, e: e.remaining_balance, lambda _, e: e.evidence_count,
                 lambda env, _: env.occurred_at)
    await conn.execute(
        "INSERT INTO lpj_reports (report_id, group_id, tools, materials, other, "
        "remaining_balance, evidence_count, funds_covered, status, submitted_at) "
        "SELECT u.rid, u.g, u.tools, u.materials, u.other, u.remaining, u.evidence, "
        "r.funded_total, 'submitted', u.t FROM unnest($1::text[], $2::text[], $3::bigint[], "
        "$4::bigint[], $5::bigint[], $6::bigint[], $7::int[], $8::timestamptz[]) "
        "AS u(rid, g, tools, materials, other, remaining, evidence, t) "
        "JOIN group_registry r ON r.group_id = u.g", *cols)
    await conn.execute(
        "UPDATE group_registry r SET lpj_status = 'submitted', updated_at = u.t "
        "FROM unnest($1::text[], $2::timestamptz[]) AS u(g, t) WHERE r.group_id = u.g",
        cols[1], cols[7])


async def _page_lpj_accepted(conn: asyncpg.Connection, items: Items) -> None:
    # every sub-statement sees the rows as they were before: `before` is the registry before
    await conn.execute(
        "WITH u AS (SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[]) "
        "AS u(rid, g, t)), "
        "report AS (UPDATE lpj_reports l SET status = 'accepted', reviewed_at = u.t FROM u "
        "WHERE l.report_id = u.rid RETURNING u.g, u.t, l.tools + l.materials + l.other "
        "AS spent, l.funds_covered), "
        "before AS (SELECT report.*, r.accounted_total, r.funded_total, r.last_budget_year, "
        "r.province_code FROM report JOIN group_registry r ON r.group_id = report.g), "
        "reg AS (UPDATE group_registry r SET accounted_total = b.spent, lpj_status = CASE "
        "WHEN b.funds_covered >= b.funded_total THEN 'accepted' ELSE 'due' END, "
        "updated_at = b.t FROM before b WHERE r.group_id = b.g) "
        "UPDATE funding_by_province f SET amount_accounted = f.amount_accounted + d.delta "
        "FROM (SELECT last_budget_year, province_code, sum(spent - accounted_total) AS delta "
        "FROM before GROUP BY 1, 2) d "
        "WHERE f.budget_year = d.last_budget_year AND f.province_code = d.province_code",
        *_cols(items, lambda _, e: e.report_id, lambda _, e: e.group_id,
               lambda env, _: env.occurred_at))


async def _page_lpj_returned(conn: asyncpg.Connection, items: Items) -> None:
    cols = _cols(items, lambda _, e: e.report_id, lambda _, e: e.group_id,
                 lambda _, e: e.reason_code, lambda env, _: env.occurred_at)
    await conn.execute(
        "UPDATE lpj_reports l SET status = 'returned', reason_code = u.code, reviewed_at = u.t "
        "FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS u(rid, code, t) "
        "WHERE l.report_id = u.rid", cols[0], cols[2], cols[3])
    await conn.execute(
        "UPDATE group_registry r SET lpj_status = 'returned', updated_at = u.t "
        "FROM unnest($1::text[], $2::timestamptz[]) AS u(g, t) WHERE r.group_id = u.g",
        cols[1], cols[3])


async def _page_reason_noted(conn: asyncpg.Connection, items: Items) -> None:
    returns = [(env, e) for env, e in items if e.subject == "lpj_return"]
    others = [(env, e) for env, e in items if e.subject != "lpj_return"]
    if returns:
        await conn.execute(
            "UPDATE lpj_reports l SET note = u.note FROM unnest($1::text[], $2::text[]) "
            "AS u(rid, note) WHERE l.report_id = u.rid",
            *_cols(returns, lambda _, e: e.report_id, lambda _, e: e.note))
    if others:
        await conn.execute(
            "UPDATE group_registry r SET status_note = u.note FROM unnest($1::text[], "
            "$2::text[]) AS u(g, note) WHERE r.group_id = u.g",
            *_cols(others, lambda _, e: e.group_id, lambda _, e: e.note))


def _page_activities(kind: str, title: Callable[[Any], str], held_on: Callable[[Any], Any],
                     place: Callable[[Any], str | None] = lambda e: None,
                     evidence: Callable[[Any], int | None] = lambda e: None):
    column = _COUNTER[kind]

    async def write(conn: asyncpg.Connection, items: Items) -> None:
        cols = _cols(items, lambda _, e: e.group_id, lambda env, _: env.stream_version,
                     lambda _, e: title(e), lambda _, e: place(e), lambda _, e: held_on(e),
                     lambda _, e: evidence(e), lambda env, _: env.occurred_at)
        await conn.execute(
            "INSERT INTO group_activities (group_id, stream_version, kind, title, place, "
            "held_on, evidence_count) SELECT g, v, $8, title, place, held_on, evidence "
            "FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::date[], $6::int[], "
            "$7::timestamptz[]) AS u(g, v, title, place, held_on, evidence, t)", *cols, kind)
        await conn.execute(
            f"UPDATE group_registry r SET {column} = {column} + 1, updated_at = u.t "
            "FROM unnest($1::text[], $2::timestamptz[]) AS u(g, t) WHERE r.group_id = u.g",
            cols[0], cols[6])

    return write


async def _page_advanced(conn: asyncpg.Connection, items: Items) -> None:
    await conn.execute(
        "UPDATE group_registry r SET stage = u.s, updated_at = u.t FROM unnest($1::text[], "
        "$2::text[], $3::timestamptz[]) AS u(g, s, t) WHERE r.group_id = u.g",
        *_cols(items, lambda _, e: e.group_id, lambda _, e: e.to_stage,
               lambda env, _: env.occurred_at))


def _page_status_ended(status: str, always: bool):
    """Rejected (always) or dissolved (only when never funded): the group stops counting."""

    async def write(conn: asyncpg.Connection, items: Items) -> None:
        await conn.execute(
            "WITH u AS (SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[]) "
            "AS u(g, code, t)), "
            "reg AS (UPDATE group_registry r SET status = $4, status_reason_code = u.code, "
            "status_note = NULL, updated_at = u.t FROM u WHERE r.group_id = u.g "
            "RETURNING r.year, r.province_code, r.member_count, r.tranches) "
            "INSERT INTO people_reached AS p (year, province_code, groups_registered, "
            "members_registered, groups_funded, members_funded) "
            "SELECT year, province_code, -count(*), -sum(member_count), 0, 0 FROM reg "
            "WHERE $5 OR tranches = 0 GROUP BY 1, 2 ORDER BY 1, 2 " + _REACHED_SUMS,
            *_cols(items, lambda _, e: e.group_id, lambda _, e: e.reason_code,
                   lambda env, _: env.occurred_at), status, always)

    return write


async def _page_roster_changed(conn: asyncpg.Connection, items: Items) -> None:
    await conn.execute(
        "WITH u AS (SELECT * FROM unnest($1::text[], $2::int[], $3::timestamptz[]) "
        "AS u(g, d, t)), "
        "reg AS (UPDATE group_registry r SET member_count = r.member_count + u.d, "
        "updated_at = u.t FROM u WHERE r.group_id = u.g RETURNING r.year, r.province_code, u.d) "
        "INSERT INTO people_reached AS p (year, province_code, groups_registered, "
        "members_registered, groups_funded, members_funded) "
        "SELECT year, province_code, 0, sum(d), 0, 0 FROM reg GROUP BY 1, 2 ORDER BY 1, 2 "
        + _REACHED_SUMS,
        *_cols(items, lambda _, e: e.group_id, lambda _, e: len(e.added) - len(e.removed),
               lambda env, _: env.occurred_at))
    removed = [(e.group_id, nik) for _, e in items for nik in e.removed]
    if removed:
        await conn.execute(
            "DELETE FROM group_members m USING unnest($1::text[], $2::text[]) AS u(g, k) "
            "WHERE m.group_id = u.g AND (m.nik_hash = u.k OR (m.nik_hash IS NULL "
            "AND m.nik = u.k))",
            [g for g, _ in removed], [k for _, k in removed])
    await _insert_member_rows(conn, [(e.group_id, m) for _, e in items for m in e.added])


def _one_by_one(handler: Callable[[asyncpg.Connection, Envelope, Any], Awaitable[None]]):
    async def write(conn: asyncpg.Connection, items: Items) -> None:
        for envelope, event in items:
            await handler(conn, envelope, event)
    return write


async def project_read_models_in_layers(conn: asyncpg.Connection, items: Items) -> None:
    """The read models of a page of events (in store order, across transactions): what a
    rebuild replays, set-based (see above); the same tables as `project_read_models`, and the
    four-eyes requests (`approval_requests`, shared.approvals: their own streams). A
    correction (privacy.PersonCorrected, in the person's own stream) rewrites the rows of every
    group of the person: the page is cut there, what came before it applied first."""
    await approvals.project(conn, items)
    start = 0
    for i, (envelope, event) in enumerate(items):
        if type(event) is PersonCorrected:
            await _layers(conn, items[start:i])
            await _person_corrected(conn, envelope, event)
            start = i + 1
    await _layers(conn, items[start:])


class _Registration:
    """A layer's key for a GroupRegistered followed by its stream's RosterRecorded in the same
    page (what registering a group saves): its item is (registered's envelope, (registered,
    roster)), written by `_page_registrations` as one row instead of an insert then an update."""


async def _layers(conn: asyncpg.Connection, items: Items) -> None:
    # a registration's two events go as one row when both are in the page (what registering a
    # group saves, in this order)
    previous: dict[str, Any] = {}
    rosters: dict[int, Any] = {}  # id of a GroupRegistered -> the RosterRecorded after it
    for envelope, event in items:
        if type(event) not in _HANDLERS:
            continue
        before = previous.get(envelope.stream_id)
        if type(event) is RosterRecorded and type(before) is GroupRegistered:
            rosters[id(before)] = event
        previous[envelope.stream_id] = event
    paired = {id(roster) for roster in rosters.values()}
    layers: list[dict[type, Items]] = []
    depth: dict[str, int] = {}
    for envelope, event in items:
        if type(event) not in _HANDLERS or id(event) in paired:
            continue
        k = depth.get(envelope.stream_id, 0)
        depth[envelope.stream_id] = k + 1
        if k == len(layers):
            layers.append({})
        roster = rosters.get(id(event))
        if roster is not None:
            layers[k].setdefault(_Registration, []).append((envelope, (event, roster)))
        else:
            layers[k].setdefault(type(event), []).append((envelope, event))
    for layer in layers:
        for event_type, events in layer.items():
            writer = _PAGE_WRITERS.get(event_type) or _one_by_one(_HANDLERS[event_type])
            await writer(conn, events)


REBUILD = RebuildPlan((*READ_MODELS, *approvals.APPROVAL_TABLES), project_read_models_in_layers,
                      across_transactions=True,
                      # what the views read by; the projections find rows by their keys (a
                      # correction finds a person's rows by group_members_by_nik_hash)
                      indexes_after_fill=("group_registry_by_province", "group_registry_by_region",
                                          "group_registry_lpj_open", "lpj_reports_by_group",
                                          "approval_requests_batch", "approval_requests_due",
                                          "approval_requests_listing"),
                      # a group's row takes an update for most of its events
                      updated_in_place=("group_registry",))

# runs of these types are written set-based by the inline projector too (none of them touches
# the membership rule, `keep_memberships`)
_SET_BASED_LIVE = frozenset({GroupApproved, GroupFunded, AccountabilityReportSubmitted,
                             AccountabilityReportAccepted, AccountabilityReportReturned})

_HANDLERS: dict[type[Event], Callable[[asyncpg.Connection, Envelope, Any], Awaitable[None]]] = {
    GroupRegistered: _registered,
    RosterRecorded: _roster_recorded,
    RosterChanged: _roster_changed,
    PersonCorrected: _person_corrected,
    GroupApproved: _approved,
    GroupRejected: _rejected,
    GroupDissolved: _dissolved,
    GroupFunded: _funded,
    AccountabilityReportSubmitted: _lpj_submitted,
    AccountabilityReportAccepted: _lpj_accepted,
    AccountabilityReportReturned: _lpj_returned,
    ReasonNoted: _reason_noted,
    BimtekAttended: _bimtek,
    ProductEvidenceRecorded: _product,
    GroupShowcasedAtExpo: _expo,
    GroupAdvanced: _advanced,
}

# a rebuild's writers by type (a type missing here would go one by one: `_one_by_one`)
_PAGE_WRITERS: dict[type, Callable[[asyncpg.Connection, Items], Awaitable[None]]] = {
    _Registration: _page_registrations,
    GroupRegistered: _page_registered,
    RosterRecorded: _page_roster_recorded,
    GroupApproved: _page_approved,
    GroupFunded: _page_funded,
    AccountabilityReportSubmitted: _page_lpj_submitted,
    AccountabilityReportAccepted: _page_lpj_accepted,
    AccountabilityReportReturned: _page_lpj_returned,
    ReasonNoted: _page_reason_noted,
    BimtekAttended: _page_activities("bimtek", lambda e: e.subject, lambda e: e.held_on),
    ProductEvidenceRecorded: _page_activities("product", lambda e: e.product,
                                              lambda e: e.recorded_on,
                                              evidence=lambda e: e.evidence_count),
    GroupShowcasedAtExpo: _page_activities("expo", lambda e: e.expo_code, lambda e: e.held_on,
                                           place=lambda e: e.regency_code),
    GroupAdvanced: _page_advanced,
    GroupRejected: _page_status_ended("rejected", True),
    GroupDissolved: _page_status_ended("dissolved", False),
    RosterChanged: _page_roster_changed,
}
