"""Bahasa Indonesia first, English available: the console's words, and numbers, rupiah and dates
in the reader's locale (Babel's CLDR data: `Rp 20.000.000`, `1 Desember 2026`)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal, format_percent

LANGUAGES = {"id": "id_ID", "en": "en_ID"}
DEFAULT = "id"

# key -> (Bahasa Indonesia, English)
WORDS: dict[str, tuple[str, str]] = {
    "app_name": ("Konsol Program TKS/TKM", "TKS/TKM Programme Console"),
    "ministry": ("Kementerian Ketenagakerjaan", "Ministry of Manpower"),
    "skip": ("Lewati ke isi utama", "Skip to main content"),
    "sign_in": ("Masuk", "Sign in"),
    "sign_out": ("Keluar", "Sign out"),
    "email": ("Surel", "E-mail"),
    "password": ("Kata sandi", "Password"),
    "bad_login": ("Surel atau kata sandi salah.", "Wrong e-mail or password."),
    "bad_csrf": ("Formulir kedaluwarsa; silakan coba lagi.", "The form expired; please try again."),
    "dashboard": ("Dasbor nasional", "National dashboard"),
    "queues": ("Antrean kerja", "Work queues"),
    "evaluation": ("Evaluasi akhir tahun", "Year-end evaluation"),
    "import": ("Unggah CSV kelompok", "Upload groups (CSV)"),
    "report_form": ("Laporan bulanan", "Monthly report"),
    "my_page": ("Halaman saya", "My page"),
    "language": ("Bahasa", "Language"),
    "year": ("Tahun", "Year"),
    "tahap": ("Tahap", "Stage (tahap)"),
    "province": ("Provinsi", "Province"),
    "provinces": ("Provinsi", "Provinces"),
    "regency": ("Kabupaten/kota", "Regency/city"),
    "tks": ("TKS", "TKS"),
    "regencies": ("Kab/kota", "Regencies"),
    "groups": ("Kelompok", "Groups"),
    "groups_mentored": ("Kelompok didampingi", "Groups mentored"),
    "groups_funded": ("Kelompok didanai", "Groups funded"),
    "people": ("Orang terjangkau", "People reached"),
    "disbursed": ("Rupiah disalurkan", "Rupiah disbursed"),
    "accounted": ("Rupiah dipertanggungjawabkan (LPJ)", "Rupiah accounted (LPJ)"),
    "reports_filed": ("Laporan masuk", "Reports filed"),
    "reports_overdue": ("Laporan terlambat", "Reports overdue"),
    "compliance": ("Kepatuhan laporan", "Report compliance"),
    "continued": ("Dilanjutkan", "Continued"),
    "replaced": ("Diganti", "Replaced"),
    "resigned": ("Mengundurkan diri", "Resigned"),
    "total": ("Jumlah", "Total"),
    "none": ("Tidak ada", "None"),
    "chart_disbursed": ("Rupiah disalurkan per provinsi", "Rupiah disbursed by province"),
    "chart_groups": ("Kelompok didampingi per tahap", "Groups mentored by stage"),
    "no_data": ("Belum ada data.", "No data yet."),
    "status": ("Status", "Status"),
    "members": ("Anggota", "Members"),
    "member_count": ("Jumlah anggota", "Members"),
    "business_type": ("Jenis usaha", "Business type"),
    "funding": ("Pendanaan", "Funding"),
    "tranche": ("Termin", "Tranche"),
    "amount": ("Jumlah (Rp)", "Amount (Rp)"),
    "disbursed_on": ("Tanggal salur", "Disbursed on"),
    "budget_year": ("Tahun anggaran", "Budget year"),
    "lpj": ("LPJ", "LPJ (accountability report)"),
    "reports": ("Laporan bulanan", "Monthly reports"),
    "activities": ("Kegiatan", "Activities"),
    "period": ("Periode", "Period"),
    "revenue": ("Omzet (Rp)", "Revenue (Rp)"),
    "production": ("Produksi", "Production"),
    "members_active": ("Anggota aktif", "Active members"),
    "new_workers": ("Pekerja baru", "New workers"),
    "on_time": ("Tepat waktu", "On time"),
    "late": ("Terlambat", "Late"),
    "yes": ("Ya", "Yes"),
    "no": ("Tidak", "No"),
    "mentor": ("Pendamping (TKS)", "Mentor (TKS)"),
    "caseload": ("Kelompok dampingan", "Caseload"),
    "score": ("Nilai", "Score"),
    "decision": ("Keputusan", "Decision"),
    "indicator": ("Indikator", "Indicator"),
    "value": ("Nilai", "Value"),
    "weight": ("Bobot", "Weight"),
    "contribution": ("Kontribusi", "Contribution"),
    "continue": ("Dilanjutkan", "Continue"),
    "replace": ("Diganti", "Replace"),
    "to_approve": ("Kelompok menunggu persetujuan", "Groups to approve"),
    "to_fund": ("Kelompok menunggu pendanaan", "Groups to fund"),
    "lpj_to_review": ("LPJ menunggu pemeriksaan", "LPJs to review"),
    "overdue_reports": ("Laporan bulanan terlambat", "Overdue monthly reports"),
    "unassigned": ("Kelompok tanpa pendamping", "Groups without a mentor"),
    "approve": ("Setujui", "Approve"),
    "fund": ("Salurkan dana", "Fund"),
    "accept": ("Terima", "Accept"),
    "return": ("Kembalikan", "Return"),
    "open": ("Buka", "Open"),
    "close": ("Tutup", "Close"),
    "preview": ("Pratinjau", "Preview"),
    "closed": ("Ditutup", "Closed"),
    "not_opened": ("Belum dibuka", "Not opened"),
    "done": ("Berhasil.", "Done."),
    "refused": ("Ditolak", "Refused"),
    "eventual": ("Angka di dasbor diperbarui dalam beberapa detik.",
                 "The dashboard's figures follow within seconds."),
    "forbidden": ("Anda tidak berwenang membuka halaman ini.",
                  "You are not allowed to open this page."),
    "not_found": ("Tidak ditemukan.", "Not found."),
    "upload": ("Unggah", "Upload"),
    "csv_file": ("Berkas CSV", "CSV file"),
    "row": ("Baris", "Row"),
    "result": ("Hasil", "Result"),
    "errors": ("Kesalahan", "Errors"),
    "due_this_month": ("Masih harus dilaporkan bulan ini", "Still due this month"),
    "all_filed": ("Semua laporan bulan ini sudah masuk.", "Every report of this month is in."),
    "submit": ("Kirim", "Submit"),
    "save_draft": ("Draf tersimpan di perangkat ini", "Draft kept on this device"),
    "queued": ("Tidak ada sinyal: laporan disimpan dan akan dikirim otomatis saat tersambung.",
               "No connection: the report is kept and will be sent when you are back online."),
    "sent": ("Laporan terkirim.", "Report sent."),
    "pending_drafts": ("Laporan menunggu dikirim", "Reports waiting to be sent"),
    "production_unit": ("Satuan produksi", "Production unit"),
    "support": ("Fasilitasi", "Support given"),
    "partnership": ("Kemitraan", "Partnership"),
    "capital_access": ("Akses permodalan", "Access to capital"),
    "market_access": ("Akses pasar", "Access to markets"),
    "lpj_help": ("Membantu LPJ", "Helped with the LPJ"),
    "problems": ("Kendala (internal)", "Problems (internal)"),
    "national": ("Nasional", "National"),
    "evaluated": ("Dievaluasi", "Evaluated"),
    "reader": ("Pembaca topik", "Topic reader"),
    "events_applied": ("peristiwa diterapkan", "events applied"),
    "role_ministry_admin": ("Admin kementerian", "Ministry admin"),
    "role_provincial_officer": ("Petugas provinsi", "Provincial officer"),
    "role_tks": ("TKS", "TKS"),
    "role_agency": ("Pemantau instansi", "Agency viewer"),
    "registered": ("Terdaftar", "Registered"),
    "already_registered": ("Sudah terdaftar", "Already registered"),
    "approved": ("Disetujui", "Approved"),
    "rejected": ("Ditolak", "Rejected"),
    "funded": ("Didanai", "Funded"),
    "dissolved": ("Dibubarkan", "Dissolved"),
    "submitted": ("Diajukan", "Submitted"),
    "accepted": ("Diterima", "Accepted"),
    "returned": ("Dikembalikan", "Returned"),
    "active": ("Aktif", "Active"),
    "released": ("Dilepas", "Released"),
    "members_hidden": ("Data anggota hanya untuk kementerian dan petugas provinsi.",
                       "Member data is for the ministry and provincial officers only."),
    "nik_masked": ("NIK (disamarkan)", "NIK (masked)"),
    "name": ("Nama", "Name"),
    "tools": ("Alat", "Tools"),
    "materials": ("Bahan", "Materials"),
    "other": ("Lainnya", "Other"),
    "remaining": ("Sisa saldo", "Remaining balance"),
    "lpj_due": ("Batas LPJ", "LPJ due"),
    "monthly_compliance": ("Kepatuhan per bulan", "Compliance by month"),
    "due": ("Wajib", "Due"),
    "filed": ("Masuk", "Filed"),
    "overdue": ("Terlambat", "Overdue"),
    "close_confirm": ("Tutup evaluasi tahun ini (tidak dapat dibatalkan)",
                      "Close this year's evaluation (cannot be undone)"),
    "offline_ready": ("Halaman ini tetap bisa dibuka tanpa sinyal.",
                      "This page opens without a connection too."),
    "per_row_report": ("Laporan per baris", "Per-row report"),
    "reason_code": ("Kode alasan", "Reason code"),
    "scroll_table": ("Tabel (dapat digeser)", "Table (scrolls sideways)"),
    # four eyes on money (issue 18): a maker asks, another person checks
    "approvals": ("Persetujuan", "Approvals"),
    "four_eyes_help": ("Penyaluran dana, penerimaan LPJ dan penutupan evaluasi tahunan "
                       "memerlukan dua orang: pengaju dan pemeriksa yang berbeda.",
                       "Funding, LPJ acceptance and the year-end close need two people: a maker "
                       "and a different checker."),
    "pending_notice": ("Menunggu pemeriksa: permintaan dicatat dengan nomor",
                       "Waiting for a checker: the request is recorded as"),
    "pending_next": ("Orang lain dengan peran pemeriksa menyetujui atau menolaknya di halaman",
                     "Another person with a checking role grants or rejects it on the page"),
    "notice_granted": ("Disetujui: perintahnya telah dijalankan.",
                       "Granted: its command has been carried out."),
    "notice_rejected": ("Permintaan ditolak: perintahnya tidak dijalankan.",
                        "Request rejected: its command is not carried out."),
    "notice_granted_many": ("Permintaan yang dipilih telah diproses.",
                            "The selected requests have been processed."),
    "confirm_needed": ("Centang konfirmasi terlebih dahulu.", "Tick the confirmation first."),
    "self_check": ("Anda sendiri yang mengajukan permintaan ini: orang lain dengan peran "
                   "pemeriksa harus menyetujui atau menolaknya.",
                   "You made this request yourself: another person with a checking role must "
                   "grant or reject it."),
    "none_selected": ("Belum ada permintaan yang dipilih.", "No request is selected."),
    "to_check": ("Menunggu keputusan Anda", "Waiting for your decision"),
    "waiting_others": ("Menunggu pemeriksa lain", "Waiting for another checker"),
    "waiting_checker": ("Menunggu pemeriksa", "Waiting for a checker"),
    "svc_groups": ("Kelompok dan LPJ", "Groups and LPJs"),
    "svc_evaluation": ("Evaluasi", "Evaluation"),
    "request": ("Permintaan", "Request"),
    "cmd_fund": ("Penyaluran dana", "Funding"),
    "cmd_change_tranche": ("Perubahan termin", "Tranche change"),
    "cmd_accept_lpj": ("Penerimaan LPJ", "LPJ acceptance"),
    "cmd_close_year": ("Penutupan evaluasi tahun", "Closing the year's evaluation"),
    "maker": ("Pengaju", "Maker"),
    "checker": ("Pemeriksa", "Checker"),
    "checker_roles": ("Peran pemeriksa", "Checking roles"),
    "you": ("Anda", "you"),
    "requested_at": ("Diajukan", "Requested"),
    "expires_at": ("Kedaluwarsa", "Expires"),
    "decided_at": ("Diputuskan", "Decided"),
    "grant": ("Setujui", "Grant"),
    "reject": ("Tolak", "Reject"),
    "note": ("Catatan (tanpa data pribadi)", "Note (no personal data)"),
    "decision_result": ("Hasil keputusan", "Decision"),
    "recent_decisions": ("Keputusan terbaru", "Recent decisions"),
    "state_pending": ("Menunggu pemeriksa", "Waiting for a checker"),
    "state_granted": ("Disetujui dan dijalankan", "Granted and carried out"),
    "state_rejected": ("Ditolak", "Rejected"),
    "state_expired": ("Kedaluwarsa", "Expired"),
    "shown": ("ditampilkan", "shown"),
    "of": ("dari", "of"),
    "grant_selected": ("Setujui yang dipilih", "Grant the selected"),
    "select_request": ("Pilih permintaan", "Select request"),
    "granted_count": ("Disetujui", "Granted"),
    "rc_wrong_amount": ("Jumlah salah", "Wrong amount"),
    "rc_wrong_target": ("Sasaran salah", "Wrong target"),
    "rc_not_eligible": ("Tidak memenuhi syarat", "Not eligible"),
    "rc_duplicate": ("Permintaan ganda", "Duplicate"),
    "rc_missing_evidence": ("Bukti belum lengkap", "Missing evidence"),
    "rc_other": ("Lainnya", "Other"),
}


def translator(lang: str):
    index = 0 if lang == "id" else 1

    def t(key: str, default: str | None = None) -> str:
        """The key's words; for an unknown key `default` (when given), else the key itself."""
        words = WORDS.get(key)
        if words:
            return words[index]
        return key if default is None else default
    return t


class Formats:
    """Number, rupiah, percent and date formatting for one language."""

    def __init__(self, lang: str):
        self.locale = LANGUAGES.get(lang, LANGUAGES[DEFAULT])

    def num(self, value: Any) -> str:
        return "–" if value is None else format_decimal(value, locale=self.locale)

    def rp(self, value: Any) -> str:
        if value is None:
            return "–"
        return format_currency(int(value), "IDR", locale=self.locale, format="¤ #,##0",
                               currency_digits=False)

    def pct(self, value: Any) -> str:
        return "–" if value is None else format_percent(value, locale=self.locale,
                                                       format="#,##0.0%")

    def day(self, value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, str):
            value = date.fromisoformat(value[:10])
        if isinstance(value, datetime):
            return format_datetime(value, format="d MMM y HH.mm", locale=self.locale)
        return format_date(value, format="d MMM y", locale=self.locale)

    def moment(self, value: Any) -> str:
        """A UTC timestamp (an ISO string from a service, or a datetime), shown in UTC."""
        if not value:
            return "–"
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return value[:40]
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return format_datetime(value, format="d MMM y HH.mm", locale=self.locale) + " UTC"

    def month(self, period: str) -> str:
        year, month = (int(x) for x in period.split("-"))
        return format_date(date(year, month, 1), format="MMMM y", locale=self.locale)
