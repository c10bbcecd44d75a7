"""The console driven in headless Chromium against the four real services, the real broker and
Postgres: sign-in, the dashboard, approving and funding a group, a TKS filing its monthly report
offline and then online (once), a provincial officer refused another province, sign-out, and
axe-core on every page with no serious or critical violation."""

from __future__ import annotations

import csv
import io
import random
import re
import time
import uuid
from datetime import date

import httpx
import pytest

from services.console.i18n import Formats
from shared.auth import Role, mint_token
from shared.settings import DEV_SIGNING_KEY
from shared.nik import random_valid_nik
from tests.console.conftest import OWN, PASSWORD, TODAY, YEAR, axe_violations, sign_in

pytestmark = pytest.mark.integration


def get(stack, service: str, path: str, **params):
    """A read of a service's API as the ministry (synchronous: Playwright's sync API runs its
    own event loop in this thread)."""
    token = mint_token(DEV_SIGNING_KEY, "console-test", Role.ADMIN)
    answer = httpx.get(stack.urls[service] + path, params=params,
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
    answer.raise_for_status()
    return answer.json()


def caught_up(stack, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(stack.url + "/healthz", timeout=5).json()["lag"] != 0:
        assert time.monotonic() < deadline, "the console never caught up with the topics"
        time.sleep(0.5)


def wait_for_text(page, url: str, text: str, timeout: float = 30) -> None:
    """Reload `url` until it shows `text`: the console's projection follows the topics."""
    deadline = time.monotonic() + timeout
    while True:
        page.goto(url)
        if text in page.content():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} never showed {text!r}")
        time.sleep(0.5)


def test_sign_in_refuses_a_wrong_password_and_a_forged_form(stack, context):
    page = context.new_page()
    sign_in(page, stack.url, "admin@kemnaker.example", "not-the-password")
    assert page.get_by_role("alert").inner_text() == "Surel atau kata sandi salah."
    assert not [c for c in context.cookies() if c["name"] == "tkm_console_session"]
    # a login form posted without the CSRF cookie's twin (another site's form) is refused
    answer = httpx.post(stack.url + "/login", data={"email": "admin@kemnaker.example",
                                                    "password": PASSWORD, "csrf": "forged"})
    assert answer.status_code == 400 and "tkm_console_session" not in answer.cookies


def test_ministry_signs_in_sees_the_dashboard_approves_and_funds_a_group(stack, context):
    page = context.new_page()
    sign_in(page, stack.url, "admin@kemnaker.example")
    assert page.url.endswith("/dashboard")
    session = next(c for c in context.cookies() if c["name"] == "tkm_console_session")
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
    # the seeded funding reaches the console through the topics, and the console has read
    # everything on them (other tests' events too) before the figures are taken
    wait_for_text(page, stack.url + f"/groups/{stack.programme.mentored}", "Rp 20.000.000")
    caught_up(stack)
    page.goto(stack.url + f"/dashboard?year={YEAR}")
    row = page.locator('tr[data-province="32"]')
    assert "Jawa Barat" in row.inner_text()
    # the session's broker carries other tests' years too: the funding below must add exactly
    # its amount to Jawa Barat's figures (nothing lost, nothing counted twice)
    before = int(row.get_attribute("data-disbursed"))
    groups_before = int(row.get_attribute("data-groups"))
    assert before >= 20_000_000 and Formats("id").rp(before) in row.inner_text()
    assert page.locator("svg.chart").count() == 2
    assert axe_violations(page) == []

    group = stack.programme.to_approve
    wait_for_text(page, stack.url + "/queues", group[:12])
    assert axe_violations(page) == []
    page.locator(f'#to-approve li[data-group="{group}"] button').click()
    page.wait_for_load_state()
    assert "Berhasil" in page.get_by_role("status").first.inner_text()
    wait_for_text(page, stack.url + "/queues",
                  f'<li data-group="{group}"><a href="/groups/{group}">')
    fund = page.locator(f'#to-fund li[data-group="{group}"]')
    fund.get_by_label("Jumlah (Rp)").fill("15000000")
    fund.get_by_role("button").click()
    page.wait_for_load_state()
    wait_for_text(page, stack.url + f"/groups/{group}", "Rp 15.000.000")
    assert page.locator("#group-status").inner_text() == "Didanai"
    # members (personal data) come from the groups service, masked, for the ministry only
    assert page.get_by_role("table", name="Anggota").locator("tbody tr").count() == 10
    assert axe_violations(page) == []

    detail = get(stack, "groups", f"/groups/{group}")
    assert detail["status"] == "funded" and detail["funded_total"] == 15_000_000
    after = Formats("id").rp(before + 15_000_000)
    wait_for_text(page, stack.url + f"/dashboard?year={YEAR}", after)
    row = page.locator('tr[data-province="32"]')
    assert int(row.get_attribute("data-disbursed")) == before + 15_000_000
    assert int(row.get_attribute("data-groups")) == groups_before + 1


def test_tks_files_its_report_offline_then_online_exactly_once(stack, context):
    page = context.new_page()
    sign_in(page, stack.url, "tks@kemnaker.example")
    assert page.url.endswith("/report")
    group = stack.programme.mentored
    wait_for_text(page, stack.url + "/report", f'data-group="{group}"')
    assert axe_violations(page) == []
    form = page.locator(f'form.report[data-group="{group}"]')

    # the service worker keeps the form: it opens again with no connection, the draft in it
    page.evaluate("async () => { await navigator.serviceWorker.ready; }")
    page.reload()  # now fetched through the worker, which keeps a copy
    context.set_offline(True)
    form.get_by_label("Omzet (Rp)").fill("3250000")
    page.reload()
    assert form.get_by_label("Omzet (Rp)").input_value() == "3250000"
    form.get_by_label("Produksi", exact=True).fill("120")
    form.get_by_label("Akses pasar").check()
    form.get_by_role("button", name="Kirim").click()
    assert "Tidak ada sinyal" in form.locator(".result").inner_text()
    outbox = page.evaluate("() => JSON.parse(localStorage.getItem('tkm-report-outbox'))")
    assert len(outbox) == 1 and outbox[0]["revenue"] == 3_250_000
    # pressed again while offline: still one report waiting, under the same key
    form.get_by_role("button", name="Kirim").click()
    again = page.evaluate("() => JSON.parse(localStorage.getItem('tkm-report-outbox'))")
    assert [o["idempotency_key"] for o in again] == [outbox[0]["idempotency_key"]]

    context.set_offline(False)
    page.wait_for_function("() => (localStorage.getItem('tkm-report-outbox') || '[]') === '[]'",
                           timeout=20000)
    assert form.locator(".result").inner_text() == "Laporan terkirim."

    def reports() -> list:
        return (get(stack, "mentoring", f"/groups/{group}"))["reports"]
    filed = reports()
    assert len(filed) == 1 and filed[0]["revenue"] == 3_250_000
    assert filed[0]["support"] == ["market_access"]
    # the same draft replayed (a second tab, a retry): the service answers the first result
    replay = page.evaluate("""async (item) => {
        const r = await fetch('/api/reports', {method: 'POST', headers: {'Content-Type':
          'application/json', 'X-CSRF-Token': document.querySelector('meta[name=csrf-token]')
          .content}, body: JSON.stringify(item)});
        return r.status; }""", outbox[0])
    assert replay == 200
    assert len(reports()) == 1
    # the console shows the month as filed: nothing is due any more
    wait_for_text(page, stack.url + "/report", "Semua laporan bulan ini sudah masuk.")
    page.goto(stack.url + f"/tks/{stack.programme.tks_id}")
    assert axe_violations(page) == []
    # a TKS sees neither the dashboard nor the work queues
    assert page.goto(stack.url + "/dashboard").status == 403
    assert page.goto(stack.url + "/queues").status == 403


def test_provincial_officer_is_refused_another_province(stack, context):
    page = context.new_page()
    sign_in(page, stack.url, "jabar@kemnaker.example")
    assert re.search(r"/provinces/32$", page.url)
    assert axe_violations(page) == []
    denied = page.goto(stack.url + "/provinces/35")
    assert denied.status == 403
    assert "tidak berwenang" in page.content()
    wait_for_text(page, stack.url + "/provinces/32", stack.programme.mentored[:12])
    page.goto(stack.url + "/queues")
    assert stack.programme.other[:12] not in page.content()  # Jawa Timur's group is not queued
    assert page.goto(stack.url + f"/groups/{stack.programme.other}").status == 403
    assert page.goto(stack.url + "/dashboard").status == 403
    # an approval of the other province's group, forged with the officer's own CSRF token
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    forged = page.request.post(stack.url + f"/groups/{stack.programme.other}/approve",
                               form={"csrf": token, "idem": "forged-approval-1"})
    assert forged.status == 403


def test_pages_in_english_sign_out_and_csrf(stack, context):
    page = context.new_page()
    sign_in(page, stack.url, "admin@kemnaker.example")
    page.goto(stack.url + "/lang/en?next=/evaluation")
    assert page.get_by_role("heading", level=1).inner_text().startswith("Year-end evaluation")
    assert page.locator("html").get_attribute("lang") == "en"
    assert axe_violations(page) == []
    page.goto(stack.url + "/imports")
    assert axe_violations(page) == []
    # a state-changing request without the session's CSRF token is refused
    refused = page.request.post(stack.url + f"/groups/{stack.programme.to_approve}/approve",
                                form={"csrf": "not-the-token", "idem": "csrf-test-0001"})
    assert refused.status == 403
    page.goto(stack.url + "/dashboard")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_load_state()
    assert "/login" in page.url
    assert axe_violations(page) == []
    assert "/login" in page.goto(stack.url + "/dashboard").url


def test_agency_viewer_reads_the_dashboard_without_members_or_actions(stack, context):
    page = context.new_page()
    sign_in(page, stack.url, "bps@agency.example")
    assert page.url.endswith("/dashboard")
    page.goto(stack.url + f"/groups/{stack.programme.mentored}")
    assert "Data anggota hanya untuk kementerian" in page.content()
    assert page.get_by_role("button", name="Salurkan dana").count() == 0
    assert page.goto(stack.url + "/queues").status == 403


def _csv(rows: list[list]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["group_ref", "year", "stage", "regency_code", "business_type",
                     "group_name", "member_nik", "member_name", "member_phone"])
    writer.writerows(rows)
    return out.getvalue().encode()


def test_csv_upload_shows_each_groups_outcome_and_each_bad_row(stack, context):
    rng = random.Random(7)
    business = get(stack, "groups", "/business-types")[0]["code"]
    good, bad = f"Usaha Baik {uuid.uuid4().hex[:6]}", f"Usaha Salah {uuid.uuid4().hex[:6]}"
    rows = []
    for name in (good, bad):
        for i in range(10):
            nik = random_valid_nik(rng, regency_code=OWN, today=TODAY,
                                   birth_date=date(YEAR - 25 - i, 1 + i, 3 + i))
            rows.append([name, YEAR, "pemula", OWN, business, name,
                         "12345" if (name == bad and i == 4) else nik, f"Anggota {i}",
                         "0812 3456 7890"])
    page = context.new_page()
    sign_in(page, stack.url, "jabar@kemnaker.example")
    page.goto(stack.url + "/imports")
    page.set_input_files("#file", files=[{"name": "kelompok.csv", "mimeType": "text/csv",
                                          "buffer": _csv(rows)}])
    page.get_by_role("button", name="Unggah").click()
    page.wait_for_load_state()
    summary = page.locator("#import-summary").inner_text()
    assert "Terdaftar: 1" in summary and "Ditolak: 1" in summary
    errors = page.get_by_role("table", name=re.compile("Kesalahan"))
    assert "16" in errors.locator("tbody tr").first.inner_text()  # the header is row 1
    assert axe_violations(page) == []
    href = page.get_by_role("link", name=good).get_attribute("href")
    assert page.get_by_role("link", name=bad).count() == 0  # refused: no group made
    # the new group reaches the console's read side from the topic
    wait_for_text(page, stack.url + href, 'id="group-status">Terdaftar')


def test_year_end_evaluation_opens_and_previews_through_the_console(stack, context):
    page = context.new_page()
    sign_in(page, stack.url, "admin@kemnaker.example")
    page.goto(stack.url + f"/evaluation?year={YEAR}")
    assert page.locator("#cycle-status").inner_text() == "Belum dibuka"
    page.get_by_role("button", name="Buka").click()
    page.wait_for_load_state()
    assert "Berhasil" in page.get_by_role("status").first.inner_text()
    assert get(stack, "evaluation", f"/evaluations/{YEAR}")["status"] == "open"
    page.goto(stack.url + f"/evaluation?year={YEAR}")
    assert page.locator("#cycle-status").inner_text() == "Buka"
    preview = page.get_by_role("table", name=f"Pratinjau {YEAR}")
    assert stack.programme.tks_id[:12] in preview.inner_text()
    # closing asks for an explicit confirmation (a required checkbox)
    assert page.locator("#confirm").get_attribute("required") is not None
    assert axe_violations(page) == []
