"""A person's rights across the services on the real broker and Postgres (issue 18, UU PDP): one
person who applied as a TKS (recruitment) and is a member of a group (groups). `tkm privacy
export` gives back what both hold; `tkm privacy erase` makes the person unreadable in every
service's event store and read models, in a rebuild of them and in a backup taken afterwards,
while the other members stay readable and every count stays as it was."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from scripts import backup
from scripts import services as service_processes
from scripts.cli import app
from scripts.rebuild import rebuild_service
from tests.groups.groups_support import registration
from tests.recruitment.recruitment_helpers import ADMIN, applicant
from tests.support.databases import create_database
from tests.support.personal_data import database_text

pytestmark = pytest.mark.integration
SERVICES = ("recruitment", "groups")


@pytest.fixture(scope="module")
async def services(infra, tmp_path_factory):
    """The four services as processes (as tests/e2e/conftest.py), with their databases' URLs."""
    databases = {name: await create_database(infra, f"pdp_{name}")
                 for name in service_processes.SERVICES}
    running = service_processes.start(infra, tmp_path_factory.mktemp("privacy-logs"),
                                      databases=databases, extra_env={"TKM_LOG_LEVEL": "WARNING"})
    try:
        yield running, databases
    finally:
        running.stop()


def _tkm(monkeypatch, urls: dict[str, str], *args: str, stdin: str | None = None):
    for name, url in urls.items():
        monkeypatch.setenv(f"{name.upper()}_URL", url)
    result = CliRunner().invoke(app, list(args), input=stdin)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


async def _plaintext_anywhere(url: str, needles: list[str]) -> set[str]:
    """Which of `needles` a plaintext search of every column of every table would find."""
    conn = await asyncpg.connect(url)
    try:
        stored = await database_text(conn)
    finally:
        await conn.close()
    return {n for n in needles if n in stored}


async def _counts(client: httpx.AsyncClient, urls: dict[str, str], group_id: str) -> dict:
    group = (await client.get(f"{urls['groups']}/groups/{group_id}")).json()
    reached = (await client.get(f"{urls['groups']}/reports/people-reached",
                                params={"year": 2023})).json()
    stats = (await client.get(f"{urls['recruitment']}/stats", params={"year": 2023})).json()
    return {"members": group["member_count"], "reached": reached, "recruitment": stats}


async def test_export_then_erasure_leaves_the_person_nowhere_readable(
        services, infra, tmp_path: Path, monkeypatch):
    running, databases = services
    urls = running.urls
    person = applicant(2023, "3201")
    group = registration("3201", members=10)
    group["members"][0] = {"nik": person["nik"], "name": person["full_name"],
                           "phone": person["phone"]}
    other = group["members"][1]
    async with httpx.AsyncClient(headers=ADMIN, timeout=60) as client:
        made = await client.post(f"{urls['recruitment']}/applicants", json=person,
                                 headers={"Idempotency-Key": "privacy-e2e-applicant"})
        assert made.status_code == 201, made.text
        applicant_id = made.json()["applicant_id"]
        made = await client.post(f"{urls['groups']}/groups", json=group,
                                 headers={"Idempotency-Key": "privacy-e2e-group"})
        assert made.status_code == 201, made.text
        group_id = made.json()["group_id"]
        before = await _counts(client, urls, group_id)
        shown = (await client.get(f"{urls['groups']}/groups/{group_id}",
                                  params={"reveal": "nik"})).json()
        assert {person["nik"], other["nik"]} <= {m["nik"] for m in shown["members"]}

        # encrypted at rest already: neither member's NIK nor name is stored readable
        needles = [person["nik"], person["full_name"], person["phone"], other["nik"],
                   other["name"]]
        for service in SERVICES:
            assert await _plaintext_anywhere(databases[service], needles) == set(), service

        # subject access: both services, readable
        export = tmp_path / "export.json"
        _tkm(monkeypatch, urls, "privacy", "export", "--out", str(export),
             stdin=person["nik"] + "\n")
        held = json.loads(export.read_text())["services"]
        assert held["recruitment"]["found"] and held["groups"]["found"]
        assert person["full_name"] in json.dumps(held["recruitment"])
        assert person["nik"] in json.dumps(held["groups"])

        _tkm(monkeypatch, urls, "privacy", "erase", "--reason-code", "subject_request", "--yes",
             "--nik", person["nik"])

        # the person reads as erased; the other member does not; every count as before
        shown = (await client.get(f"{urls['groups']}/groups/{group_id}",
                                  params={"reveal": "nik"})).json()
        texts = json.dumps(shown)
        assert person["nik"] not in texts and person["full_name"] not in texts
        assert other["nik"] in texts and other["name"] in texts
        record = (await client.get(f"{urls['recruitment']}/applicants/{applicant_id}")).json()
        assert person["full_name"] not in json.dumps(record)
        assert await _counts(client, urls, group_id) == before
        again = tmp_path / "again.json"
        _tkm(monkeypatch, urls, "privacy", "export", "--out", str(again),
             "--nik", person["nik"])
        assert person["full_name"] not in again.read_text()

        # a rebuild of both services' read models: still erased, counts as before
        for service in SERVICES:
            await rebuild_service(service, databases[service], infra.kafka_bootstrap)
        shown = (await client.get(f"{urls['groups']}/groups/{group_id}")).json()
        assert person["full_name"] not in json.dumps(shown)
        assert other["name"] in json.dumps(shown)
        assert await _counts(client, urls, group_id) == before

    # a backup taken afterwards holds nothing of the person readable
    for service in SERVICES:
        archive = backup.dump(databases[service], tmp_path / f"{service}.dump")
        sql = subprocess.run([str(backup.pg_bin() / "pg_restore"), "-f", "-", str(archive)],
                             check=True, capture_output=True, text=True).stdout
        assert "pii_person_keys" in sql  # the dump is the whole database
        for needle in (person["nik"], person["full_name"], person["phone"]):
            assert needle not in sql, (service, needle)

