"""Composition root of the recruitment service."""

from __future__ import annotations

from pathlib import Path

import shared.contracts  # noqa: F401 - registers the consumed and published event types
from services.recruitment.api import make_router
from services.recruitment.config import RecruitmentConfig, load_config
from services.recruitment.handlers import HANDLERS
from services.recruitment.privacy import recruitment_privacy, seal_plaintext_job
from services.recruitment.projections import project
from shared.privacy import build_router as privacy_router
from shared.projections import RebuildPlan
from shared.service import ServiceSpec
from shared.topics import EVALUATION, RECRUITMENT

DESCRIPTION = """Recruitment of volunteer facilitators (TKS): rounds with quotas per province and
regency, applicants (NIK shown masked; personal data encrypted at rest, and a person's access,
correction and erasure under `/privacy`), screening, briefing in stages, recruitment, resignation,
and contracts renewed or ended after the year-end evaluation. Publishes `tkm.recruitment.v1`
(no personal data); consumes `TksEvaluated` from `tkm.evaluation.v1`."""


# `tkm rebuild recruitment`: every read model comes from the own events alone; the consumed
# TksEvaluated only drives a policy whose events are in the store. `applicant_nik` (one
# registration per NIK and year) is the rule, a service table, and is not rebuilt.
REBUILD = RebuildPlan(("rounds", "round_quotas", "applicants", "tks_roster", "vacancies"), project)


def build_spec(config: RecruitmentConfig | None = None) -> ServiceSpec:
    config = config or load_config()
    return ServiceSpec(
        name="recruitment", topic=RECRUITMENT,
        routers=[make_router(config), privacy_router(recruitment_privacy(config))],
        migrations=Path(__file__).parent / "migrations", consumes=(EVALUATION,),
        handlers=dict(HANDLERS), projector=project, rebuild=REBUILD,
        description=DESCRIPTION, personal_data=True,
        # the personal data stored before encryption, sealed once (docs/privacy.md)
        background=(seal_plaintext_job,))
