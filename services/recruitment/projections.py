"""Read models of the recruitment service, written inline in the command's (or the consumed
event's) transaction. Each event updates its rows in place; nothing is recounted."""

from __future__ import annotations

from collections import Counter

import asyncpg

from services.recruitment.domain import (
    ApplicantBriefed,
    ApplicantPassedScreening,
    ApplicantRegistered,
    ApplicantRejected,
    RoundPlaceTaken,
    VacancyFilled,
)
from shared.contracts.recruitment import (
    RecruitmentRoundClosed,
    RecruitmentRoundOpened,
    TksContractRenewed,
    TksRecruited,
    TksReleased,
    TksResigned,
    VacancyOpened,
)
from shared.envelope import Envelope, Event
from shared.privacy import PersonCorrected

# a corrected personal field (a token of the applicant's new key) -> its column
CORRECTED_COLUMNS = {"nik": "nik", "full_name": "full_name", "birth_date": "birth_date",
                     "phone": "phone", "email": "email", "rejection_note": "rejection_note"}


async def project(conn: asyncpg.Connection, events: list[tuple[Envelope, Event]]) -> None:
    # a batch recruitment saves hundreds of places on one round at once: one update per quota
    places: Counter[tuple[str, str, str]] = Counter()
    for envelope, event in events:
        if isinstance(event, RoundPlaceTaken):
            places[(event.round_id, event.province_code, event.regency_code)] += 1
        else:
            await _one(conn, envelope, event)
    if places:
        await conn.executemany(
            "UPDATE round_quotas SET recruited = recruited + $4 WHERE round_id = $1 "
            "AND province_code = $2 AND regency_code IN ($3, '')",
            [(*key, n) for key, n in places.items()])
        totals: Counter[str] = Counter()
        for (round_id, _, _), n in places.items():
            totals[round_id] += n
        await conn.executemany("UPDATE rounds SET recruited = recruited + $2 WHERE round_id = $1",
                               list(totals.items()))


async def _one(conn: asyncpg.Connection, envelope: Envelope, event: Event) -> None:
    at = envelope.occurred_at
    match event:
        case ApplicantRegistered():
            # the event's tokens as they are (a rebuild gives the same bytes)
            await conn.execute(
                "INSERT INTO applicants (applicant_id, year, nik_masked, full_name, sex, "
                "birth_date, education, province_code, regency_code, phone, email, status, "
                "registered_at, updated_at, nik, nik_hash) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'registered', $12, $12, "
                "$13, $14) ON CONFLICT (applicant_id) DO NOTHING",
                event.applicant_id, event.year, event.nik_masked, event.full_name, event.sex,
                event.birth_date, event.education, event.domicile_province_code,
                event.domicile_regency_code, event.phone, event.email, at, event.nik,
                event.nik_hash)
        case PersonCorrected():
            # the applicant's personal fields re-encrypted under its new key (shared.privacy);
            # updated_at stays: a correction is not a step of the application
            columns = [(CORRECTED_COLUMNS[f], v) for f, v in sorted(event.values.items())
                       if f in CORRECTED_COLUMNS]
            if columns and event.person_ref.startswith("applicant-"):
                sets = ", ".join(f"{c} = ${i}" for i, (c, _) in enumerate(columns, 2))
                await conn.execute(f"UPDATE applicants SET {sets} WHERE applicant_id = $1",
                                   event.person_ref.removeprefix("applicant-"),
                                   *(v for _, v in columns))
        case ApplicantPassedScreening():
            await conn.execute(
                "UPDATE applicants SET status = 'screened', passed_screening = true, "
                "updated_at = $2 WHERE applicant_id = $1", event.applicant_id, at)
        case ApplicantRejected():
            await conn.execute(
                "UPDATE applicants SET status = 'rejected', rejection_reason = $2, "
                "rejection_note = $3, updated_at = $4 WHERE applicant_id = $1",
                event.applicant_id, event.reason, event.note, at)
        case ApplicantBriefed():
            await conn.execute(
                "UPDATE applicants SET status = 'briefed', briefing_stage = $2, "
                "briefing_city = $3, briefed_on = $4, updated_at = $5 WHERE applicant_id = $1",
                event.applicant_id, event.stage, event.city, event.briefed_on, at)
        case RecruitmentRoundOpened():
            await conn.execute(
                "INSERT INTO rounds (round_id, year, stage, status, opened_at) "
                "VALUES ($1, $2, $3, 'open', $4) ON CONFLICT (round_id) DO NOTHING",
                event.round_id, event.year, event.stage, at)
            await conn.executemany(
                "INSERT INTO round_quotas (round_id, province_code, regency_code, places) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                [(event.round_id, q.province_code, q.regency_code or "", q.places)
                 for q in event.quotas])
        case RecruitmentRoundClosed():
            await conn.execute("UPDATE rounds SET status = 'closed', closed_at = $2 "
                               "WHERE round_id = $1", event.round_id, at)
        case TksRecruited():
            await conn.execute(
                "INSERT INTO tks_roster (tks_id, year, round_id, stage, recruited_year, "
                "province_code, regency_code, status, contract_start, contract_end, updated_at) "
                "VALUES ($1, $2, $3, $4, $2, $5, $6, 'active', $7, $8, $9) "
                "ON CONFLICT (tks_id, year) DO NOTHING",
                event.tks_id, event.year, event.round_id, event.stage, event.province_code,
                event.regency_code, event.contract_start, event.contract_end, at)
            await conn.execute("UPDATE applicants SET status = 'recruited', updated_at = $2 "
                               "WHERE applicant_id = $1", event.tks_id, at)
        case TksContractRenewed():
            await conn.execute(
                "UPDATE tks_roster SET status = 'renewed', evaluation_score = $3, updated_at = $4"
                " WHERE tks_id = $1 AND year = $2", event.tks_id, event.year - 1,
                event.evaluation_score, at)
            await conn.execute(
                "INSERT INTO tks_roster (tks_id, year, round_id, stage, recruited_year, "
                "province_code, regency_code, status, contract_start, contract_end, updated_at) "
                "SELECT tks_id, $2, round_id, stage, recruited_year, $3, $4, 'active', $5, $6, $7"
                " FROM tks_roster WHERE tks_id = $1 AND year = $2 - 1 "
                "ON CONFLICT (tks_id, year) DO NOTHING",
                event.tks_id, event.year, event.province_code, event.regency_code,
                event.contract_start, event.contract_end, at)
        case TksReleased():
            await conn.execute(
                "UPDATE tks_roster SET status = 'released', ended_on = $3, end_reason = $4, "
                "updated_at = $5 WHERE tks_id = $1 AND year = $2",
                event.tks_id, event.year, event.effective_date, event.reason, at)
        case TksResigned():
            await conn.execute(
                "UPDATE tks_roster SET status = 'resigned', ended_on = $3, "
                "end_reason = 'resignation', updated_at = $4 WHERE tks_id = $1 AND year = $2",
                event.tks_id, event.year, event.effective_date, at)
        case VacancyOpened():
            await conn.execute(
                "INSERT INTO vacancies (vacancy_id, year, province_code, regency_code, reason, "
                "replaces_tks_id, status, opened_at) VALUES ($1, $2, $3, $4, $5, $6, 'open', $7) "
                "ON CONFLICT (vacancy_id) DO NOTHING",
                event.vacancy_id, event.year, event.province_code, event.regency_code,
                event.reason, event.replaces_tks_id, at)
        case VacancyFilled():
            await conn.execute(
                "UPDATE vacancies SET status = 'filled', filled_by_tks_id = $2, "
                "filled_in_round_id = $3, filled_at = $4 WHERE vacancy_id = $1",
                event.vacancy_id, event.tks_id, event.round_id, at)
