"""Composition root of the mentoring service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from services.mentoring import handlers
from services.mentoring.api import build_router
from services.mentoring.config import MentoringConfig, MentoringYearRules, load_config, rule_book
from services.mentoring.projections import REBUILD, project
from shared.rules import RuleBook
from shared.service import Background, ServiceContext, ServiceSpec
from shared.topics import GROUPS, MENTORING, RECRUITMENT

log = logging.getLogger("tkm.mentoring")

DESCRIPTION = """TKS assigned to funded TKM groups, monthly reports filed on every group, and
reports not filed by the deadline flagged overdue when the month closes. Consumes
`tkm.recruitment.v1` and `tkm.groups.v1`; publishes `tkm.mentoring.v1` (key: group, or period for
PeriodClosed). Report problems stay internal. A group is assigned under the assignment policy
(same regency, same-province fallback, caseload cap) of its programme year: `GET /rules/{year}`
shows it, `PUT /rules/{year}` (ministry_admin) adopts a new version."""


def _period_closer(config: MentoringConfig) -> Background:
    """Closes months as their deadlines pass, one check an interval, until shutdown."""

    async def close_due_periods(ctx: ServiceContext, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                for closed in await handlers.close_due_periods(ctx, config, handlers.today()):
                    log.info("period %s closed: %s", closed["period"], closed)
            except Exception:  # the database may be away; the next round tries again
                log.exception("closing due periods failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), config.period_close.check_interval_seconds)

    return close_due_periods


def build_spec(config: MentoringConfig | None = None,
               rules: RuleBook[MentoringYearRules] | None = None) -> ServiceSpec:
    """`rules`: the programme rules per year (default: a book of its own, seeded with the
    shipped config/rules/<year>.toml; one per app, as its cache belongs to its database)."""
    config = config or load_config()
    book = rules or rule_book()
    closer = (_period_closer(config),) if config.period_close.automatic else ()
    return ServiceSpec(
        name="mentoring",
        topic=MENTORING,
        routers=[build_router(config, book), book.router(tags=["rules"])],
        migrations=Path(__file__).parent / "migrations",
        consumes=(RECRUITMENT, GROUPS),
        handlers=handlers.HANDLERS,
        projector=project,
        rebuild=REBUILD,
        description=DESCRIPTION,
        background=(book.background(), *closer),
    )
