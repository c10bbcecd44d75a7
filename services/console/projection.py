"""The console's read side: the four contract topics, read exactly as an outside agency reads them
(docs/agencies.md): its own SCRAM principal (`console`, onboarded with `tkm agency add console`),
consumer groups prefixed `console.`, JSON envelopes only (nothing imported from the services),
at-least-once delivery made exactly-once in effect by recording each applied `event_id` in the
same transaction as the rows it changes, offsets committed only after that transaction.

Tolerance, as the contract asks: unknown event types and properties are ignored; a
`schema_version` newer than this code knows for a type it uses stops the reader (the offset is
not committed, so an upgraded console continues where it stopped) instead of guessing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import asyncpg

log = logging.getLogger("tkm.console.projection")

TOPICS = ("tkm.recruitment.v1", "tkm.groups.v1", "tkm.mentoring.v1", "tkm.evaluation.v1")
Apply = Callable[[asyncpg.Connection, dict[str, Any], dict[str, Any]], Awaitable[None]]


class NewerVersionError(RuntimeError):
    """An event of a type the console uses, in a version it does not know: upgrade it."""


def _d(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def _ts(envelope: dict[str, Any]) -> datetime | None:
    value = envelope.get("occurred_at")
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


# ---------------------------------------------------------------- recruitment

async def _tks_recruited(conn, env, p) -> None:
    await conn.execute(
        "INSERT INTO tks (tks_id, stage, province_code, regency_code) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (tks_id) DO UPDATE SET stage = EXCLUDED.stage",
        p["tks_id"], p["stage"], p["province_code"], p["regency_code"])
    await _contract(conn, p)


async def _tks_renewed(conn, env, p) -> None:
    await conn.execute(
        "INSERT INTO tks (tks_id, province_code, regency_code) VALUES ($1, $2, $3) "
        "ON CONFLICT (tks_id) DO UPDATE SET province_code = EXCLUDED.province_code, "
        "regency_code = EXCLUDED.regency_code", p["tks_id"], p["province_code"], p["regency_code"])
    await _contract(conn, p)


async def _contract(conn, p) -> None:
    await conn.execute(
        "INSERT INTO tks_years (tks_id, year, province_code, regency_code, contract_start, "
        "contract_end) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tks_id, year) DO UPDATE SET "
        "contract_start = EXCLUDED.contract_start, contract_end = EXCLUDED.contract_end",
        p["tks_id"], p["year"], p["province_code"], p["regency_code"], _d(p["contract_start"]),
        _d(p["contract_end"]))


def _tks_left(status: str) -> Apply:
    async def apply(conn, env, p) -> None:
        await conn.execute(
            "INSERT INTO tks_years (tks_id, year, province_code, regency_code, status) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tks_id, year) DO UPDATE SET status = $5",
            p["tks_id"], p["year"], p["province_code"], p["regency_code"], status)
    return apply


# ---------------------------------------------------------------- groups

async def _group_registered(conn, env, p) -> None:
    await conn.execute(
        "INSERT INTO tkm_groups (group_id, year, stage, province_code, regency_code, "
        "business_type, member_count, registered_at, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (group_id) DO UPDATE SET "
        "year = $2, stage = $3, province_code = $4, regency_code = $5, business_type = $6, "
        "member_count = $7, registered_at = $8",
        p["group_id"], p["year"], p["stage"], p["province_code"], p["regency_code"],
        p["business_type"], p["member_count"], _ts(env))


async def _touch(conn, group_id: str, env, sql: str = "", *args: Any) -> None:
    """Update a group that may not be known yet (a stray order across topics never happens
    within a group's stream, but a console started on a trimmed copy might see one)."""
    await conn.execute("INSERT INTO tkm_groups (group_id, updated_at) VALUES ($1, $2) "
                       "ON CONFLICT (group_id) DO UPDATE SET updated_at = $2", group_id, _ts(env))
    if sql:
        await conn.execute(f"UPDATE tkm_groups SET {sql} WHERE group_id = $1", group_id, *args)


async def _members_changed(conn, env, p) -> None:
    await _touch(conn, p["group_id"], env, "member_count = $2", p["member_count"])


async def _approved(conn, env, p) -> None:
    await _touch(conn, p["group_id"], env, "status = 'approved'")


async def _rejected(conn, env, p) -> None:
    await _touch(conn, p["group_id"], env, "status = 'rejected', reason_code = $2",
                 p.get("reason_code") or "other")


async def _funded(conn, env, p) -> None:
    inserted = await conn.fetchval(
        "INSERT INTO fundings (group_id, tranche, amount, disbursed_on, budget_year, "
        "province_code) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING 1",
        p["group_id"], p["tranche"], p["amount"], _d(p["disbursed_on"]), p["budget_year"],
        p["province_code"])
    await _touch(conn, p["group_id"], env,
                 "status = 'funded', funded_total = funded_total + $2, last_budget_year = $3, "
                 "lpj_due_on = $4", p["amount"] if inserted else 0, p["budget_year"],
                 _d(p.get("lpj_due_on")))


async def _lpj_submitted(conn, env, p) -> None:
    await conn.execute(
        "INSERT INTO lpj_reports (report_id, group_id, tools, materials, other, "
        "remaining_balance, submitted_at) VALUES ($1, $2, $3, $4, $5, $6, $7) "
        "ON CONFLICT (report_id) DO NOTHING",
        p["report_id"], p["group_id"], p["tools"], p["materials"], p["other"],
        p["remaining_balance"], _ts(env))


async def _lpj_accepted(conn, env, p) -> None:
    spent = await conn.fetchval(
        "UPDATE lpj_reports SET status = 'accepted' WHERE report_id = $1 "
        "RETURNING tools + materials + other", p["report_id"])
    if spent is not None:  # the LPJ's figures are what the group accounted for, to date
        await _touch(conn, p["group_id"], env, "accounted_total = $2", spent)


async def _lpj_returned(conn, env, p) -> None:
    await conn.execute("UPDATE lpj_reports SET status = 'returned', reason_code = $2 "
                       "WHERE report_id = $1", p["report_id"], p.get("reason_code") or "other")


def _activity(kind: str, detail: Callable[[dict], str], status: str | None = None) -> Apply:
    async def apply(conn, env, p) -> None:
        await conn.execute(
            "INSERT INTO group_activities VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            env["event_id"], p["group_id"], kind, detail(p), _ts(env))
        if status == "dissolved":
            await _touch(conn, p["group_id"], env, "status = 'dissolved', reason_code = $2",
                         p.get("reason_code") or "other")
        elif kind == "advanced":
            await _touch(conn, p["group_id"], env, "stage = $2", p["to_stage"])
    return apply


# ---------------------------------------------------------------- mentoring

async def _assigned(conn, env, p) -> None:
    on = _d(p["assigned_on"])
    await conn.execute(
        "UPDATE mentor_assignments SET unassigned_on = $2 WHERE group_id = $1 "
        "AND unassigned_on IS NULL AND assigned_on <= $2 AND tks_id <> $3",
        p["group_id"], on, p["tks_id"])
    await conn.execute(
        "INSERT INTO mentor_assignments (group_id, tks_id, province_code, regency_code, "
        "assigned_on) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        p["group_id"], p["tks_id"], p["province_code"], p["regency_code"], on)


async def _unassigned(conn, env, p) -> None:
    await conn.execute(
        "UPDATE mentor_assignments SET unassigned_on = $3 WHERE group_id = $1 AND tks_id = $2 "
        "AND unassigned_on IS NULL", p["group_id"], p["tks_id"], _d(p["unassigned_on"]))


async def _report_filed(conn, env, p) -> None:
    await conn.execute(
        "INSERT INTO monthly_reports (group_id, period, tks_id, revenue, production_units, "
        "production_unit, members_active, new_workers, on_time, filed_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
        p["group_id"], p["period"], p["tks_id"], p["revenue"], p["production_units"],
        p.get("production_unit"), p["members_active"], p["new_workers"], p["on_time"], _ts(env))


async def _report_amended(conn, env, p) -> None:
    await conn.execute(
        "UPDATE monthly_reports SET revenue = $3, production_units = $4, production_unit = $5, "
        "members_active = $6, new_workers = $7, amended = true "
        "WHERE group_id = $1 AND period = $2",
        p["group_id"], p["period"], p["revenue"], p["production_units"], p.get("production_unit"),
        p["members_active"], p["new_workers"])


async def _overdue(conn, env, p) -> None:
    await conn.execute("INSERT INTO overdue_reports VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                       p["group_id"], p["period"], p["tks_id"])


async def _period_closed(conn, env, p) -> None:
    await conn.execute(
        "INSERT INTO closed_periods VALUES ($1, $2, $3, $4) ON CONFLICT (period) DO UPDATE "
        "SET due = $2, filed = $3, overdue = $4", p["period"], p["due"], p["filed"], p["overdue"])


# ---------------------------------------------------------------- evaluation

async def _evaluation_opened(conn, env, p) -> None:
    await conn.execute(
        "INSERT INTO evaluation_cycles (year, policy_version) VALUES ($1, $2) "
        "ON CONFLICT (year) DO NOTHING", p["year"], p["policy_version"])


async def _tks_evaluated(conn, env, p) -> None:
    await conn.execute(
        "INSERT INTO tks_evaluations VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) "
        "ON CONFLICT (year, tks_id) DO UPDATE SET score = $5, decision = $6, indicators = $7",
        p["year"], p["tks_id"], p["province_code"], p["regency_code"], float(p["score"]),
        p["decision"], json.dumps(p.get("indicators") or []))


async def _evaluation_closed(conn, env, p) -> None:
    await conn.execute(
        "INSERT INTO evaluation_cycles (year, policy_version, status, evaluated, continued, "
        "replaced) VALUES ($1, $2, 'closed', $3, $4, $5) ON CONFLICT (year) DO UPDATE SET "
        "status = 'closed', evaluated = $3, continued = $4, replaced = $5",
        p["year"], p["policy_version"], p["evaluated"], p["continued"], p["replaced"])


# (event type) -> (the newest schema version this code reads, how to apply it)
HANDLERS: dict[str, tuple[int, Apply]] = {
    "TksRecruited": (1, _tks_recruited),
    "TksContractRenewed": (1, _tks_renewed),
    "TksReleased": (1, _tks_left("released")),
    "TksResigned": (1, _tks_left("resigned")),
    "GroupRegistered": (1, _group_registered),
    "GroupMembersChanged": (1, _members_changed),
    "GroupApproved": (1, _approved),
    "GroupRejected": (2, _rejected),
    "GroupFunded": (1, _funded),
    "AccountabilityReportSubmitted": (1, _lpj_submitted),
    "AccountabilityReportAccepted": (1, _lpj_accepted),
    "AccountabilityReportReturned": (2, _lpj_returned),
    "GroupShowcasedAtExpo": (2, _activity("expo", lambda p: p.get("expo_code") or p.get("expo")
                                          or "")),
    "GroupAdvanced": (1, _activity("advanced", lambda p: f"{p['from_stage']} → {p['to_stage']}")),
    "GroupDissolved": (2, _activity("dissolved", lambda p: p.get("reason_code") or "other",
                                    status="dissolved")),
    "MentorAssigned": (1, _assigned),
    "MentorUnassigned": (1, _unassigned),
    "ReportFiled": (2, _report_filed),
    "ReportAmended": (2, _report_amended),
    "ReportOverdue": (1, _overdue),
    "PeriodClosed": (1, _period_closed),
    "EvaluationOpened": (1, _evaluation_opened),
    "TksEvaluated": (1, _tks_evaluated),
    "EvaluationClosed": (1, _evaluation_closed),
}


def decode(value: bytes | None) -> dict[str, Any] | None:
    """The envelope, or None for a message that is not one (noted, skipped)."""
    try:
        envelope = json.loads(value or b"")
        if isinstance(envelope, dict) and envelope["event_id"] and envelope["event_type"]:
            int(envelope["schema_version"])
            return envelope
    except (ValueError, TypeError, KeyError):
        pass
    return None


async def apply_batch(pool: asyncpg.Pool, values: list[bytes | None]) -> int:
    """Apply messages in one transaction with the ids of the events applied; an event seen
    before is skipped. Returns how many were applied. Raises NewerVersionError (nothing of the
    batch is kept) for a version this code does not know of a type it reads.

    The batch's ids are recorded in one statement and its events applied under one savepoint;
    only when an event breaks its own schema is the batch applied again one savepoint an event,
    so that the bad event undoes only itself (its id stays applied, so it is not retried for
    ever) and the others stand."""
    known: list[tuple[dict[str, Any], Apply]] = []
    for value in values:
        envelope = decode(value)
        if envelope is None:
            log.warning("skipped a message that is not an event envelope")
            continue
        handler = HANDLERS.get(envelope["event_type"])
        if handler is None:
            continue  # a type the console does not show
        newest, apply = handler
        if int(envelope["schema_version"]) > newest:
            raise NewerVersionError(f"{envelope['event_type']} v{envelope['schema_version']}"
                                    f" (this console reads up to v{newest}): upgrade it")
        known.append((envelope, apply))
    if not known:
        return 0
    async with pool.acquire() as conn, conn.transaction():
        new = {r["event_id"] for r in await conn.fetch(
            "INSERT INTO applied_events (event_id) SELECT DISTINCT unnest($1::text[]) "
            "ON CONFLICT DO NOTHING RETURNING event_id",
            [str(envelope["event_id"]) for envelope, _ in known])}
        todo = []
        for envelope, apply in known:  # in order, an id repeated in the batch once
            if str(envelope["event_id"]) in new:
                new.discard(str(envelope["event_id"]))
                todo.append((envelope, apply))
        try:
            async with conn.transaction():  # one savepoint for the batch
                for envelope, apply in todo:
                    await apply(conn, envelope, envelope.get("payload") or {})
            return len(todo)
        except _BROKEN:
            pass  # rolled back to the savepoint: again, one event at a time
        applied = 0
        for envelope, apply in todo:
            try:
                async with conn.transaction():  # a savepoint: a bad event undoes only itself
                    await apply(conn, envelope, envelope.get("payload") or {})
            except _BROKEN as exc:
                # a payload that breaks its own schema: noted, the rest of the batch goes on
                log.error("skipped event %s (%s v%s) that does not follow its schema: %s: %s",
                          envelope["event_id"], envelope["event_type"],
                          envelope["schema_version"], type(exc).__name__, exc)
                continue
            applied += 1
        return applied


# what a payload breaking its own schema raises in a handler
_BROKEN = (KeyError, TypeError, ValueError, AttributeError)


@dataclass
class ReaderState:
    applied: int = 0
    batches: int = 0
    last_batch_at: float | None = None
    lag: int | None = None      # messages on the topics not read yet (None: not known yet)
    stopped: str | None = None  # why the reader stopped for good (a newer schema version)
    error: str | None = None    # the last transient error (retried)
    started: float = field(default_factory=time.monotonic)


async def _lag(consumer) -> int | None:
    """Messages behind the partitions' high watermarks (None until every assigned partition
    has been fetched once)."""
    assigned = consumer.assignment()
    if not assigned:
        return None
    behind = 0
    for tp in assigned:
        high = consumer.highwater(tp)
        if high is None:
            return None
        behind += max(0, high - await consumer.position(tp))
    return behind


async def follow(pool: asyncpg.Pool, bootstrap: str, group_id: str, client: dict[str, Any],
                 state: ReaderState, *, retry_s: float = 2.0) -> None:
    """Read the topics for ever into `pool`; reconnects after a broker or database failure."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError

    while True:
        consumer = AIOKafkaConsumer(*TOPICS, bootstrap_servers=bootstrap, group_id=group_id,
                                    auto_offset_reset="earliest", enable_auto_commit=False,
                                    **client)
        try:
            await consumer.start()
            state.error = None
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
                values = [m.value for records in batches.values() for m in records]
                if values:
                    state.applied += await apply_batch(pool, values)
                    await consumer.commit()
                    state.batches += 1
                    state.last_batch_at = time.time()
                state.lag = await _lag(consumer)
        except NewerVersionError as exc:
            state.stopped = str(exc)
            log.error("the console's reader stopped: %s", exc)
            return
        except asyncio.CancelledError:
            raise
        except (KafkaError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            state.error = f"{type(exc).__name__}: {exc}"
            log.warning("the console's reader failed, retrying: %s", state.error)
        except Exception as exc:  # the reader must not die silently: logged, retried
            state.error = f"{type(exc).__name__}: {exc}"
            log.exception("the console's reader failed unexpectedly, retrying")
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
        await asyncio.sleep(retry_s)
