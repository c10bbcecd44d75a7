"""The console driven in headless Chromium against the four real services, the real broker and
Postgres: sign-in, the dashboard, approving and funding a group, a TKS filing its monthly report
offline and then online (once), a provincial officer refused another province, sign-out, and
axe-core on every page with no serious or critical violation."""

from __future__ import annotations

import csv
import io
import os
import random
import re
import time
import uuid
from datetime import date
from pathlib import Path

import httpx
import pytest

from services.console.i18n import Formats
from shared.auth import Role, mint_token
from shared.settings import DEV_SIGNING_KEY
from shared.nik import random_valid_nik
from tests.console.conftest import (
    OWN,
    PASSWORD,
    TODAY,
    YEAR,
    axe_violations,
    four_eyes_for,
    sign_in,
)

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
    if four_eyes_for(stack.urls, "groups", "fund", YEAR, 15_000_000):
        # the admin only asked: another admin must check it (issue 18)
        request_id = funding_waits_for_a_checker(stack, context, page, group)
        checker_grants_the_funding(stack, context.browser, group, request_id)
    else:  # a service without four eyes funds at once
        assert "Berhasil" in page.get_by_role("status").first.inner_text()
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


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SCREENSHOTS_ENV = "TKM_CONSOLE_SCREENSHOTS"  # a directory: the approvals page is saved there


def funding_waits_for_a_checker(stack, context, page, group: str) -> str:
    """The maker's side of a four-eyes funding: the console says it waits for a checker (with
    the request id), nothing is funded, the maker has no grant button for it, and a grant
    forged with the maker's own CSRF token gets the service's 403 as a clear message."""
    notice = page.locator("#pending-notice")
    assert notice.inner_text().startswith("Menunggu pemeriksa")
    request_id = UUID.search(notice.inner_text()).group(0)
    assert get(stack, "groups", f"/approvals/{request_id}")["state"] == "pending"
    assert get(stack, "groups", f"/groups/{group}")["status"] == "approved"  # not funded yet
    # the group shows its funding as waiting, not a second button to ask again
    page.goto(stack.url + f"/groups/{group}")
    assert request_id[:8] in page.locator("#pending-funding").inner_text()
    assert page.get_by_role("button", name=re.compile("^Salurkan dana")).count() == 0
    # the maker's approvals page: the request waits for another checker, without buttons
    page.goto(stack.url + "/approvals")
    mine = page.locator(f'#waiting-groups li[data-request="{request_id}"]')
    assert mine.get_attribute("data-mine") == "true" and "(Anda)" in mine.inner_text()
    assert page.locator(f'#checkable-groups li[data-request="{request_id}"]').count() == 0
    assert page.locator(f'[action*="{request_id}"]').count() == 0
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    forged = page.request.post(stack.url + f"/approvals/groups/{request_id}/grant",
                               form={"csrf": token, "idem": f"self-grant-{request_id}"})
    assert forged.ok and "/approvals?error_key=self_check" in forged.url
    assert "Anda sendiri yang mengajukan permintaan ini" in forged.text()
    assert get(stack, "groups", f"/approvals/{request_id}")["state"] == "pending"
    return request_id


def checker_grants_the_funding(stack, browser, group: str, request_id: str) -> None:
    """Another ministry admin grants it on the approvals page: the group is funded once, and
    the page shows the maker and the checker of the decision."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="id-ID")
    ctx.set_default_timeout(15000)
    try:
        page = ctx.new_page()
        sign_in(page, stack.url, "checker@kemnaker.example")
        page.get_by_role("link", name="Persetujuan", exact=True).click()
        page.wait_for_load_state()
        item = page.locator(f'#checkable-groups li[data-request="{request_id}"]')
        assert item.get_attribute("data-group") == group
        assert "Rp 15.000.000" in item.inner_text() and "Penyaluran dana" in item.inner_text()
        # the reason codes of the year's rules, labelled
        assert item.get_by_label("Kode alasan").locator("option").count() >= 1
        assert axe_violations(page) == []
        if os.environ.get(SCREENSHOTS_ENV):
            page.screenshot(path=str(Path(os.environ[SCREENSHOTS_ENV]) / "approvals.png"),
                            full_page=True)
        # keyboard only: the grant button is reached and pressed without a mouse
        item.get_by_role("button", name=re.compile("^Setujui")).focus()
        page.keyboard.press("Enter")
        page.wait_for_load_state()
        decided = page.locator("#decided")
        assert decided.get_attribute("data-request") == request_id
        assert decided.get_attribute("data-state") == "granted"
        text = decided.inner_text()
        assert "Pengaju: Admin kementerian" in text and "Pemeriksa: Admin kementerian" in text
        assert "(Anda)" in decided.locator(".checker").inner_text()
        assert "(Anda)" not in decided.locator(".maker").inner_text()
        assert "Disetujui" in page.get_by_role("status").first.inner_text()
        decision = get(stack, "groups", f"/approvals/{request_id}")
        assert decision["state"] == "granted" and decision["checker"] != decision["maker"]
        # granted again (another tab, the back button): refused, the group funded once
        page.goto(stack.url + "/approvals")
        assert page.locator(f'#checkable-groups li[data-request="{request_id}"]').count() == 0
        latest = page.locator(f'#recent-groups li[data-request="{request_id}"]')
        assert latest.get_attribute("data-state") == "granted"
        assert "(Anda)" in latest.locator(".checker").inner_text()
        token = page.locator('meta[name="csrf-token"]').get_attribute("content")
        again = page.request.post(stack.url + f"/approvals/groups/{request_id}/grant",
                                  form={"csrf": token, "idem": f"again-{request_id}"})
        assert "error=" in again.url
        assert get(stack, "groups", f"/groups/{group}")["funded_total"] == 15_000_000
    finally:
        ctx.close()


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
    # the approvals page: the officer's province only (a funding is checked by the ministry)
    assert page.goto(stack.url + "/approvals").status == 200
    assert page.locator("#checkable-evaluation").count() == 0  # the close is national
    assert stack.programme.other[:12] not in page.content()
    assert axe_violations(page) == []
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


def _post(stack, service: str, path: str, subject: str = "maker@kemnaker.example", **kwargs):
    token = mint_token(DEV_SIGNING_KEY, subject, Role.ADMIN)
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4()),
               **kwargs.pop("headers", {})}
    answer = httpx.post(stack.urls[service] + path, headers=headers, timeout=60, **kwargs)
    assert answer.status_code < 400, answer.text
    return answer


def test_a_checker_grants_a_selection_of_fundings_at_once(stack, context):
    """Two fundings asked by one admin through the API, granted together by another on the
    approvals page (`POST /approvals/grant`: each in a savepoint of its own, a result each)."""
    # the shipped year rules want four eyes on a funding (services/groups/config/rules)
    assert four_eyes_for(stack.urls, "groups", "fund", YEAR, 20_000_000)
    rng = random.Random(18)
    business = get(stack, "groups", "/business-types")[0]["code"]
    groups, requests = [], []
    for n in range(2):
        name = f"Usaha Bersama {n} {uuid.uuid4().hex[:6]}"
        rows = [[name, YEAR, "pemula", OWN, business, name,
                 random_valid_nik(rng, regency_code=OWN, today=TODAY,
                                  birth_date=date(YEAR - 30 - i, 1 + i, 5 + i)),
                 f"Anggota {i}", "0812 3456 7890"] for i in range(10)]
        report = _post(stack, "groups", "/groups/imports", content=_csv(rows),
                       headers={"Content-Type": "text/csv"}).json()
        group = report["results"][0]["group_id"]
        _post(stack, "groups", f"/groups/{group}/approval")
        asked = _post(stack, "groups", f"/groups/{group}/funding", json={
            "tranche": 1, "amount": 20_000_000, "disbursed_on": TODAY.isoformat(),
            "budget_year": YEAR})
        assert asked.status_code == 202 and asked.json()["state"] == "pending"
        groups.append(group)
        requests.append(asked.json()["request_id"])
    page = context.new_page()
    sign_in(page, stack.url, "checker@kemnaker.example")
    page.goto(stack.url + "/approvals")
    for request_id in requests:
        page.get_by_label(f"Pilih permintaan {request_id[:8]}").check()
    page.get_by_role("button", name="Setujui yang dipilih").click()
    page.wait_for_load_state()
    assert "Permintaan yang dipilih telah diproses" in page.get_by_role("status").first.inner_text()
    for group, request_id in zip(groups, requests, strict=True):
        assert get(stack, "groups", f"/approvals/{request_id}")["state"] == "granted"
        detail = get(stack, "groups", f"/groups/{group}")
        assert detail["status"] == "funded" and detail["funded_total"] == 20_000_000
    # nothing selected: said so, nothing asked
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    empty = page.request.post(stack.url + "/approvals/groups/grant",
                              form={"csrf": token, "idem": "empty-selection-1"})
    assert "Belum ada permintaan yang dipilih" in empty.text()


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
    if not four_eyes_for(stack.urls, "evaluation", "close_year", YEAR):
        return  # a service without four eyes would close the year at once: not done here
    # closing is asked by one admin and waits for another (issue 18) ...
    page.locator("#confirm").check()
    page.get_by_role("button", name="Tutup").click()
    page.wait_for_load_state()
    notice = page.locator("#pending-notice").inner_text()
    assert notice.startswith("Menunggu pemeriksa")
    request_id = UUID.search(notice).group(0)
    assert request_id[:8] in page.locator("#pending-close").inner_text()
    assert page.locator("#confirm").count() == 0  # no second request while one waits
    # ... who rejects it with a reason code of the year's rules: the year stays open
    checker = context.browser.new_context(viewport={"width": 1280, "height": 900},
                                          locale="id-ID")
    try:
        other = checker.new_page()
        sign_in(other, stack.url, "checker@kemnaker.example")
        other.goto(stack.url + "/approvals")
        item = other.locator(f'#checkable-evaluation li[data-request="{request_id}"]')
        assert "Penutupan evaluasi tahun" in item.inner_text()
        assert item.locator(".maker").inner_text().startswith("Pengaju: Admin kementerian")
        assert axe_violations(other) == []
        item.get_by_label("Kode alasan").select_option("missing_evidence")
        item.get_by_label("Catatan (tanpa data pribadi)").fill("pratinjau belum diperiksa")
        item.get_by_role("button", name=re.compile("^Tolak")).click()
        other.wait_for_load_state()
        decided = other.locator("#decided")
        assert decided.get_attribute("data-state") == "rejected"
        assert "Bukti belum lengkap" in decided.inner_text()
    finally:
        checker.close()
    decision = get(stack, "evaluation", f"/approvals/{request_id}")
    assert decision["state"] == "rejected" and decision["reason_code"] == "missing_evidence"
    assert get(stack, "evaluation", f"/evaluations/{YEAR}")["status"] == "open"
    page.goto(stack.url + f"/evaluation?year={YEAR}")
    assert page.locator("#confirm").count() == 1  # it may be asked again
