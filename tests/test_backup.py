"""scripts/backup.py against the suite's Postgres (18): a service's database, owned by a login
role of its own whose password needs encoding, migrated and filled as the service would, dumped,
dropped, recreated empty, restored; every table's row count comes back (issue 14). Also the
database URL building of shared.settings with such a password."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from scripts import backup
from shared.eventstore import migrate
from shared.settings import database_url_with_password, load_settings

AWKWARD = "s3cr/t+p@ss:%20 #?&"


def test_the_password_is_encoded_into_the_url_and_decoded_by_asyncpg():
    from asyncpg.connect_utils import _parse_connect_dsn_and_args

    url = database_url_with_password("postgresql://groups@postgres:5432/groups", "s3cr/t+p@ss")
    assert url == "postgresql://groups:s3cr%2Ft%2Bp%40ss@postgres:5432/groups"
    addrs, params = _parse_connect_dsn_and_args(
        dsn=url, host=None, port=None, user=None, password=None, passfile=None, database=None,
        ssl=None, direct_tls=None, server_settings=None, target_session_attrs=None,
        krbsrvname=None, gsslib=None, service=None, servicefile=None)[:2]
    assert (params.user, params.password, params.database) == ("groups", "s3cr/t+p@ss", "groups")
    assert addrs == [("postgres", 5432)]
    # a password already in the URL is replaced, the query kept; no password: unchanged
    assert database_url_with_password("postgresql://u:old@h/d?sslmode=require", "n/w") == \
        "postgresql://u:n%2Fw@h/d?sslmode=require"
    assert database_url_with_password("postgresql://u@h/d", None) == "postgresql://u@h/d"
    with pytest.raises(ValueError):
        database_url_with_password("postgresql:///d", "x")  # no host, no user


def test_settings_read_the_password_from_its_file_first(monkeypatch, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cr/t+p@ss\n")
    monkeypatch.setenv("GROUPS_DATABASE_URL", "postgresql://groups@postgres:5432/groups")
    monkeypatch.setenv("GROUPS_DATABASE_PASSWORD", "the-fallback")
    assert load_settings("groups").database_url == \
        "postgresql://groups:the-fallback@postgres:5432/groups"
    monkeypatch.setenv("GROUPS_DATABASE_PASSWORD_FILE", str(secret))
    assert load_settings("groups").database_url == \
        "postgresql://groups:s3cr%2Ft%2Bp%40ss@postgres:5432/groups"
    key = tmp_path / "key"
    key.write_text("k" * 40 + "\n")
    monkeypatch.setenv("TKM_AUTH_SIGNING_KEY_FILE", str(key))
    assert load_settings("groups").auth_signing_key.get_secret_value() == "k" * 40
    monkeypatch.setenv("GROUPS_DATABASE_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="GROUPS_DATABASE_PASSWORD_FILE") as caught:
        load_settings("groups")
    assert "the-fallback" not in str(caught.value)


async def _counts(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        tables = [r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        return {t: await conn.fetchval(f'SELECT count(*) FROM "{t}"') for t in tables}
    finally:
        await conn.close()


@pytest.mark.integration
async def test_dump_drop_recreate_restore_gives_back_every_row(infra, tmp_path: Path,
                                                               monkeypatch):
    role = f"bk_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(infra.database_url("postgres"))
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                            "PASSWORD $1".replace("$1", "'" + AWKWARD.replace("'", "''") + "'"))
        await admin.execute(f"CREATE DATABASE {role} OWNER {role}")
        await admin.execute(f"REVOKE ALL ON DATABASE {role} FROM PUBLIC")
        server = infra.database_url(role)
        # the service's view: URL without password, password from its secret file
        parts = server.split("://", 1)[1].rpartition("@")[2]
        monkeypatch.setenv("GROUPS_DATABASE_URL", f"postgresql://{role}@{parts}")
        secret = tmp_path / "postgres_groups_password"
        secret.write_text(AWKWARD + "\n")
        monkeypatch.setenv("GROUPS_DATABASE_PASSWORD_FILE", str(secret))
        url = backup.service_database_url("groups")
        assert AWKWARD not in url  # encoded

        conn = await asyncpg.connect(url)  # as the owner role, not the superuser
        try:
            assert await conn.fetchval("SELECT current_user") == role
            await migrate(conn, "groups", Path("services/groups/migrations"))
            await conn.execute(
                "CREATE TABLE smoke_rows (id int PRIMARY KEY, note text);"
                "INSERT INTO smoke_rows SELECT g, 'row ' || g FROM generate_series(1, 250) g;")
        finally:
            await conn.close()
        before = await _counts(url)
        assert before["smoke_rows"] == 250 and before["schema_migrations"] > 0

        assert backup.main(["dump", str(tmp_path / "dumps"), "groups"]) == 0
        archive = tmp_path / "dumps" / "groups.dump"
        assert archive.stat().st_size > 0 and AWKWARD.encode() not in archive.read_bytes()

        await admin.execute(f"DROP DATABASE {role} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {role} OWNER {role}")
        assert await _counts(url) == {}

        assert backup.main(["restore", str(tmp_path / "dumps"), "groups"]) == 0
        assert await _counts(url) == before
        conn = await asyncpg.connect(url)
        try:  # restored objects belong to the service's role (it can migrate them later)
            owners = {r["tableowner"] for r in await conn.fetch(
                "SELECT tableowner FROM pg_tables WHERE schemaname = 'public'")}
            assert owners == {role}
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {role} WITH (FORCE)")
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


def test_backup_refuses_an_unknown_service_and_a_missing_archive(tmp_path, monkeypatch):
    assert backup.main(["dump", str(tmp_path), "payroll"]) == 2
    monkeypatch.setenv("MENTORING_DATABASE_URL", "postgresql://mentoring@127.0.0.1:1/mentoring")
    assert backup.main(["restore", str(tmp_path), "mentoring"]) == 1
