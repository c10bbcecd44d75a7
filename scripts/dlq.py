"""`tkm dlq`: a service's dead letters, listed, shown and replayed (see `shared.dlq`).

Uses the service's <SERVICE>_DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS, and reads the topics as the
admin (ADMIN_KAFKA_*, see shared.dlq). Any failure is one line
on stderr and exit code 1; a replay that applied nothing because the letter still fails is one
too, and changes nothing.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import typer

app = typer.Typer(help="Dead letters: list, show and replay them", no_args_is_help=True)
SERVICE = typer.Option(..., "--service", "-s", help="the consuming service whose letters these are")


@app.command("list")
def list_letters(service: str = SERVICE,
                 pending: bool = typer.Option(False, help="only the letters not replayed yet"),
                 as_json: bool = typer.Option(False, "--json", help="one JSON object a line"),
                 ) -> None:
    """List every letter: id, status, event type, source and reason.

    Reads tkm.<service>.dlq.v1 from offset 0; the status is the inbox's: pending (not applied
    yet), replayed, or unknown (no inbox row)."""

    async def run() -> None:
        letters = await _letters(service)
        shown = [letter for letter in letters if not pending or letter.status == "pending"]
        for letter in shown:
            row = letter.summary()
            if as_json:
                typer.echo(json.dumps(row))
            else:
                reason = " ".join(str(row["reason"]).split())
                typer.echo(f"{row['id']}  {row['status']:<8}  {row['event_type'] or '-'}  "
                           f"{row['source']}  {reason}")
        if not as_json:
            waiting = sum(letter.status == "pending" for letter in letters)
            typer.echo(f"{len(letters)} letters, {waiting} pending", err=True)

    _run(run)


@app.command()
def show(service: str = SERVICE,
         event_id: str = typer.Option(..., "--event-id", help="the letter's id or event id"),
         ) -> None:
    """One letter in full, with its original record."""
    from shared.dlq import find

    async def run() -> None:
        letter = find(await _letters(service), event_id)
        typer.echo(json.dumps(letter.detail(), indent=2, ensure_ascii=False))

    _run(run)


@app.command()
def replay(service: str = SERVICE,
           event_id: str | None = typer.Option(
               None, "--event-id", help="the letter to replay; every pending letter if omitted"),
           ) -> None:
    """Re-drive a letter (or every pending one) to the service's consumer.

    Each is applied by the service's current handlers in one transaction with its inbox row:
    replaying twice applies once. A letter that still fails changes nothing."""
    import asyncpg

    from shared.dlq import DeadLetterError, consumer_for, find
    from shared.dlq import replay as replay_letter
    from shared.settings import load_settings

    async def run() -> None:
        settings = load_settings(service)
        spec = importlib.import_module(f"services.{service}.app").build_spec()
        letters = await _letters(service)
        chosen = ([find(letters, event_id)] if event_id
                  else [letter for letter in letters if letter.status == "pending"])
        if not chosen:
            typer.echo("no pending letters", err=True)
            return
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
        failed = 0
        try:
            consumer = consumer_for(pool, service, spec.handlers, spec.projector)
            for letter in chosen:
                try:
                    outcome = await replay_letter(letter, consumer,
                                                  settings.kafka_bootstrap_servers)
                except DeadLetterError as exc:
                    if event_id:
                        raise
                    failed += 1
                    typer.echo(f"{letter.id}  failed   {exc}")
                    continue
                typer.echo(f"{letter.id}  {'already applied' if outcome == 'duplicate' else outcome}")
        finally:
            await pool.close()
        if failed:
            raise DeadLetterError(f"{failed} of {len(chosen)} letters still fail")

    _run(run)


async def _letters(service: str) -> list:
    from shared.dlq import read_letters, with_status
    from shared.settings import load_settings

    settings = load_settings(service)
    letters = await read_letters(settings.kafka_bootstrap_servers, service)
    return await with_status(settings.database_url, letters)


def _run(make: Callable[[], Awaitable[Any]]) -> None:
    try:
        asyncio.run(make())
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - an operator's tool: one line, not a traceback
        typer.echo(f"error: {_one_line(exc)}", err=True)
        raise typer.Exit(1) from None


def _one_line(exc: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError) and exc.errors():
        text = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
    else:
        lines = str(exc).strip().splitlines()
        text = lines[0] if lines else type(exc).__name__
        # ours say what is wrong in words; anything else is named by its type
        if type(exc).__name__ not in ("DeadLetterError", "ValueError"):
            text = f"{type(exc).__name__}: {text}"
    return text
