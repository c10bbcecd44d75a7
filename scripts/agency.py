"""`tkm agency`: onboard, list and revoke the agencies that subscribe to the contract topics.

Each agency is a SCRAM-SHA-512 principal named after it, allowed to read the four contract
topics with consumer groups prefixed `<agency>.` (shared/kafka_acls.py), nothing else.

The admin connection: `ADMIN_KAFKA_USERNAME` and `ADMIN_KAFKA_PASSWORD(_FILE)` with
`KAFKA_SECURITY_PROTOCOL`, `KAFKA_CA_FILE` and `KAFKA_BOOTSTRAP_SERVERS` when set (what
`python -m scripts.infra env` prints for a secured local broker); otherwise the secured local
broker of `TKM_INFRA_DIR` (`.infra/`) directly.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Agencies subscribing to the contract topics (secured broker only)",
                  no_args_is_help=True)

ROOT = Path(__file__).resolve().parent.parent


class AgencyError(RuntimeError):
    """A refusal the CLI prints as one line."""


@dataclass
class AdminConnection:
    bootstrap: str
    client: dict[str, Any]  # aiokafka security kwargs of the admin principal
    ca_file: Path | None


def admin_connection() -> AdminConnection:
    from scripts import infra
    from shared.kafka_security import kafka_security

    state = Path(os.environ.get("TKM_INFRA_DIR", infra.DEFAULT_STATE))
    if os.environ.get("ADMIN_KAFKA_USERNAME"):
        try:
            sec = kafka_security(service="admin")
        except ValueError as exc:
            raise AgencyError(_first_line(exc)) from exc
        if not sec.secured:
            raise AgencyError("agencies need the secured broker (KAFKA_SECURITY_PROTOCOL=SASL_SSL)")
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or _saved_bootstrap(state)
        return AdminConnection(bootstrap, sec.admin_kwargs(), sec.kafka_ca_file)
    if infra.kafka_security_of(state) != infra.SASL_SSL or not (state / "kafka.bootstrap").exists():
        raise AgencyError(f"no secured broker in {state}: start one with make infra-up "
                          "(a fresh TKM_INFRA_DIR) or set "
                          "ADMIN_KAFKA_USERNAME/ADMIN_KAFKA_PASSWORD_FILE and "
                          "KAFKA_BOOTSTRAP_SERVERS")
    return AdminConnection(_saved_bootstrap(state), infra._admin_client_kwargs(state),
                           infra.ca_file(state))


def _saved_bootstrap(state: Path) -> str:
    try:
        return (state / "kafka.bootstrap").read_text().strip()
    except OSError as exc:
        raise AgencyError("KAFKA_BOOTSTRAP_SERVERS is not set") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # pydantic puts the reason on the third line: "Value error, <reason> [type=...]"
    for line in text.splitlines():
        if "Value error, " in line:
            return line.split("Value error, ", 1)[1].split(" [type=")[0]
    return text.splitlines()[0] if text else type(exc).__name__


async def _with_admin(conn: AdminConnection, work):
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=conn.bootstrap, request_timeout_ms=15000,
                                **conn.client)
    try:
        try:
            await admin.start()
        except KafkaError as exc:
            raise AgencyError(f"cannot reach the broker at {conn.bootstrap} as admin: "
                              f"{type(exc).__name__}") from exc
        return await work(admin)
    finally:
        await admin.close()


async def add_agency(conn: AdminConnection, name: str, rotate: bool = False) -> str:
    """Create (or with `rotate`, replace) the agency's credentials and its ACLs; the password."""
    from shared import kafka_acls as acls

    try:
        acls.check_agency_name(name)
    except ValueError as exc:
        raise AgencyError(str(exc)) from exc
    password = secrets.token_urlsafe(24)

    async def work(admin) -> str:
        exists = name in await acls.scram_users(admin)
        if exists and not rotate:
            raise AgencyError(f"agency {name!r} already exists: `tkm agency add {name} --rotate` "
                              f"gives it a new password, `tkm agency revoke {name}` removes it")
        await acls.create_acls(admin, acls.agency_acls(name))
        await acls.upsert_scram(admin, {name: password})
        return password

    return await _with_admin(conn, work)


async def revoke_agency(conn: AdminConnection, name: str) -> int:
    """Delete the agency's ACLs (its open connections are refused from their next request) and
    its credentials (no new connection authenticates). Returns the number of ACLs deleted."""
    from shared import kafka_acls as acls

    try:
        acls.check_agency_name(name)
    except ValueError as exc:
        raise AgencyError(str(exc)) from exc

    async def work(admin) -> int:
        deleted = await acls.delete_acls(admin, f"User:{name}")
        had_credentials = await acls.delete_scram(admin, name)
        if not deleted and not had_credentials:
            raise AgencyError(f"no agency named {name!r}")
        return deleted

    return await _with_admin(conn, work)


async def list_agencies(conn: AdminConnection) -> dict[str, list[str]]:
    """Agency -> its group prefixes (an agency with ACLs but no credentials shows too)."""
    from shared import kafka_acls as acls

    reserved = {*acls.SUPER_USERS, *acls.SERVICES}

    async def work(admin) -> dict[str, list[str]]:
        users = set(await acls.scram_users(admin)) - reserved
        bindings = await acls.describe_acls(admin)
        found: dict[str, list[str]] = {u: [] for u in users}
        for b in bindings:
            user = b.principal.removeprefix("User:")
            if user in reserved:
                continue
            found.setdefault(user, [])
            if b.resource_type is acls.ResourceType.GROUP:
                found[user].append(b.resource_name)
        return dict(sorted(found.items()))

    return await _with_admin(conn, work)


def _run(coro):
    from aiokafka.errors import KafkaError

    from shared.kafka_acls import KafkaAdminError

    try:
        return asyncio.run(coro)
    except (AgencyError, KafkaAdminError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except (KafkaError, OSError) as exc:
        typer.echo(f"error: the broker refused or failed: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None


def _connection() -> AdminConnection:
    try:
        return admin_connection()
    except AgencyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command("add")
def add(name: str = typer.Argument(..., help="the agency's name: its username and group prefix"),
        rotate: bool = typer.Option(False, help="replace an existing agency's password")) -> None:
    """Create the agency's credentials and read-only ACLs; print what it needs to connect
    (the password is shown only this once)."""
    from shared.kafka_acls import CONTRACT_TOPICS, agency_group_prefix

    conn = _connection()
    password = _run(add_agency(conn, name, rotate=rotate))
    ca = conn.ca_file
    lines = [
        f"agency {name} {'has a new password' if rotate else 'onboarded'}",
        f"  bootstrap servers : {conn.bootstrap}",
        "  security protocol : SASL_SSL, mechanism SCRAM-SHA-512",
        f"  username          : {name}",
        f"  password          : {password}",
        "                      (shown once: hand it over now; it is stored nowhere in clear)",
        f"  consumer groups   : must begin with '{agency_group_prefix(name)}' "
        f"(e.g. {agency_group_prefix(name)}funding-table)",
        f"  topics (read only): {', '.join(CONTRACT_TOPICS)}",
        f"  CA certificate    : {ca if ca else 'the system trust store'}",
    ]
    if ca and ca.exists():
        lines.append(ca.read_text().rstrip())
    lines += [
        f"  contracts         : {ROOT / 'docs' / 'contracts' / 'asyncapi.json'}",
        f"  guide             : {ROOT / 'docs' / 'agencies.md'}",
        f"  example           : {ROOT / 'examples' / 'agency_subscriber'}",
    ]
    typer.echo("\n".join(lines))


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """The onboarded agencies and their group prefixes."""
    import json

    found = _run(list_agencies(_connection()))
    if json_out:
        typer.echo(json.dumps(found))
        return
    if not found:
        typer.echo("no agencies")
    for name, prefixes in found.items():
        typer.echo(f"{name}  groups: {', '.join(prefixes) or '(no ACLs: revoked half-way?)'}")


@app.command("revoke")
def revoke(name: str = typer.Argument(..., help="the agency to remove")) -> None:
    """Delete the agency's ACLs and credentials: its next request is refused."""
    deleted = _run(revoke_agency(_connection(), name))
    typer.echo(f"agency {name} revoked: {deleted} ACLs and its credentials deleted")
