"""Command handlers (load, decide, save) and the policy on evaluation outcomes."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from services.recruitment import domain
from services.recruitment.commands import (
    BriefApplicant,
    IntakeItem,
    OpenRound,
    RecruitApplicant,
    RegisterApplicant,
    ResignTks,
    ScreenApplicant,
)
from services.recruitment.config import RecruitmentConfig
from services.recruitment.domain import Applicant, RecruitmentRound, Tks, Vacancy
from services.recruitment.projections import project
from shared import pii
from shared.aggregate import Aggregate, UnitOfWork
from shared.auth import Actor, Role
from shared.contracts.evaluation import TksEvaluated
from shared.contracts.recruitment import Quota
from shared.envelope import Envelope
from shared.errors import ConflictError, DomainError, NotFoundError
from shared.privacy import keyring_of
from shared.service import ServiceContext

log = logging.getLogger("tkm.recruitment")
A = TypeVar("A", bound=Aggregate)


async def _existing(uow: UnitOfWork, cls: type[A], kind: str, id_: str) -> A:
    agg = await uow.load(cls, f"{kind}-{id_}")
    if agg is None:
        raise NotFoundError(f"no such {kind}", field=f"{kind}_id", **{f"{kind}_id": id_})
    return agg


def _phone(phone: str, region: str) -> str:
    try:
        number = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException as exc:
        raise DomainError(f"not a phone number: {exc}", field="phone") from exc
    if not phonenumbers.is_valid_number(number):
        raise DomainError("not a valid phone number", field="phone")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _email(email: str) -> str:
    try:
        return validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise DomainError(f"not a valid e-mail address: {exc}", field="email") from exc


def _registration(cmd: RegisterApplicant, config: RecruitmentConfig) -> domain.Registration:
    """Contact fields are optional unless the programme requires them (`[contact] required`);
    a field given is checked and normalised all the same."""
    for name in config.contact.required:
        if getattr(cmd, name) is None:
            raise DomainError(f"the programme requires the applicant's {name}", field=name)
    return domain.Registration(
        year=cmd.year, nik=cmd.nik.strip(), full_name=cmd.full_name, sex=cmd.sex,
        birth_date=cmd.birth_date, education=cmd.education,
        domicile_regency_code=cmd.domicile_regency_code,
        phone=_phone(cmd.phone, config.contact.phone_region) if cmd.phone is not None else None,
        email=_email(cmd.email) if cmd.email is not None else None)


# the claim, in one statement: the unique key on (year, nik hash) decides races between
# concurrent registrations of one NIK; a row claimed before encryption holds the plain NIK ($4)
_CLAIM = """
INSERT INTO applicant_nik (year, nik, applicant_id)
SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM applicant_nik WHERE year = $1 AND nik = $4)
ON CONFLICT (year, nik) DO NOTHING RETURNING applicant_id"""


async def _claim_nik(uow: UnitOfWork, year: int, nik: str, nik_hash: str, applicant_id: str,
                     actor: Actor) -> None:
    claimed = await uow.conn.fetchval(_CLAIM, year, nik_hash, applicant_id, nik)
    if claimed is None:
        existing = await uow.conn.fetchrow(
            "SELECT n.applicant_id, a.province_code FROM applicant_nik n "
            "LEFT JOIN applicants a USING (applicant_id) WHERE n.year = $1 "
            "AND n.nik IN ($2, $3) LIMIT 1", year, nik_hash, nik)
        # another province's applicant is not named to a provincial officer
        if actor.role is Role.PROVINCE and existing["province_code"] != actor.province_code:
            raise ConflictError(f"this NIK is already registered for {year} in another "
                                "province", field="nik")
        raise ConflictError(f"this NIK is already registered for {year}", field="nik",
                            applicant_id=existing["applicant_id"])


async def _new_applicant(uow: UnitOfWork, cmd: RegisterApplicant, config: RecruitmentConfig,
                         actor: Actor, keyring: pii.Keyring) -> Applicant:
    """A registered applicant, its events pending (personal fields as tokens of a new key of
    its own: its person_ref is its stream id), its NIK's hash claimed for the year. Checked on
    the plaintext first; a refusal rolls the new key back with the rest."""
    applicant = Applicant(f"applicant-{uuid.uuid4()}")
    reg = _registration(cmd, config)
    keys = await pii.ensure_keys(uow.conn, keyring, [applicant.stream_id])
    applicant.register(reg, config.eligibility, keys[applicant.stream_id], keyring.nik_hash)
    actor.ensure_province(applicant.province_code)
    registered = applicant.pending[-1]
    assert isinstance(registered, domain.ApplicantRegistered) and registered.nik_hash
    await _claim_nik(uow, cmd.year, reg.nik.strip(), registered.nik_hash,
                     applicant.applicant_id, actor)
    return applicant


def _applicant_view(applicant: Applicant) -> dict[str, Any]:
    return {"applicant_id": applicant.applicant_id, "nik_masked": applicant.nik_masked,
            "year": applicant.year, "province_code": applicant.province_code,
            "status": applicant.status}


def _tks_view(tks: Tks, rnd: RecruitmentRound | None = None) -> dict[str, Any]:
    view = {"tks_id": tks.tks_id, "round_id": tks.round_id, "year": tks.contract_year,
            "stage": tks.stage, "province_code": tks.province_code,
            "regency_code": tks.regency_code, "status": tks.status,
            "contract_start": tks.contract_start, "contract_end": tks.contract_end}
    if rnd is not None:
        view["remaining_quota"] = rnd.remaining(tks.province_code, tks.regency_code)
    return view


def _item_error(index: int, exc: DomainError) -> dict[str, Any]:
    return {"index": index, "status": exc.status, **exc.body()}


async def open_round(ctx: ServiceContext, cmd: OpenRound, actor: Actor) -> dict[str, Any]:
    round_id = str(cmd.round_id or uuid.uuid4())

    async def decide(uow: UnitOfWork) -> dict[str, Any]:
        stream = f"round-{round_id}"
        rnd = await uow.load(RecruitmentRound, stream) or RecruitmentRound(stream)
        rnd.open(cmd.year, cmd.stage, [Quota(province_code=q.province_code,
                                             regency_code=q.regency_code, places=q.places)
                                       for q in cmd.quotas])
        await uow.save(rnd)
        return {"round_id": round_id, "year": rnd.year, "stage": rnd.stage,
                "status": rnd.status, "places": sum(q.places for q in cmd.quotas)}

    return await ctx.command(decide, actor)


async def close_round(ctx: ServiceContext, round_id: str, actor: Actor) -> dict[str, Any]:
    async def decide(uow: UnitOfWork) -> dict[str, Any]:
        rnd = await _existing(uow, RecruitmentRound, "round", round_id)
        rnd.close()
        await uow.save(rnd)
        return {"round_id": round_id, "status": rnd.status, "recruited": rnd.recruited}

    return await ctx.command(decide, actor)


async def register_applicant(ctx: ServiceContext, cmd: RegisterApplicant,
                             config: RecruitmentConfig, actor: Actor) -> dict[str, Any]:
    keyring = keyring_of(ctx)

    async def decide(uow: UnitOfWork) -> dict[str, Any]:
        applicant = await _new_applicant(uow, cmd, config, actor, keyring)
        await uow.save(applicant)
        return _applicant_view(applicant)

    return await ctx.command(decide, actor)


async def register_applicants(ctx: ServiceContext, cmds: list[RegisterApplicant],
                              config: RecruitmentConfig, actor: Actor) -> list[dict[str, Any]]:
    """One transaction; each item in a savepoint, so a refused item leaves no trace."""
    keyring = keyring_of(ctx)

    async def decide(uow: UnitOfWork) -> list[dict[str, Any]]:
        results = []
        for i, cmd in enumerate(cmds):
            try:
                async with uow.conn.transaction():
                    applicant = await _new_applicant(uow, cmd, config, actor, keyring)
                    await uow.save(applicant)
                results.append({"index": i, **_applicant_view(applicant), "status": 201})
            except DomainError as exc:
                results.append(_item_error(i, exc))
        return results

    return await ctx.command(decide, actor)


async def _change_applicant(ctx: ServiceContext, applicant_id: str, actor: Actor,
                            change: Callable[[Applicant], None]) -> dict[str, Any]:
    async def decide(uow: UnitOfWork) -> dict[str, Any]:
        applicant = await _existing(uow, Applicant, "applicant", applicant_id)
        actor.ensure_province(applicant.province_code)
        change(applicant)
        await uow.save(applicant)
        return _applicant_view(applicant)

    return await ctx.command(decide, actor)


async def screen_applicant(ctx: ServiceContext, applicant_id: str, cmd: ScreenApplicant,
                           config: RecruitmentConfig, actor: Actor) -> dict[str, Any]:
    """A rejection's note (an officer's free text, which may name people) is stored as a token
    of the applicant's key, like its personal fields: erased with them."""
    keyring = keyring_of(ctx)

    async def decide(uow: UnitOfWork) -> dict[str, Any]:
        applicant = await _existing(uow, Applicant, "applicant", applicant_id)
        actor.ensure_province(applicant.province_code)
        note = cmd.note
        if note is not None and not cmd.passed:
            key = (await pii.ensure_keys(uow.conn, keyring, [applicant.stream_id]))[
                applicant.stream_id]
            try:
                note = key.encrypt("rejection_note", note)
            except pii.PersonErasedError:
                raise ConflictError("the applicant's personal data was erased: no note can be "
                                    "recorded about them", field="note") from None
        applicant.screen(cmd.passed, cmd.reason, note, config.screening.rejection_reasons)
        await uow.save(applicant)
        return _applicant_view(applicant)

    return await ctx.command(decide, actor)


async def brief_applicant(ctx: ServiceContext, applicant_id: str, cmd: BriefApplicant,
                          actor: Actor) -> dict[str, Any]:
    return await _change_applicant(ctx, applicant_id, actor,
                                   lambda a: a.brief(cmd.stage, cmd.city, cmd.briefed_on))


async def recruit_applicant(ctx: ServiceContext, round_id: str, cmd: RecruitApplicant,
                            actor: Actor) -> dict[str, Any]:
    async def decide(uow: UnitOfWork) -> dict[str, Any]:
        # lock order everywhere: round, applicant, tks, vacancy
        rnd = await _existing(uow, RecruitmentRound, "round", round_id)
        tks = await _recruit(uow, rnd, cmd.applicant_id, cmd, actor, None, None)
        await uow.save(rnd)
        return _tks_view(tks, rnd)

    return await ctx.command(decide, actor)


async def _recruit(uow: UnitOfWork, rnd: RecruitmentRound, applicant_id: uuid.UUID,
                   cmd: RecruitApplicant | IntakeItem, actor: Actor,
                   new_applicant: Applicant | None, briefing: Any) -> Tks:
    """Recruit into `rnd` (saved by the caller, once). Saves the applicant, TKS and vacancy."""
    regency = domain.known_regency(cmd.regency_code)
    actor.ensure_province(regency.province_code)
    if new_applicant is not None:
        applicant, tks = new_applicant, Tks(f"tks-{applicant_id}")
    else:
        applicant = await _existing(uow, Applicant, "applicant", str(applicant_id))
        # an officer recruits (and briefs) only its own province's applicants, whatever
        # regency it recruits them into
        actor.ensure_province(applicant.province_code)
        tks = await uow.load(Tks, f"tks-{applicant_id}") or Tks(f"tks-{applicant_id}")
    if briefing is not None:
        applicant.brief(rnd.stage, briefing.city, briefing.briefed_on)
    vacancy = (await _existing(uow, Vacancy, "vacancy", str(cmd.vacancy_id))
               if cmd.vacancy_id else None)
    domain.recruit(rnd, applicant, tks, regency.code, cmd.contract_start, cmd.contract_end,
                   vacancy)
    await uow.save(applicant)
    await uow.save(tks)
    if vacancy is not None:
        await uow.save(vacancy)
    return tks


async def intake(ctx: ServiceContext, round_id: str, items: list[IntakeItem],
                 config: RecruitmentConfig, actor: Actor) -> list[dict[str, Any]]:
    """Register, screen, brief and recruit many applicants into one round in one transaction,
    each item in a savepoint. The round is loaded and saved once for the whole batch."""
    keyring = keyring_of(ctx)

    async def decide(uow: UnitOfWork) -> list[dict[str, Any]]:
        rnd = await _existing(uow, RecruitmentRound, "round", round_id)
        rnd.ensure_open()
        results = []
        for i, item in enumerate(items):
            try:
                async with uow.conn.transaction():
                    if item.applicant is not None:
                        applicant = await _new_applicant(uow, item.applicant, config, actor,
                                                         keyring)
                        applicant.screen(True, None, None, config.screening.rejection_reasons)
                        tks = await _recruit(uow, rnd, uuid.UUID(applicant.applicant_id), item,
                                             actor, applicant, item.briefing)
                        # the id of everything created: the new applicant's (the TKS id too)
                        created = {"applicant_id": applicant.applicant_id,
                                   "nik_masked": applicant.nik_masked}
                    else:
                        assert item.applicant_id is not None
                        tks = await _recruit(uow, rnd, item.applicant_id, item, actor, None,
                                             item.briefing)
                        created = {"applicant_id": str(item.applicant_id)}
                results.append({"index": i, **created, **_tks_view(tks), "status": 201})
            except DomainError as exc:
                results.append(_item_error(i, exc))
        await uow.save(rnd)
        return results

    return await ctx.command(decide, actor)


async def resign_tks(ctx: ServiceContext, tks_id: str, cmd: ResignTks,
                     actor: Actor) -> dict[str, Any]:
    async def decide(uow: UnitOfWork) -> dict[str, Any]:
        tks = await _existing(uow, Tks, "tks", tks_id)
        actor.ensure_province(tks.province_code)
        vacancy = tks.resign(cmd.effective_date, cmd.open_vacancy)
        await uow.save(tks)
        if vacancy is not None:
            await uow.save(vacancy)
        return {**_tks_view(tks), "vacancy_id": vacancy.vacancy_id if vacancy else None}

    return await ctx.command(decide, actor)


async def on_tks_evaluated(uow: UnitOfWork, envelope: Envelope, event: TksEvaluated) -> None:
    """A "continue" renews the contract for the next year; a "replace" releases the TKS and
    opens a vacancy. An outcome already applied is a no-op (the inbox drops redeliveries; this
    covers a re-issued evaluation). An outcome about a TKS unknown here, or contradicting what
    was applied, raises and is dead-lettered for an operator."""
    uow.projector = project  # the consumer's unit of work carries no projector of its own
    tks = await uow.load(Tks, f"tks-{event.tks_id}")
    if tks is None:
        raise NotFoundError(f"TKS {event.tks_id} was never recruited", field="tks_id")
    if tks.status == "resigned":
        log.warning("evaluation of TKS %s ignored: it resigned", tks.tks_id)
        return
    if event.decision == "continue":
        if tks.renewed_for(event.year + 1):
            log.info("TKS %s is already renewed for %s", tks.tks_id, event.year + 1)
            return
        tks.renew(event.year, event.score)
        await uow.save(tks)
    else:
        if tks.status == "released" and tks.contract_year == event.year:
            log.info("TKS %s is already released after %s", tks.tks_id, event.year)
            return
        vacancy = tks.release_after_evaluation(event.year)
        await uow.save(tks)
        await uow.save(vacancy)


HANDLERS: dict[str, Callable[[UnitOfWork, Envelope, Any], Awaitable[None]]] = {
    TksEvaluated.event_type: on_tks_evaluated,
}
