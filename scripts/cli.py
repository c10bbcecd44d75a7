"""The `tkm` command line: tokens for local runs, the demo."""

from __future__ import annotations

from datetime import timedelta

import typer

from shared.auth import Role, mint_token
from shared.settings import DEV_SIGNING_KEY

app = typer.Typer(help="Kemnaker TKS/TKM event backbone", no_args_is_help=True)


@app.command()
def token(role: Role = typer.Option(..., help="who the caller is"),
          subject: str = typer.Option("local-user", help="the caller's id"),
          province: str | None = typer.Option(None, help="province code (provincial officer)"),
          tks_id: str | None = typer.Option(None, help="TKS id (role tks)"),
          hours: int = typer.Option(12, help="validity"),
          key: str = typer.Option(DEV_SIGNING_KEY, envvar="TKM_AUTH_SIGNING_KEY",
                                  help="signing key (TKM_AUTH_SIGNING_KEY)")) -> None:
    """Print a signed bearer token for the HTTP APIs."""
    typer.echo(mint_token(key, subject, role, province_code=province, tks_id=tks_id,
                          ttl=timedelta(hours=hours)))


@app.command()
def demo() -> None:
    """Bring up the infrastructure and run the programme demo (see README)."""
    from scripts.demo import run_demo

    raise typer.Exit(run_demo())


if __name__ == "__main__":
    app()
