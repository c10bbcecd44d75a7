"""`python -m services.console` serves the console; `python -m services.console add-user ...`
creates a user (the first ministry admin, then the others)."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys

import typer

cli = typer.Typer(help="The programme console", no_args_is_help=False,
                  invoke_without_command=True)


@cli.callback()
def main(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        serve()


@cli.command()
def serve() -> None:
    """Serve the console (CONSOLE_HTTP_PORT, default 8105)."""
    import uvicorn

    from services.console.app import create_app
    from services.console.settings import load_settings
    from shared.observability import configure_logging

    try:
        settings = load_settings()
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging("console", settings.log_level)
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port,
                log_level=settings.log_level.lower(), access_log=False)


@cli.command("add-user")
def add_user(email: str = typer.Argument(..., help="the user's e-mail: their sign-in name"),
             role: str = typer.Option(..., help="ministry_admin | provincial_officer | tks | "
                                               "agency"),
             province: str | None = typer.Option(None, help="a provincial officer's province"),
             tks_id: str | None = typer.Option(None, help="a TKS user's TKS id"),
             name: str | None = typer.Option(None, help="the name shown on the pages"),
             replace: bool = typer.Option(False, help="overwrite an existing user (a new "
                                                      "password ends their sessions)"),
             password_stdin: bool = typer.Option(False, "--password-stdin",
                                                 help="read the password from standard input")
             ) -> None:
    """Create a console user. The password is asked for (or read from stdin, or from
    CONSOLE_NEW_USER_PASSWORD), never taken as an argument: it would stay in the shell history."""
    _create(email, role, province, tks_id, name, replace, password_stdin)


@cli.command("add-admin")
def add_admin(email: str = typer.Argument(..., help="the administrator's e-mail"),
              name: str | None = typer.Option(None, help="the name shown on the pages"),
              password_stdin: bool = typer.Option(False, "--password-stdin",
                                                  help="read the password from standard input")
              ) -> None:
    """The first ministry administrator (who then adds the others with add-user)."""
    _create(email, "ministry_admin", None, None, name, False, password_stdin)


def _create(email: str, role: str, province: str | None, tks_id: str | None,
            name: str | None, replace: bool, password_stdin: bool) -> None:
    from services.console import db, users
    from services.console.settings import load_settings

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = os.environ.get("CONSOLE_NEW_USER_PASSWORD") or getpass.getpass("password: ")

    async def run() -> users.User:
        pool = await db.connect(load_settings().database_url, max_size=2)
        try:
            return await users.add_user(pool, email, password, role, display_name=name,
                                        province_code=province, tks_id=tks_id, replace=replace)
        finally:
            await pool.close()

    import asyncpg

    try:
        user = asyncio.run(run())
    except (ValueError, OSError, asyncpg.PostgresError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    scope = user.province_code or user.tks_id or "all"
    typer.echo(f"user {user.email} ({user.role.value}, scope {scope}) "
               f"{'replaced' if replace else 'created'}")


if __name__ == "__main__":
    cli()
