"""The `tkm` command line: tokens for local runs, the programme demo, operations.

Errors are one line on stderr, never a traceback: a usage error exits 2, any other failure 1
(`TKM_DEBUG=1` shows the traceback)."""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import typer

try:  # typer 0.2x vendors click
    from typer._click import exceptions as _click_errors
except ImportError:  # pragma: no cover - older typer, on click itself
    from click import exceptions as _click_errors

from scripts.dlq import app as dlq_app
from shared.auth import MAX_TOKEN_LIFETIME, Role, mint_token, pseudonym
from shared.settings import DEV_SIGNING_KEY



class _Cli(typer.Typer):
    """The app, with one-line errors: click's usage errors and any unexpected exception are
    printed as `tkm: <what went wrong>`, not as a box or a traceback."""

    def __call__(self, *args, **kwargs):
        kwargs.setdefault("prog_name", "tkm")
        try:
            code = super().__call__(*args, standalone_mode=False, **kwargs)
        except _click_errors.NoArgsIsHelpError as exc:
            typer.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(2)
        except _click_errors.ClickException as exc:  # usage errors: exit 2
            where = exc.ctx.command_path if getattr(exc, "ctx", None) else "tkm"
            message = " ".join(exc.format_message().split()).replace("Value error, ", "")
            typer.echo(f"{where}: {message} (see {where} --help)", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("tkm: aborted", err=True)
            sys.exit(130)
        except Exception as exc:  # an operator's tool: one line, not a traceback
            if os.environ.get("TKM_DEBUG"):
                raise
            lines = str(exc).strip().splitlines()
            typer.echo(f"tkm: {type(exc).__name__}: {lines[0] if lines else 'failed'}",
                       err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = _Cli(help="Kemnaker TKS/TKM event backbone", no_args_is_help=True,
           pretty_exceptions_enable=False)
app.add_typer(dlq_app, name="dlq")
app.add_typer(__import__("scripts.agency", fromlist=["app"]).app, name="agency")
# `tkm approvals list|grant|reject --service groups|evaluation`: four eyes by hand
app.add_typer(__import__("scripts.approvals", fromlist=["app"]).app, name="approvals")
# `tkm privacy export|erase|correct`: a person's rights by NIK on every service holding them
app.add_typer(__import__("scripts.privacy", fromlist=["app"]).app, name="privacy")
# `tkm console [serve|add-admin|add-user]`: the programme console (services/console)
app.add_typer(__import__("services.console.__main__", fromlist=["cli"]).cli, name="console")


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
             instances: int = typer.Option(1, min=1, help="processes per service, round-robin"),
             ) -> None:
    """Fresh infrastructure and services, a programme year through their APIs, the results.
    Exit codes: 0 done, 1 the year failed, 2 a service did not come up, 3 infrastructure."""
    from scripts.demo import run_demo
    from scripts.simulate import Options

    raise typer.Exit(run_demo(seed=seed, groups=groups, json_out=json_out,
                              keep_running=keep_running, instances=instances,
                              options=Options(missing_share=missing_share,
                                              late_share=late_share)))


@app.command()
def demo(groups: int | None = typer.Option(None, help="scale the 2023 intake to N groups"),
         json_out: Path | None = typer.Option(None, "--json", help="write results here"),
         instances: int = typer.Option(1, min=1, help="processes per service, round-robin"),
         ) -> None:
    """The default programme year (the 2023 figures), as `make demo` runs it
    (`make demo DEMO_ARGS="--instances 2"`: two processes of each service)."""
    from scripts.demo import run_demo

    raise typer.Exit(run_demo(groups=groups, json_out=json_out, instances=instances))


@app.command("load-history")
def load_history(directory: Path = typer.Argument(..., exists=True, file_okay=False,
                                                  help="the year's CSV files (docs/history.md)"),
                 year: int = typer.Option(..., min=2000, max=2100, help="the programme year"),
                 refused: Path | None = typer.Option(None, help="write every refused row "
                                                                "here (CSV)"),
                 key: str = typer.Option(DEV_SIGNING_KEY, envvar="TKM_AUTH_SIGNING_KEY",
                                         show_default=False, help="signing key of the admin "
                                         "token (TKM_AUTH_SIGNING_KEY)")) -> None:
    """Load a past programme year from CSV files through the four services' APIs, as it
    happened (registration, funding and assignment dates; ages by the year's rules), then the
    figures each service gives beside the files'. A re-run loads nothing twice. Services at
    <SERVICE>_URL, else 127.0.0.1:<SERVICE>_HTTP_PORT (8101-8104).
    Exit codes: 0 all loaded and agreeing, 1 figures differ, 2 files unreadable, 3 rows refused
    (reported) and the rest agreeing."""
    from rich.console import Console

    from scripts.load_history import run
    from scripts.status import base_urls

    raise typer.Exit(run(directory, year, base_urls(), console=Console(), signing_key=key,
                         refused_out=refused))


@app.command("history-example")
def history_example(out: Path = typer.Option(..., help="directory for the CSV files"),
                    year: int = typer.Option(2021, min=2000, max=2100),
                    scale: float = typer.Option(1.0, min=0.001, max=1.0,
                                                help="0.04: 27 TKS and 250 groups"),
                    seed: int = typer.Option(2021, help="same seed, same files"),
                    mentors: bool = typer.Option(True, help="write mentors.csv (else "
                                                 "mentoring's rule assigns)"),
                    reports: bool = typer.Option(False, help="write reports.csv")) -> None:
    """Write a seeded past year in the layout of `tkm load-history` (the 2021 shape: 664 TKS,
    6,250 groups of 16)."""
    from scripts.history_example import generate

    figures = generate(out, year=year, scale=scale, seed=seed, mentors=mentors,
                       reports=reports)
    typer.echo(", ".join(f"{k} {v:,}" for k, v in figures.items()) + f" -> {out}")


@app.command("history-demo")
def history_demo(year: int = typer.Option(2021, min=2000, max=2100),
                 scale: float = typer.Option(1.0, min=0.001, max=1.0),
                 seed: int = typer.Option(2021),
                 mentors: bool = typer.Option(True, help="mentors.csv, else the rule"),
                 reports: bool = typer.Option(False)) -> None:
    """`make history`: fresh infrastructure and services, the seeded year generated and
    loaded, the table and the wall time."""
    from scripts.load_history import run_with_own_services

    raise typer.Exit(run_with_own_services(year=year, scale=scale, seed=seed, mentors=mentors,
                                           reports=reports))


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


@app.command()
def status(service: list[str] | None = typer.Option(
               None, "--service", "-s", help="only these services (repeatable)"),
           as_json: bool = typer.Option(False, "--json", help="JSON instead of a table"),
           database: bool = typer.Option(
               False, "--database", help="also read each <SERVICE>_DATABASE_URL: outbox, "
                                         "pending dead letters, relay lease holder"),
           plain: bool = typer.Option(False, "--plain", help="a plain text table"),
           timeout: float = typer.Option(3.0, min=0.1, help="seconds per request")) -> None:
    """Every service's readiness, degraded reasons, consumer lag per topic, outbox backlog and
    oldest age, dead letters and relay leader, from /healthz, /readyz and /metrics (base URLs
    <SERVICE>_URL, else 127.0.0.1:<SERVICE>_HTTP_PORT, default 8101-8104).
    Exit codes: 0 every service ready and not degraded, 1 otherwise."""
    from scripts.status import run

    try:
        code, text = run(services=service, as_json=as_json, database=database, plain=plain,
                         timeout=timeout)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--service") from None
    typer.echo(text)
    raise typer.Exit(code)


@app.command()
def faults(seed: int = typer.Option(2023, help="same seed, same faults and workload"),
           brokers: int = typer.Option(1, min=1, max=3, help="1, or a 3-broker cluster"),
           instances: int = typer.Option(1, min=1, max=2, help="instances per service"),
           short: bool = typer.Option(False, help="the variant of `make test`"),
           json_out: Path | None = typer.Option(None, "--json", help="write results here")
           ) -> None:
    """The fault suite (`make faults`): its own infrastructure and services, a seeded workload,
    kill -9 / SIGSTOP faults, then the conservation checks (docs/operations.md "Fault suite").
    Exit codes: 0 every check passed, 1 a check failed, 2 the set-up failed."""
    from scripts.faults import main

    args = ["--seed", str(seed), "--brokers", str(brokers), "--instances", str(instances)]
    args += ["--short"] if short else []
    args += ["--json", str(json_out)] if json_out else []
    raise typer.Exit(main(args))


if __name__ == "__main__":
    app()
