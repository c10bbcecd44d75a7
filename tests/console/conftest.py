"""The console in a real browser: the four services and the console as processes on the
session's real broker and Postgres, a small programme seeded through the services' APIs, and
headless Chromium (Debian's package, `scripts/install_chromium.sh`) driven by Playwright."""

from __future__ import annotations

import asyncio
import csv
import io
import random
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from scripts import services as service_processes
from scripts.api_client import Api
from scripts.infra import ROOT, free_port
from services.console import process as console_process
from shared.auth import Role, mint_token
from shared.nik import parse_nik, random_valid_nik
from shared.settings import DEV_SIGNING_KEY
from tests.support.databases import create_database

PASSWORD = "kata-sandi-uji-123"
AXE = ROOT / "services" / "console" / "node_modules" / "axe-core" / "axe.min.js"
TODAY = datetime.now(UTC).date()
# the month whose report the TKS files: the last one that has ended (mentoring takes no report
# on a running month); the programme year of the seeded round, contract and funding is its year
REPORTED = TODAY.replace(day=1) - timedelta(days=1)
YEAR = REPORTED.year
OWN, OTHER = "3201", "3501"  # Kab. Bogor (Jawa Barat, 32); Kab. Pacitan (Jawa Timur, 35)


@dataclass
class Programme:
    tks_id: str
    to_approve: str   # registered in 32: approved and funded in the browser
    mentored: str     # funded in 32, mentored by the TKS: its monthly report is filed offline
    other: str        # registered in 35: another province's


@dataclass
class Stack:
    console: console_process.RunningConsole
    urls: dict[str, str]
    programme: Programme

    @property
    def url(self) -> str:
        return self.console.url


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "headless Chromium is missing: make tools (scripts/install_chromium.sh)"
    return found


@pytest.fixture(scope="module")
def stack(infra, tmp_path_factory, request):
    logs = tmp_path_factory.mktemp("console-logs")
    databases = {name: asyncio.run(create_database(infra, f"c_{name}"))
                 for name in service_processes.SERVICES}
    running = service_processes.start(infra, logs, databases=databases,
                                      extra_env={"TKM_LOG_LEVEL": "WARNING"})
    console = None
    try:
        principal = f"console-{uuid.uuid4().hex[:8]}"
        password_file = console_process.onboard_principal(principal, logs / "secrets",
                                                          infra.kafka_bootstrap)
        console = console_process.start(
            database_url=asyncio.run(create_database(infra, "c_console")),
            service_urls=running.urls, kafka_bootstrap=infra.kafka_bootstrap, port=free_port(),
            log_dir=logs, principal=principal, password_file=password_file,
            extra_env={"TKM_LOG_LEVEL": "WARNING"})
        programme = asyncio.run(_seed(running.urls))
        console.add_user("admin@kemnaker.example", PASSWORD, "ministry_admin")
        # four eyes on money (issue 18): the checker of the admin's fundings is another admin
        console.add_user("checker@kemnaker.example", PASSWORD, "ministry_admin")
        console.add_user("jabar@kemnaker.example", PASSWORD, "provincial_officer", province="32")
        console.add_user("tks@kemnaker.example", PASSWORD, "tks", tks_id=programme.tks_id)
        console.add_user("bps@agency.example", PASSWORD, "agency")
        yield Stack(console, running.urls, programme)
    finally:
        if console is not None:
            console.stop()
        running.stop()


async def _seed(urls: dict[str, str]) -> Programme:
    """One TKS in Kab. Bogor mentoring one funded group, one group waiting for approval there,
    one in Jawa Timur: through the services' APIs, as the ministry."""
    api = Api(urls)
    rng = random.Random(19)
    try:
        round_id = str(uuid.uuid4())
        await api.post("recruitment", "/rounds", {
            "year": YEAR, "stage": 1, "round_id": round_id,
            "quotas": [{"province_code": "32", "regency_code": OWN, "places": 1}]})
        nik = random_valid_nik(rng, regency_code=OWN, today=TODAY)
        result = await api.post("recruitment", f"/rounds/{round_id}/recruitments:batch", {
            "items": [{"applicant": {
                "year": YEAR, "nik": nik, "full_name": "Siti Rahayu", "sex": parse_nik(nik).sex,
                "birth_date": parse_nik(nik).birth_date.isoformat(), "education": "S1",
                "domicile_regency_code": OWN, "phone": "0812-3456-7890",
                "email": "siti.rahayu@example.id"},
                "briefing": {"city": "Jakarta",
                             "briefed_on": REPORTED.replace(day=1).isoformat()},
                "regency_code": OWN}]})
        tks_id = result["results"][0]["tks_id"]
        groups = {}
        for key, regency in (("to_approve", OWN), ("mentored", OWN), ("other", OTHER)):
            groups[key] = await _import_group(api, rng, regency, f"Kelompok {key} {uuid.uuid4().hex[:6]}")
        await api.post("groups", f"/groups/{groups['mentored']}/approval")
        await fund_with_checker(urls, groups["mentored"], {
            "tranche": 1, "amount": 20_000_000, "disbursed_on": REPORTED.replace(day=1).isoformat(),
            "budget_year": YEAR})
        for _ in range(150):  # mentoring learns of the TKS and the funding from the topics
            try:
                await api.post("mentoring", f"/groups/{groups['mentored']}/mentor",
                               {"tks_id": tks_id,
                                "assigned_on": REPORTED.replace(day=1).isoformat()})
                break
            except Exception:  # noqa: BLE001 (not known yet: a 404/409 until the events arrive)
                await asyncio.sleep(0.2)
        else:
            raise AssertionError("mentoring never learnt of the seeded TKS and group")
        return Programme(tks_id, groups["to_approve"], groups["mentored"], groups["other"])
    finally:
        await api.close()


def admin_headers(subject: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {mint_token(DEV_SIGNING_KEY, subject, Role.ADMIN)}"}
    if key:
        headers["Idempotency-Key"] = key
    return headers


async def fund_with_checker(urls: dict[str, str], group_id: str, body: dict) -> dict:
    """Fund a group as one ministry admin (the maker); when the year's rules want four eyes
    (202 {"state": "pending"}), another admin (the checker) grants the request. What the
    funding answered."""
    async with httpx.AsyncClient(timeout=60) as client:
        made = await client.post(f"{urls['groups']}/groups/{group_id}/funding", json=body,
                                 headers=admin_headers("maker@kemnaker.example",
                                                       str(uuid.uuid4())))
        assert made.status_code in (200, 201, 202), made.text
        answer = made.json()
        if made.status_code != 202 or answer.get("state") != "pending":
            return answer
        granted = await client.post(f"{urls['groups']}/approvals/{answer['request_id']}/grant",
                                    headers=admin_headers("checker@kemnaker.example",
                                                          str(uuid.uuid4())))
        assert granted.status_code == 200, granted.text
        return granted.json()["result"]


def four_eyes_for(urls: dict[str, str], service: str, command_type: str, year: int,
                  amount: int | None = None) -> bool:
    """Whether the rules of `year` in force at `service` want a maker and a checker for
    `command_type` (and `amount`): the shipped rules do, once the service adopted four eyes."""
    answer = httpx.get(f"{urls[service]}/rules/{year}", headers=admin_headers("console-test"),
                       timeout=30)
    if answer.status_code == 404:
        return False
    answer.raise_for_status()
    section = answer.json()["rules"].get("four_eyes") or {}
    rule = (section.get("commands") or {}).get(command_type)
    return rule is not None and (not rule.get("threshold")
                                 or (amount is not None and amount >= rule["threshold"]))


async def _import_group(api: Api, rng: random.Random, regency: str, name: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["group_ref", "year", "stage", "regency_code", "business_type",
                     "group_name", "member_nik", "member_name", "member_phone"])
    business = (await api.get("groups", "/business-types"))[0]["code"]
    for i in range(10):
        writer.writerow([name, YEAR, "pemula", regency, business, name,
                         random_valid_nik(rng, regency_code=regency, today=TODAY,
                                          birth_date=date(YEAR - 20 - i, 1 + i, 1 + 2 * i)),
                         f"Anggota {i}", "0812 3456 7890"])
    report = await api.post("groups", "/groups/imports", content=out.getvalue().encode(),
                            content_type="text/csv")
    assert not report["errors"], report["errors"]
    return report["results"][0]["group_id"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium(), headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="id-ID")
    ctx.set_default_timeout(15000)
    try:
        yield ctx
    finally:
        ctx.close()


def sign_in(page, base: str, email: str, password: str = PASSWORD) -> None:
    page.goto(base + "/login")
    page.get_by_label("Surel").fill(email)
    page.get_by_label("Kata sandi").fill(password)
    page.get_by_role("button", name="Masuk").click()
    page.wait_for_load_state()


def axe_violations(page) -> list[dict]:
    """Serious and critical axe-core violations of the page as it is now (axe-core from npm,
    services/console/package.json)."""
    assert AXE.exists(), "axe-core is missing: make install (npm ci in services/console)"
    # evaluated through the DevTools protocol: the console's CSP admits no inline script
    page.evaluate(AXE.read_text())
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"]][:3]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]

