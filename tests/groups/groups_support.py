"""Test data for the groups service: members with valid NIKs, tokens, CSV files; the
maker -> checker steps of four eyes on money (`fund`, `accept_lpj`, `through_checker`)."""

from __future__ import annotations

import contextlib
import csv
import io
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.groups.app import build_spec
from services.groups.config import RULES_DIR, load_config, load_year_rules
from services.groups.csv_import import Context
from services.groups.domain import MemberRecord, Person, member_from_input
from shared import pii
from shared.auth import Role, mint_token
from shared.nik import random_valid_nik
from shared.rules import InForce
from shared.service import create_app
from shared.settings import DEV_SIGNING_KEY, load_settings
from tests.support.databases import create_database, drop_database

TODAY = date.today()
# the shipped rules of 2021 and 2023 (config/rules), as a database seeded with them holds them
RULES_2021 = load_year_rules(RULES_DIR / "2021.toml")
RULES_2023 = load_year_rules(RULES_DIR / "2023.toml")


def shipped_in_force(year: int) -> InForce:
    """What RuleBook.in_force answers on a database holding the shipped rules only."""
    return InForce(RULES_2023, 2023, 1) if year >= 2023 else InForce(RULES_2021, 2021, 1)


def csv_context(may_backdate: bool = False, today: date = TODAY) -> Context:
    """Parsing a CSV file as the service does, with the shipped rules and a fixed today."""
    return Context(load_config(), shipped_in_force, may_backdate, lambda _regency: today,
                   nik_hash=HASH)


def rng() -> random.Random:
    return random.Random(uuid.uuid4().int)


def nik(r: random.Random, regency_code: str = "3201", age: int = 30) -> str:
    born = date(TODAY.year - age - 1, r.randint(1, 12), r.randint(1, 28))
    return random_valid_nik(r, regency_code=regency_code, birth_date=born)


def member_inputs(n: int, regency_code: str = "3201", r: random.Random | None = None,
                  ) -> list[dict]:
    r = r or rng()
    return [{"nik": nik(r, regency_code, age=r.randint(20, 50)),
             "name": f"Anggota {uuid.uuid4().hex[:6]}", "phone": "0812 3456 7890"}
            for _ in range(n)]


# the suite's keyring (TKM_ENV=test: the repository's dev key), as the service under test has it
KEYRING = pii.Keyring.dev()
HASH = KEYRING.nik_hash


class MemorySeal:
    """A `domain.Seal` for unit tests: each person's data key made in memory."""

    def __init__(self) -> None:
        self.keys: dict[str, pii.PersonKey] = {}

    def key(self, ref: str) -> pii.PersonKey:
        if ref not in self.keys:
            self.keys[ref] = pii.PersonKey(ref, uuid.uuid4(),
                                           AESGCM(AESGCM.generate_key(bit_length=256)))
        return self.keys[ref]

    def __call__(self, people: list[Person]) -> list[MemberRecord]:
        out = []
        for p in people:
            key = self.key(p.nik_hash)
            out.append(MemberRecord(
                nik=key.encrypt("nik", p.nik), name=key.encrypt("name", p.name),
                phone=key.encrypt("phone", p.phone),
                birth_date=key.encrypt("birth_date", p.birth_date.isoformat()),
                nik_hash=p.nik_hash))
        return out

    def open(self, record: MemberRecord, field: str) -> str | None:
        return self.keys[record.nik_hash].decrypt(field, getattr(record, field))


SEAL = MemorySeal()


def member_records(n: int, regency_code: str = "3201") -> list[Person]:
    """`n` members as typed and checked (plaintext, with their NIK hash)."""
    return [member_from_input(m["nik"], m["name"], m["phone"], TODAY, HASH)
            for m in member_inputs(n, regency_code)]


def registration(regency_code: str = "3201", members: int = 10, year: int = 2023,
                 business_type: str = "tailoring", name: str | None = None) -> dict:
    return {"year": year, "stage": "pemula", "regency_code": regency_code,
            "business_type": business_type, "name": name or f"KUB {uuid.uuid4().hex[:10]}",
            "members": member_inputs(members, regency_code)}


def auth(role: Role, province_code: str | None = None) -> dict[str, str]:
    token = mint_token(DEV_SIGNING_KEY, f"test-{role.value}", role, province_code=province_code,
                       tks_id="tks-test" if role is Role.TKS else None)
    return {"Authorization": f"Bearer {token}"}


def bearer(subject: str, role: Role, province_code: str | None = None) -> dict[str, str]:
    """A token of one person (`subject`): four eyes tells maker and checker apart by it."""
    return {"Authorization": "Bearer " + mint_token(DEV_SIGNING_KEY, subject, role,
                                                    province_code=province_code)}


ADMIN = auth(Role.ADMIN)  # the maker of most tests
AGENCY = auth(Role.AGENCY)
# another ministry admin: the checker who grants what ADMIN asked for (four eyes)
CHECKER = bearer("checker@kemnaker.go.id", Role.ADMIN)


async def ask(client: httpx.AsyncClient, path: str, maker: dict[str, str] = ADMIN,
              **kwargs) -> dict:
    """The maker asks for a four-eyes command: 202 and the pending request."""
    answer = await client.post(path, headers={**maker, **kwargs.pop("headers", {})}, **kwargs)
    assert answer.status_code == 202, answer.text
    pending = answer.json()
    assert pending["state"] == "pending" and pending["request_id"], pending
    return pending


async def grant(client: httpx.AsyncClient, request_id: str, checker: dict[str, str] = CHECKER,
                headers: dict[str, str] | None = None) -> dict:
    """The checker grants a request: 200, and what the command answered when carried out."""
    answer = await client.post(f"/approvals/{request_id}/grant",
                               headers={**checker, **(headers or {})})
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "granted"
    return answer.json()["result"]


async def fund(client: httpx.AsyncClient, group_id: str, body: dict,
               maker: dict[str, str] = ADMIN, checker: dict[str, str] = CHECKER,
               headers: dict[str, str] | None = None) -> dict:
    """Fund a group through four eyes: `maker` asks, `checker` grants (`headers` on both).
    Returns the funding's answer (what `POST /groups/{id}/funding` answered before)."""
    pending = await ask(client, f"/groups/{group_id}/funding", maker, json=body,
                        headers=headers or {})
    return await grant(client, pending["request_id"], checker, headers)


async def accept_lpj(client: httpx.AsyncClient, group_id: str, report_id: str,
                     maker: dict[str, str] = ADMIN, checker: dict[str, str] = CHECKER) -> dict:
    """Accept an LPJ through four eyes; returns the acceptance's answer."""
    pending = await ask(client, f"/groups/{group_id}/lpj/{report_id}/acceptance", maker)
    return await grant(client, pending["request_id"], checker)


async def through_checker(client: httpx.AsyncClient, path: str, items: list[dict],
                          done_status: int, maker: dict[str, str] = ADMIN,
                          checker: dict[str, str] = CHECKER) -> list[dict]:
    """A four-eyes bulk call (`/groups/fundings`, `/lpj/acceptances`) asked by `maker`, its
    batch granted by `checker` (`POST /approvals/grant`): per item what the call answered before
    four eyes, `{"group_id", "status": done_status, "result"}` or the refusal (at asking or at
    granting) with its status and error."""
    answer = await client.post(path, headers=maker, json={"items": items})
    assert answer.status_code == 200, answer.text
    asked = answer.json()
    results = asked["results"]
    pending = [r["result"]["request_id"] for r in results if r["status"] == 202]
    if not pending:
        return results
    granted = await client.post("/approvals/grant", headers=checker,
                                json={"request_ids": pending})
    assert granted.status_code == 200, granted.text
    by_request = {g["request_id"]: g for g in granted.json()["results"]}
    out = []
    for r in results:
        if r["status"] != 202:
            out.append(r)
            continue
        g = by_request[r["result"]["request_id"]]
        out.append({"group_id": r["group_id"], "status": done_status, "result": g["result"]}
                   if g["status"] == 200 else
                   {"group_id": r["group_id"], "status": g["status"], "error": g["error"]})
    return out


CSV_HEADER = ["group_ref", "year", "stage", "regency_code", "business_type", "group_name",
              "member_nik", "member_name", "member_phone"]


def csv_rows(name: str, regency_code: str = "3201", members: int = 10, year: int = 2023,
             business_type: str = "poultry") -> list[list[str]]:
    return [[f"REF-{name}", str(year), "pemula", regency_code, business_type, name, m["nik"],
             m["name"], m["phone"]] for m in member_inputs(members, regency_code)]


def csv_file(rows: list[list[str]], header: list[str] = CSV_HEADER) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


@dataclass
class RunningGroups:
    client: httpx.AsyncClient
    database_url: str
    kafka_bootstrap: str
    app: Any = None  # the FastAPI app: `app.state.ctx` once started (pool, store)


@contextlib.asynccontextmanager
async def running_groups(infra) -> AsyncIterator[RunningGroups]:
    database_url = await create_database(infra, "t_groups")
    app = create_app(build_spec(), load_settings(
        "groups", database_url=database_url, kafka_bootstrap_servers=infra.kafka_bootstrap,
        relay_poll_interval_s=0.05))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://groups",
                                         timeout=60) as client:
                yield RunningGroups(client, database_url, infra.kafka_bootstrap, app)
    finally:
        await drop_database(infra, database_url)
