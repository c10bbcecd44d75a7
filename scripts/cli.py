"""The `tkm` command line: tokens for local runs, the programme demo."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import typer

from scripts.dlq import app as dlq_app
from shared.auth import MAX_TOKEN_LIFETIME, Role, mint_token, pseudonym
from shared.settings import DEV_SIGNING_KEY

app = typer.Typer(help="Kemnaker TKS/TKM event backbone", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(__import__("scripts.agency", fromlist=["app"]).app, name="agency")


@app.command()
def token(role: Role = typer.Option(..., help="who the caller is"),
          subject: str = typer.Option("local-user", help="the caller's id"),
          province: str | None = typer.Option(None, help="province code (provincial officer)"),
          tks_id: str | None = typer.Option(None, help="TKS id (role tks)"),
          hours: float = typer.Option(12, min=0.01, max=MAX_TOKEN_LIFETIME.total_seconds() / 3600,
                                      help="validity in hours (at most 24)"),
          key: str = typer.Option(DEV_SIGNING_KEY, envvar="TKM_AUTH_SIGNING_KEY",
                                  show_default=False,
                                  help="signing key (TKM_AUTH_SIGNING_KEY; default: the dev "
                                       "key, which only TKM_ENV=dev or test services accept)"),
          ) -> None:
    """Print a signed bearer token for the HTTP APIs."""
    try:
        token = mint_token(key, subject, role, province_code=province, tks_id=tks_id,
                           ttl=timedelta(hours=hours))
    except ValueError as exc:  # a scoped role without its scope
        raise typer.BadParameter(str(exc)) from None
    typer.echo(token)


@app.command("actor-id")
def actor_id(subject: str = typer.Argument(..., help="a token subject"),
             role: Role = typer.Option(..., help="the role the subject acts in"),
             key: str = typer.Option(DEV_SIGNING_KEY, envvar="TKM_AUTH_SIGNING_KEY",
                                     help="signing key (TKM_AUTH_SIGNING_KEY)")) -> None:
    """The actor id a subject's commands record in events (role and pseudonym), for audits."""
    typer.echo(f"{role.value}:{pseudonym(key, subject)}")


@app.command()
def simulate(seed: int = typer.Option(2023, help="same seed, same year"),
             groups: int | None = typer.Option(None, help="scale the 2023 intake to N groups"),
             json_out: Path | None = typer.Option(None, "--json", help="write results here"),
             keep_running: bool = typer.Option(False, help="leave services and infra up"),
             missing_share: float = typer.Option(0.04, help="reports never filed (diligent TKS)"),
             late_share: float = typer.Option(0.06, help="reports filed late (diligent TKS)"),
             ) -> None:
    """Fresh infrastructure and services, a programme year through their APIs, the results.
    Exit codes: 0 done, 1 the year failed, 2 a service did not come up, 3 infrastructure."""
    from scripts.demo import run_demo
    from scripts.simulate import Options

    raise typer.Exit(run_demo(seed=seed, groups=groups, json_out=json_out,
                              keep_running=keep_running,
                              options=Options(missing_share=missing_share,
                                              late_share=late_share)))


@app.command()
def demo(groups: int | None = typer.Option(None, help="scale the 2023 intake to N groups"),
         json_out: Path | None = typer.Option(None, "--json", help="write results here")) -> None:
    """The default programme year (the 2023 figures), as `make demo` runs it."""
    from scripts.demo import run_demo

    raise typer.Exit(run_demo(groups=groups, json_out=json_out))


@app.command()
def rebuild(service: str = typer.Argument(
        ..., help="recruitment, groups, mentoring or evaluation")) -> None:
    """Rebuild a service's read models from its event store and the topics it consumes, while
    it keeps running: the replay writes shadow tables without locking the live ones, then one
    short transaction catches up and swaps them in (readers and writers wait only for that).
    Tables of rules (uniqueness, caseloads) are never rebuilt. Uses <SERVICE>_DATABASE_URL and
    KAFKA_BOOTSTRAP_SERVERS."""
    from scripts.rebuild import run

    code, message = run(service)
    typer.echo(message, err=code != 0)
    raise typer.Exit(code)


if __name__ == "__main__":
    app()
