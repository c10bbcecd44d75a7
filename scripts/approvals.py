"""Four eyes for the project's clients (docs/four-eyes.md): the maker's call, then a checker.

Funding a group, accepting an LPJ and closing a year's evaluation answer `202 {"state":
"pending", "request_id", ...}` when the year's rules want four eyes (a bulk call answers it per
item, `status: 202`); another person with a checking role then grants it (`POST
/approvals/{id}/grant`, or `POST /approvals/grant` with up to 500 ids) and the grant answers
what the command would have answered. The helpers below take either answer: a direct result
(rules without four eyes, a service that has not adopted them) is passed through unchanged, a
pending one is granted by `checker` (`Api.person`: another token subject) and replaced by the
grant's result. The simulator, the demo, the fault suite, the bench and the history loader
go through them.

`tkm approvals list|grant|reject --service groups|evaluation` is the same flow by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import typer

from scripts.api_client import Api, ApiError

CHECKER = "checker@kemnaker.go.id"  # the clients' second person (a ministry admin)
MAX_GRANT = 500  # POST /approvals/grant takes 1..500 request ids
PENDING, GRANTED = "pending", "granted"


def checker_of(api: Api, subject: str = CHECKER) -> Api:
    """`api` as the checker: another ministry admin, on the same connections."""
    return api.person(subject)


def pending_id(answer: Any) -> str | None:
    """The request id of a pending answer (`{"state": "pending", "request_id", ...}`), else
    None (the command was carried out at once, or refused)."""
    if isinstance(answer, dict) and answer.get("state") == PENDING and answer.get("request_id"):
        return str(answer["request_id"])
    return None


def waiting_id(item: dict[str, Any]) -> str | None:
    """The request a bulk item is, or waits on: its own pending request (202), or the one
    already waiting for the same command (409 naming `error.request_id`: groups keeps one
    pending request per group and tranche, or per report), asked by an earlier call whose
    answer was lost or never granted."""
    request_id = pending_id(item.get("result"))
    error = item.get("error") or {}
    if request_id is None and item.get("status") == 409 and error.get("request_id") \
            and error.get("result") is None:
        request_id = str(error["request_id"])
    return request_id


async def carried_out(checker: Api, service: str, answer: Any) -> Any:
    """What the command answered: `answer` itself when it was carried out at once, else the
    result of the checker's grant of its pending request."""
    request_id = pending_id(answer)
    if request_id is None:
        return answer
    return await grant(checker, service, request_id)


async def grant(checker: Api, service: str, request_id: str) -> Any:
    """Grant one request; its command's result. A request granted before (a retried grant
    whose first answer was lost) gives that first result; any other refusal raises ApiError."""
    try:
        answer = await checker.post(service, f"/approvals/{request_id}/grant", ok=(409,))
    except ApiError as exc:  # the fault suite's client raises its "answer lost" 409
        if exc.status != 409:
            raise
        answer = exc.body
    if isinstance(answer, dict) and "error" not in answer:
        return answer["result"]
    first = _first_result(answer)
    if first is not None:
        return first
    # carried out but its answer not recorded (the process died): read the request itself
    request = await checker.get(service, f"/approvals/{request_id}")
    if request["state"] == GRANTED and request.get("result") is not None:
        return request["result"]
    raise ApiError("POST", f"{service} /approvals/{request_id}/grant", 409, answer)


def _first_result(answer: Any) -> Any:
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict) and error.get("state") == GRANTED:
        return error.get("result")
    return None


async def carried_out_bulk(checker: Api, service: str, answer: dict[str, Any]
                           ) -> dict[str, Any]:
    """A bulk answer (`{"results": [...]}`) with each pending item replaced by its grant:
    `status` 200 and the command's `result`, or the grant's refusal (`status`, `error`). Items
    carried out at once or refused when made are left as they are; an item refused because
    its request already waits (`waiting_id`) has that request granted. Grants go in chunks of
    `MAX_GRANT`, one after another."""
    results = answer["results"]
    pending = [(i, rid) for i, item in enumerate(results) if (rid := waiting_id(item))]
    if not pending:
        return answer
    decided = await grant_many(checker, service, [rid for _, rid in pending])
    for i, rid in pending:
        kept = {k: v for k, v in results[i].items() if k not in ("status", "result", "error")}
        results[i] = {**kept, "request_id": rid, **decided[rid]}
    return answer


async def grant_many(checker: Api, service: str, request_ids: list[str],
                     chunk: int = MAX_GRANT) -> dict[str, dict[str, Any]]:
    """request id -> `{"status": 200, "result"}` or `{"status", "error"}`, granted with
    `POST /approvals/grant` in chunks of at most `chunk` ids."""
    decided: dict[str, dict[str, Any]] = {}
    for part in _chunks(list(dict.fromkeys(request_ids)), min(chunk, MAX_GRANT)):
        decided.update(await _grant_chunk(checker, service, part))
    return decided


async def _grant_chunk(checker: Api, service: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    try:
        answer = await checker.post(service, "/approvals/grant", {"request_ids": ids})
    except ApiError as exc:
        if exc.status != 409:
            raise
        # carried out (at least in part) but its answer lost: asked again under a new key,
        # each request granted the first time answers 409 with its first result
        answer = await checker.post(service, "/approvals/grant", {"request_ids": ids})
    decided = {}
    for item in answer["results"]:
        if item["status"] == 200:
            decided[item["request_id"]] = {"status": 200, "result": item["result"]}
        elif (first := _first_result(item)) is not None:
            decided[item["request_id"]] = {"status": 200, "result": first}
        else:
            decided[item["request_id"]] = {"status": item["status"], "error": item.get("error")}
    missing = set(ids) - set(decided)
    if missing:
        raise ApiError("POST", f"{service} /approvals/grant", 500,
                       f"no answer for {len(missing)} of {len(ids)} requests")
    return decided


async def grant_pending(checker: Api, service: str, *, command_type: str,
                        targets: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Grant the pending requests of `command_type` on `targets` (streams, e.g. `group-<id>`):
    those a maker's call made although its answer was lost. target -> the grant's outcome."""
    wanted = set(targets)
    try:
        rows = await checker.get_all(service, "/approvals", state=PENDING,
                                     command_type=command_type, checkable="true")
    except ApiError as exc:
        if exc.status != 404:
            raise
        return {}  # a service without four eyes: nothing waits for a checker
    by_id = {r["request_id"]: r["target"] for r in rows if r["target"] in wanted}
    decided = await grant_many(checker, service, list(by_id))
    return {by_id[rid]: outcome for rid, outcome in decided.items()}


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# ---------------------------------------------------------------------------- tkm approvals

app = typer.Typer(help="Four eyes: list, grant and reject pending requests (docs/four-eyes.md)",
                  no_args_is_help=True)
SERVICES = ("groups", "evaluation")


def _service(value: str) -> str:
    if value not in SERVICES:
        raise typer.BadParameter(f"unknown service {value}: one of {', '.join(SERVICES)}")
    return value


SERVICE = typer.Option(..., "--service", "-s", callback=_service,
                       help="groups (funding, tranches, LPJ) or evaluation (the year's close)")
TOKEN = typer.Option(None, "--token", envvar="TKM_TOKEN", show_default=False,
                     help="bearer token of the caller (TKM_TOKEN); else one is minted from "
                          "--subject/--role/--officer-province with the signing key")
SUBJECT = typer.Option(CHECKER, help="the caller's id when minting (a checker must not be "
                                     "the maker)")
ROLE = typer.Option("ministry_admin", help="ministry_admin or provincial_officer")
PROVINCE = typer.Option(None, "--officer-province",
                        help="the caller's province when minting a provincial officer's token")
KEY = typer.Option(None, envvar="TKM_AUTH_SIGNING_KEY", show_default=False,
                   help="signing key when minting (TKM_AUTH_SIGNING_KEY; default: the dev key)")
AS_JSON = typer.Option(False, "--json", help="the service's answer as JSON")


def _client(service: str, token: str | None, subject: str, role: str, province: str | None,
            key: str | None) -> Any:
    import httpx

    from scripts.status import base_urls
    from shared.auth import Role, mint_token
    from shared.settings import DEV_SIGNING_KEY

    if token is None:
        try:
            token = mint_token(key or DEV_SIGNING_KEY, subject, Role(role),
                               province_code=province)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--role") from None
    return httpx.Client(base_url=base_urls()[service], timeout=120,
                        headers={"Authorization": f"Bearer {token}"})


def _answer(response: Any) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if response.status_code >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        where = f" (field {error['field']})" if error.get("field") else ""
        raise RuntimeError(f"{response.request.method} {response.request.url.path} -> "
                           f"{response.status_code}: {error.get('reason') or body}{where}")
    return body


def _key() -> dict[str, str]:
    import uuid

    return {"Idempotency-Key": f"tkm-approvals-{uuid.uuid4()}"}


@app.command("list")
def list_requests(service: str = SERVICE,
                  state: str = typer.Option(PENDING, help="pending, granted, rejected, expired "
                                                         "or any"),
                  province: str | None = typer.Option(None, help="only this province's requests"),
                  command_type: str | None = typer.Option(None, help="fund, change_tranche, "
                                                                     "accept_lpj, close_year"),
                  batch_id: str | None = typer.Option(None, help="one bulk call's requests"),
                  checkable: bool = typer.Option(False, help="only those the caller may decide"),
                  limit: int = typer.Option(50, min=1, max=1000),
                  offset: int = typer.Option(0, min=0),
                  as_json: bool = AS_JSON, token: str | None = TOKEN, subject: str = SUBJECT,
                  role: str = ROLE, caller_province: str | None = PROVINCE,
                  key: str | None = KEY) -> None:
    """Approval requests, oldest first: id, command, target, province, amount, maker, state."""
    params = {"state": state, "province": province, "command_type": command_type,
              "batch_id": batch_id, "checkable": str(checkable).lower(), "limit": limit,
              "offset": offset}
    with _client(service, token, subject, role, caller_province, key) as client:
        page = _answer(client.get("/approvals",
                                  params={k: v for k, v in params.items() if v is not None}))
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    for r in page["items"]:
        amount = f"Rp {r['amount']:,}" if r.get("amount") is not None else "-"
        typer.echo(f"{r['request_id']}  {r['state']:<8}  {r['command_type']:<14}  "
                   f"{r['target']}  {r.get('province_code') or 'national'}  {amount}  "
                   f"maker {r['maker_role']}:{r['maker']}  expires {r['expires_at']}")
    typer.echo(f"{len(page['items'])} of {page['total']} requests", err=True)


@app.command("grant")
def grant_requests(request_ids: list[str] = typer.Argument(None, help="the requests to grant"),
                   service: str = SERVICE,
                   batch_id: str | None = typer.Option(
                       None, help="grant every pending request of this bulk call the caller "
                                  "may check"),
                   as_json: bool = AS_JSON, token: str | None = TOKEN, subject: str = SUBJECT,
                   role: str = ROLE, caller_province: str | None = PROVINCE,
                   key: str | None = KEY) -> None:
    """Grant requests, each carried out once in its own transaction. Exit 1 if any was refused.

    One id: POST /approvals/{id}/grant; several ids or a batch: POST /approvals/grant, 500 at
    a time."""
    ids = list(request_ids or [])
    if not ids and not batch_id:
        raise typer.BadParameter("name request ids or --batch-id", param_hint="REQUEST_IDS")
    refused = 0
    with _client(service, token, subject, role, caller_province, key) as client:
        if batch_id:
            offset = 0
            while True:
                page = _answer(client.get("/approvals", params={
                    "state": PENDING, "batch_id": batch_id, "checkable": "true",
                    "limit": 1000, "offset": offset}))
                ids += [r["request_id"] for r in page["items"]]
                offset += len(page["items"])
                if not page["items"] or offset >= page["total"]:
                    break
        if len(ids) == 1 and not batch_id:
            results = [{"request_id": ids[0], "status": 200,
                        **_answer(client.post(f"/approvals/{ids[0]}/grant", headers=_key()))}]
        else:
            results = []
            for part in _chunks(list(dict.fromkeys(ids)), MAX_GRANT):
                results += _answer(client.post("/approvals/grant", json={"request_ids": part},
                                               headers=_key()))["results"]
    for item in results:
        refused += item["status"] != 200
        if as_json:
            typer.echo(json.dumps(item))
        elif item["status"] == 200:
            typer.echo(f"{item['request_id']}  granted  {_brief(item.get('result'))}")
        else:
            error = item.get("error") or {}
            typer.echo(f"{item['request_id']}  refused {item['status']}: {error.get('reason')}")
    typer.echo(f"{len(results) - refused} granted, {refused} refused", err=True)
    raise typer.Exit(1 if refused else 0)


@app.command("reject")
def reject_request(request_id: str = typer.Argument(..., help="the request to reject"),
                   service: str = SERVICE,
                   reason_code: str = typer.Option(..., help="one of the year's reason codes "
                                                             "(e.g. wrong_amount, not_eligible)"),
                   note: str | None = typer.Option(None, help="why, for the maker (no "
                                                              "personal data)"),
                   as_json: bool = AS_JSON, token: str | None = TOKEN, subject: str = SUBJECT,
                   role: str = ROLE, caller_province: str | None = PROVINCE,
                   key: str | None = KEY) -> None:
    """Reject a request with a reason code: its command is never carried out."""
    body: dict[str, Any] = {"reason_code": reason_code}
    if note:
        body["note"] = note
    with _client(service, token, subject, role, caller_province, key) as client:
        answer = _answer(client.post(f"/approvals/{request_id}/reject", json=body,
                                     headers=_key()))
    typer.echo(json.dumps(answer) if as_json
               else f"{answer['request_id']}  {answer['state']}  {answer.get('reason_code')}")


def _brief(result: Any) -> str:
    if not isinstance(result, dict):
        return ""
    keys = ("group_id", "status", "funded_total", "report_id", "year", "state")
    return " ".join(f"{k}={result[k]}" for k in keys if k in result and
                    not isinstance(result[k], dict | list))

