"""The console in `make demo`: started on the demo's broker and database once the programme year
has run, its figures checked against the demo's tables (scripts/results.py), demo users made,
a demo user signed in with headless Chromium and the main pages saved as screenshots."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from services.console import process as console_process

SCREENSHOT_DIR_ENV = "TKM_DEMO_SCREENSHOTS"  # default: <demo state>/screenshots
STAGE_KEYS = ("stage", "tks", "regencies", "groups_mentored", "people_reached",
              "rupiah_disbursed", "rupiah_accounted", "reports_filed", "reports_overdue",
              "continued", "replaced", "resigned")
PROVINCE_KEYS = ("province_code", "tks", "groups_funded", "people_reached", "rupiah_disbursed",
                 "rupiah_accounted", "continued", "replaced")


def show(out: Console, state: Path, endpoints, urls: dict[str, str], results: dict[str, Any],
         *, keep_running: bool = False) -> bool:
    """Returns whether the console's figures equal the demo's tables. A console that cannot
    start or a browser that fails is reported in one line; the demo's own results stand."""
    import asyncpg
    from aiokafka.errors import KafkaError

    try:
        return _show(out, state, endpoints, urls, results, keep_running)
    except (console_process.ConsoleStartError, KafkaError, asyncpg.PostgresError, OSError,
            RuntimeError, ValueError) as exc:
        out.print(f"[red]the console could not be shown:[/red] {type(exc).__name__}: {exc}")
        return False


def _show(out: Console, state: Path, endpoints, urls: dict[str, str], results: dict[str, Any],
          keep_running: bool) -> bool:
    from scripts import infra
    from scripts.agency import AdminConnection, add_agency

    year = results["year"]
    conn = AdminConnection(endpoints.kafka_bootstrap, infra._admin_client_kwargs(state),
                           infra.ca_file(state))
    password = asyncio.run(add_agency(conn, "console", rotate=True))
    secret = state / "secrets" / "console-agency.password"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.touch(mode=0o600)
    secret.write_text(password)
    port = int(os.environ.get("CONSOLE_HTTP_PORT") or infra.free_port())
    running = console_process.start(
        database_url=endpoints.database_url("console"), service_urls=urls,
        kafka_bootstrap=endpoints.kafka_bootstrap, port=port, log_dir=state / "logs",
        principal="console", password_file=secret,
        extra_env={**infra.kafka_client_env(state), "TKM_ENV": "dev", "TKM_LOG_LEVEL": "WARNING"})
    try:
        out.print(f"  console      {running.url}   log: {running.log}", highlight=False)
        t0 = time.perf_counter()
        differences = asyncio.run(_wait_for_figures(endpoints.database_url("console"), year,
                                                    results))
        if differences:
            out.print(f"[red]the console's figures differ from the tables above:[/red] "
                      f"{differences[:5]}")
        else:
            out.print(f"The console's dashboard figures for {year} equal the tables above "
                      f"(by tahap and by province; read from the topics in "
                      f"{time.perf_counter() - t0:.1f}s)", highlight=False)
        users = _demo_users(running, endpoints.database_url("console"))
        admin_email, admin_password = users["ministry_admin"]
        out.print(f"Console: {running.url}  (sign in as {admin_email} / {admin_password}; "
                  "users: " + ", ".join(f"{role} {email}" for role, (email, _) in users.items()
                                        if not role.startswith("_"))
                  + ")", highlight=False, soft_wrap=True)
        shots = Path(os.environ.get(SCREENSHOT_DIR_ENV) or state / "screenshots")
        try:
            saved = screenshots(running.url, users, year, shots)
        except Exception as exc:  # noqa: BLE001 (a browser failure costs the pictures only)
            out.print(f"[red]screenshots failed:[/red] {type(exc).__name__}: {exc}")
            saved = []
        if saved:
            out.print(f"Screenshots of the console ({len(saved)}) in {shots}: "
                      + ", ".join(p.name for p in saved), highlight=False, soft_wrap=True)
        else:
            out.print("No screenshots: headless Chromium is not installed (make tools)")
        return not differences
    finally:
        if keep_running:
            out.print(f"still running (--keep-running): console pid {running.process.pid} at "
                      f"{running.url}", highlight=False)
        else:
            running.stop()


async def _wait_for_figures(database_url: str, year: int, results: dict,
                            timeout: float = 600) -> list[str]:
    """Wait until the console has read the topics up to the demo's figures; the differences
    that remain after `timeout` (none: equal)."""
    import asyncpg

    from services.console import views

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        deadline = time.monotonic() + timeout
        while True:
            differences = compare(await views.by_stage(pool, year),
                                  await views.by_province(pool, year), results)
            if not differences or time.monotonic() > deadline:
                return differences
            await asyncio.sleep(2)
    finally:
        await pool.close()


def compare(stages: list[dict], provinces: list[dict], results: dict) -> list[str]:
    """What differs between the console's tables and the demo's (empty: equal)."""
    found = []
    mine = {r["stage"]: r for r in stages}
    for theirs in results["by_stage"]:
        ours = mine.get(theirs["stage"], {})
        found += [f"tahap {theirs['stage']} {k}: {ours.get(k)} != {theirs[k]}"
                  for k in STAGE_KEYS if ours.get(k) != theirs[k]]
        if not _close(ours.get("compliance"), theirs["compliance"]):
            found.append(f"tahap {theirs['stage']} compliance")
    mine = {r["province_code"]: r for r in provinces}
    for theirs in results["by_province"]:
        ours = mine.get(theirs["province_code"], {})
        found += [f"province {theirs['province_code']} {k}: {ours.get(k)} != {theirs[k]}"
                  for k in PROVINCE_KEYS if ours.get(k) != theirs[k]]
        if not _close(ours.get("compliance"), theirs["compliance"]):
            found.append(f"province {theirs['province_code']} compliance")
    return found


def _close(a: float | None, b: float | None) -> bool:
    return (a is None) == (b is None) and (a is None or abs(a - b) < 0.001)


def _demo_users(running: console_process.RunningConsole,
                database_url: str) -> dict[str, tuple[str, str]]:
    """A user per role: the ministry, the officer of the province whose TKS mentor the most
    groups now, one of those TKS (its report form has groups due), an agency viewer. Passwords are made here and shown once."""
    import asyncpg

    async def pick() -> tuple[str | None, str | None]:
        conn = await asyncpg.connect(database_url)
        try:
            row = await conn.fetchrow(
                "SELECT t.province_code, min(t.tks_id) AS tks_id FROM tks t JOIN "
                "mentor_assignments a USING (tks_id) WHERE a.unassigned_on IS NULL "
                "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
            return (row["province_code"], row["tks_id"]) if row else (None, None)
        finally:
            await conn.close()

    province, tks_id = asyncio.run(pick())
    users = {"ministry_admin": ("admin@demo.kemnaker.go.id", {}),
             "agency": ("bps@demo.bps.go.id", {})}
    if province:
        users["provincial_officer"] = (f"disnaker{province}@demo.go.id", {"province": province})
        users["tks"] = ("tks@demo.kemnaker.go.id", {"tks_id": tks_id})
    made = {}
    for role, (email, scope) in users.items():
        password = secrets.token_urlsafe(12)
        running.add_user(email, password, role, **scope)
        made[role] = (email, password)
    made["_province"] = (province or "", "")
    made["_tks"] = (tks_id or "", "")
    return made


def screenshots(base: str, users: dict[str, tuple[str, str]], year: int,
                directory: Path) -> list[Path]:
    """Sign in as each demo user and save the main pages as PNG files; [] without a browser."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return []
    if not chromium:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    province, tks_id = users["_province"][0], users["_tks"][0]
    pages = {"ministry_admin": [("login", "/login"), ("dashboard", f"/dashboard?year={year}"),
                                ("queues", "/queues"), ("approvals", "/approvals"),
                                ("evaluation", f"/evaluation?year={year}"),
                                ("imports", "/imports")],
             "provincial_officer": [("province", f"/provinces/{province}?year={year}")],
             "tks": [("tks", f"/tks/{tks_id}"), ("report-form", "/report")],
             "agency": [("dashboard-en", f"/lang/en?next=/dashboard%3Fyear%3D{year}")]}
    saved = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            for role, wanted in pages.items():
                if role not in users:
                    continue
                mobile = role == "tks"  # the TKS's pages are made for a phone
                context = browser.new_context(
                    viewport={"width": 390, "height": 844} if mobile else
                    {"width": 1366, "height": 900}, locale="id-ID")
                page = context.new_page()
                for name, path in wanted:
                    if name == "login":
                        page.goto(base + path)
                        saved.append(_shot(page, directory / f"{name}.png"))
                        continue
                    if "tkm_console_session" not in {c["name"] for c in context.cookies()}:
                        email, password = users[role]
                        page.goto(base + "/login")
                        page.fill("#email", email)
                        page.fill("#password", password)
                        page.click("button[type=submit]")
                        page.wait_for_load_state()
                    page.goto(base + path)
                    # the report form holds a form per group due: its first screen shows it
                    saved.append(_shot(page, directory / f"{name}.png",
                                       full_page=name != "report-form"))
                if role == "ministry_admin" and province:  # a group of the busiest province
                    page.goto(base + f"/provinces/{province}?year={year}")
                    links = page.locator("a[href^='/groups/']")
                    if links.count():
                        links.first.click()
                        page.wait_for_load_state()
                        saved.append(_shot(page, directory / "group.png"))
                context.close()
        finally:
            browser.close()
    return saved


def _shot(page, path: Path, full_page: bool = True) -> Path:
    page.screenshot(path=str(path), full_page=full_page)
    return path
