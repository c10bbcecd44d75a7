"""Composition root of the mentoring service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import APIRouter, FastAPI

from services.mentoring import handlers
from services.mentoring.api import build_router
from services.mentoring.config import MentoringConfig, load_config
from services.mentoring.projections import project
from shared.service import ServiceSpec
from shared.topics import GROUPS, MENTORING, RECRUITMENT

log = logging.getLogger("tkm.mentoring")

DESCRIPTION = """TKS assigned to funded TKM groups, monthly reports filed on every group, and
reports not filed by the deadline flagged overdue when the month closes. Consumes
`tkm.recruitment.v1` and `tkm.groups.v1`; publishes `tkm.mentoring.v1` (key: group, or period for
PeriodClosed). Report problems stay internal."""


def _period_closer(config: MentoringConfig) -> APIRouter:
    """A router without routes whose lifespan closes months as their deadlines pass; it runs
    inside the kernel's lifespan, so the service context is ready."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = None
        if config.period_close.automatic:
            task = asyncio.create_task(_close_forever(app, config), name="period-closer")
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return APIRouter(lifespan=lifespan)


async def _close_forever(app: FastAPI, config: MentoringConfig) -> None:
    while True:
        try:
            for closed in await handlers.close_due_periods(app.state.ctx, config,
                                                           handlers.today()):
                log.info("period %s closed: %s", closed["period"], closed)
        except Exception:  # the database may be away; the next round tries again
            log.exception("closing due periods failed")
        await asyncio.sleep(config.period_close.check_interval_seconds)


def build_spec(config: MentoringConfig | None = None) -> ServiceSpec:
    config = config or load_config()
    return ServiceSpec(
        name="mentoring",
        topic=MENTORING,
        routers=[build_router(config), _period_closer(config)],
        migrations=Path(__file__).parent / "migrations",
        consumes=(RECRUITMENT, GROUPS),
        handlers=handlers.HANDLERS,
        projector=project,
        description=DESCRIPTION,
    )
