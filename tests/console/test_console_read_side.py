"""The console's read side and its users, on the real Postgres: an event applied once however
often it is delivered, unknown types ignored, a newer schema version stopping the reader with
nothing of its batch kept; passwords only as argon2id hashes, scoped roles, sessions known by
their hash."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

import asyncpg
import pytest

from scripts.infra import ROOT
from services.console import db, projection, users
from shared.auth import Role

pytestmark = pytest.mark.integration


def envelope(event_type: str, payload: dict, version: int = 1, event_id: str | None = None):
    return json.dumps({"event_id": event_id or str(uuid.uuid4()), "event_type": event_type,
                       "schema_version": version, "occurred_at": "2026-03-01T03:00:00Z",
                       "stream_id": payload.get("group_id", "x"), "stream_version": 1,
                       "producer": "groups", "payload": payload}).encode()


def registered(group_id: str) -> bytes:
    return envelope("GroupRegistered", {"group_id": group_id, "year": 2026, "stage": "pemula",
                                        "province_code": "32", "regency_code": "3201",
                                        "business_type": "catering", "member_count": 10})


def funded(group_id: str, amount: int, event_id: str | None = None) -> bytes:
    return envelope("GroupFunded", {
        "group_id": group_id, "tranche": 1, "amount": amount, "disbursed_on": "2026-03-01",
        "budget_year": 2026, "year": 2026, "province_code": "32", "regency_code": "3201",
        "lpj_due_on": "2026-09-01"}, event_id=event_id)


@pytest.fixture
async def pool(database_url):
    pool = await db.connect(database_url)
    try:
        yield pool
    finally:
        await pool.close()


async def test_a_redelivered_event_is_applied_once(pool):
    group = str(uuid.uuid4())
    event_id = str(uuid.uuid4())
    first = await projection.apply_batch(pool, [registered(group),
                                                funded(group, 20_000_000, event_id)])
    again = await projection.apply_batch(pool, [funded(group, 20_000_000, event_id)])
    assert (first, again) == (2, 0)
    row = await pool.fetchrow("SELECT status, funded_total FROM tkm_groups WHERE group_id = $1",
                              group)
    assert dict(row) == {"status": "funded", "funded_total": 20_000_000}


async def test_unknown_types_and_foreign_messages_are_skipped(pool):
    applied = await projection.apply_batch(pool, [
        envelope("SomethingNew", {"x": 1}, version=7), b"not json", None])
    assert applied == 0
    assert await pool.fetchval("SELECT count(*) FROM applied_events") == 0


async def test_an_event_breaking_its_schema_is_skipped_and_the_batch_goes_on(pool):
    group = str(uuid.uuid4())
    broken = envelope("GroupFunded", {"group_id": group, "tranche": 1})  # no amount
    assert await projection.apply_batch(pool, [registered(group), broken,
                                               funded(group, 5_000_000)]) == 2
    assert await pool.fetchval("SELECT funded_total FROM tkm_groups WHERE group_id = $1",
                               group) == 5_000_000


async def test_a_newer_schema_version_stops_the_reader_and_keeps_nothing_of_its_batch(pool):
    group = str(uuid.uuid4())
    with pytest.raises(projection.NewerVersionError, match="GroupFunded v2"):
        await projection.apply_batch(pool, [registered(group), envelope("GroupFunded", {
            "group_id": group}, version=2)])
    assert await pool.fetchval("SELECT count(*) FROM tkm_groups WHERE group_id = $1", group) == 0
    assert await pool.fetchval("SELECT count(*) FROM applied_events") == 0


async def test_a_report_and_its_mentor_follow_the_topics_in_any_order(pool):
    group, tks = str(uuid.uuid4()), str(uuid.uuid4())
    report = envelope("ReportFiled", {
        "group_id": group, "tks_id": tks, "period": "2026-03", "revenue": 1_500_000,
        "production_units": 40, "production_unit": "kg", "members_active": 9, "new_workers": 1,
        "support": ["market_access"], "lpj_help": False, "on_time": True}, version=2)
    assigned = envelope("MentorAssigned", {"group_id": group, "tks_id": tks,
                                           "province_code": "32", "regency_code": "3201",
                                           "assigned_on": "2026-03-02"})
    assert await projection.apply_batch(pool, [report, assigned, registered(group)]) == 3
    assert await pool.fetchval("SELECT revenue FROM monthly_reports WHERE group_id = $1",
                               group) == 1_500_000
    assert await pool.fetchval("SELECT tks_id FROM mentor_assignments WHERE group_id = $1 "
                               "AND unassigned_on IS NULL", group) == tks


async def test_passwords_are_kept_as_argon2id_hashes_only(pool):
    user = await users.add_user(pool, "Officer@Example.id", "rahasia-sekali-123",
                                Role.PROVINCE, province_code="32")
    assert user.email == "officer@example.id"
    stored = await pool.fetchval("SELECT password_hash FROM console_users WHERE email = $1",
                                 user.email)
    assert stored.startswith("$argon2id$") and "rahasia" not in stored
    assert await users.authenticate(pool, "officer@example.id", "rahasia-sekali-124") is None
    assert await users.authenticate(pool, "nobody@example.id", "rahasia-sekali-123") is None
    signed = await users.authenticate(pool, "OFFICER@example.id", "rahasia-sekali-123")
    assert signed == user and signed.province_code == "32"


@pytest.mark.parametrize(("role", "scope", "reason"), [
    (Role.PROVINCE, {}, "needs --province"),
    (Role.TKS, {}, "needs --tks-id"),
    (Role.ADMIN, {"province_code": "32"}, "only a provincial officer"),
    (Role.AGENCY, {"tks_id": "t-1"}, "only a TKS"),
])
async def test_a_role_comes_with_exactly_its_scope(pool, role, scope, reason):
    with pytest.raises(users.UserError, match=reason):
        await users.add_user(pool, f"{uuid.uuid4().hex[:6]}@example.id", "panjang-sekali-1",
                             role, **scope)


async def test_sessions_are_known_by_their_hash_and_end_with_a_new_password(pool):
    user = await users.add_user(pool, "tks@example.id", "kata-sandi-lama-1", Role.TKS,
                                tks_id="tks-1")
    token = await users.open_session(pool, user, hours=1)
    assert await pool.fetchval("SELECT count(*) FROM console_sessions WHERE token_hash = $1",
                               token) == 0
    session = await users.find_session(pool, token)
    assert session.user == user and len(session.csrf_token) >= 32
    await users.add_user(pool, "tks@example.id", "kata-sandi-baru-2", Role.TKS, tks_id="tks-1",
                         replace=True)
    assert await users.find_session(pool, token) is None


async def add_admin(database_url: str, email: str) -> tuple[int, str]:
    """`tkm console add-admin`, as an operator runs it (its own process)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scripts.cli", "console", "add-admin", email, "--password-stdin",
        cwd=ROOT, env={**os.environ, "CONSOLE_DATABASE_URL": database_url, "TKM_ENV": "test"},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate(b"pertama-kali-masuk\n")
    return proc.returncode, out.decode()


async def test_add_admin_bootstraps_the_first_administrator(database_url):
    code, output = await add_admin(database_url, "menteri@kemnaker.go.id")
    assert code == 0, output
    assert "ministry_admin" in output
    conn = await asyncpg.connect(database_url)
    try:
        role = await conn.fetchval("SELECT role FROM console_users WHERE email = $1",
                                   "menteri@kemnaker.go.id")
    finally:
        await conn.close()
    assert role == "ministry_admin"
    code, output = await add_admin(database_url, "menteri@kemnaker.go.id")
    assert code == 1 and "already exists" in output
