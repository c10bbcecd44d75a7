"""`tkm privacy export|erase|correct`: a person's rights under UU PDP by NIK, on every service
that holds personal data (docs/privacy.md).

Each service answers for what it holds (`POST /privacy/subject-access`, `/privacy/erasure`,
`/privacy/correction`, ministry admin only, each call an audited command); this command asks
all of them and puts the answers together. The NIK is read from `--nik-file` or standard input
when not given, so it need not stand in the shell's history; it goes in request bodies only.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import typer

from scripts.approvals import KEY, TOKEN, _answer, _client

# the services that hold personal data (ServiceSpec.personal_data); the others have none
SERVICES = ("recruitment", "groups")
REASON_CODES = ("subject_request", "retention_ended", "unlawful_processing")

app = typer.Typer(help="A person's data by NIK: subject-access export, correction, erasure "
                       "(docs/privacy.md)", no_args_is_help=True)

NIK = typer.Option(None, "--nik", show_default=False,
                   help="the person's NIK; else read from --nik-file or standard input")
NIK_FILE = typer.Option(None, "--nik-file", exists=True, dir_okay=False, show_default=False,
                        help="a file holding the NIK (keeps it out of the shell's history)")
SUBJECT = typer.Option("privacy-officer@kemnaker.go.id",
                       help="the caller's id when minting a ministry admin's token")


def _nik(nik: str | None, nik_file: Path | None) -> str:
    if nik is None:
        nik = nik_file.read_text() if nik_file else sys.stdin.readline()
    nik = nik.strip()
    if not nik:
        raise typer.BadParameter("no NIK given", param_hint="--nik")
    return nik


def _each(path: str, body: dict[str, Any], token: str | None, subject: str,
          key: str | None) -> dict[str, Any]:
    """{service: answer} of one privacy route on every service holding personal data, each
    under its own idempotency key (a retried erasure is harmless anyway)."""
    answers = {}
    for service in SERVICES:
        with _client(service, token, subject, "ministry_admin", None, key) as client:
            answers[service] = _answer(client.post(
                f"/privacy/{path}", json=body,
                headers={"Idempotency-Key": f"tkm-privacy-{uuid.uuid4()}"}))
    return answers


@app.command("export")
def export(nik: str | None = NIK, nik_file: Path | None = NIK_FILE,
           out: Path | None = typer.Option(None, "--out", "-o", dir_okay=False,
                                           help="write the export here (JSON); else stdout"),
           token: str | None = TOKEN, subject: str = SUBJECT, key: str | None = KEY) -> None:
    """Everything the system holds about one NIK, as one JSON document (right of access)."""
    answers = _each("subject-access", {"nik": _nik(nik, nik_file)}, token, subject, key)
    document = json.dumps({"services": answers}, indent=2, ensure_ascii=False, default=str)
    if out is None:
        typer.echo(document)
    else:
        out.write_text(document + "\n")
        out.chmod(0o600)  # it is the person's data
    found = [s for s, a in answers.items() if a.get("found")]
    typer.echo(f"found in: {', '.join(found) or 'no service'}; "
               f"{sum(len(a.get('records', [])) for a in answers.values())} records", err=True)


@app.command("erase")
def erase(reason_code: str = typer.Option(..., "--reason-code",
                                          help="why: " + ", ".join(REASON_CODES)),
          nik: str | None = NIK, nik_file: Path | None = NIK_FILE,
          yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation"),
          token: str | None = TOKEN, subject: str = SUBJECT, key: str | None = KEY) -> None:
    """Erase a person in every service: their data keys go, counts and rupiah stay."""
    if reason_code not in REASON_CODES:
        raise typer.BadParameter(f"one of {', '.join(REASON_CODES)}", param_hint="--reason-code")
    value = _nik(nik, nik_file)
    if not yes and not typer.confirm("Erase this person's data in every service? This cannot "
                                     "be undone", err=True):
        raise typer.Exit(1)
    answers = _each("erasure", {"nik": value, "reason_code": reason_code}, token, subject, key)
    for service, a in answers.items():
        typer.echo(f"{service}: erased {a['erased']}, already erased {a['already_erased']}")


@app.command("correct")
def correct(changes: str = typer.Option(..., "--changes",
                                        help='the corrected values as JSON, e.g. '
                                             '\'{"name": "Siti Aminah"}\''),
            service: str = typer.Option(..., "--service", "-s",
                                        help="the service whose record is corrected: "
                                             + " or ".join(SERVICES)),
            nik: str | None = NIK, nik_file: Path | None = NIK_FILE,
            token: str | None = TOKEN, subject: str = SUBJECT, key: str | None = KEY) -> None:
    """Correct a person's values in one service (the fields differ by service)."""
    if service not in SERVICES:
        raise typer.BadParameter(f"one of {', '.join(SERVICES)}", param_hint="--service")
    try:
        values = json.loads(changes)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--changes") from None
    with _client(service, token, subject, "ministry_admin", None, key) as client:
        answer = _answer(client.post(
            "/privacy/correction", json={"nik": _nik(nik, nik_file), "changes": values},
            headers={"Idempotency-Key": f"tkm-privacy-{uuid.uuid4()}"}))
    typer.echo(f"{service}: corrected {answer['corrected']}")
