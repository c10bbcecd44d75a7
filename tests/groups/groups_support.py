"""Test data for the groups service: members with valid NIKs, tokens, CSV files."""

from __future__ import annotations

import contextlib
import csv
import io
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date

import httpx

from services.groups.app import build_spec
from services.groups.config import RULES_DIR, load_config, load_year_rules
from services.groups.csv_import import Context
from services.groups.domain import MemberRecord, member_from_input
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
    return Context(load_config(), shipped_in_force, may_backdate, lambda _regency: today)


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


def member_records(n: int, regency_code: str = "3201") -> list[MemberRecord]:
    return [member_from_input(m["nik"], m["name"], m["phone"], TODAY)
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


ADMIN = auth(Role.ADMIN)
AGENCY = auth(Role.AGENCY)

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
                yield RunningGroups(client, database_url, infra.kafka_bootstrap)
    finally:
        await drop_database(infra, database_url)
