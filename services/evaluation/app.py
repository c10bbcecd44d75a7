"""Composition root of the evaluation service."""

from __future__ import annotations

from pathlib import Path

from services.evaluation.api import build_router
from services.evaluation.config import Policy, load_policy
from services.evaluation.projections import HANDLERS, OWN_TABLES, project
from shared import contracts  # noqa: F401 - registers the consumed event types
from shared.service import ServiceSpec
from shared.topics import EVALUATION, GROUPS, MENTORING, RECRUITMENT

DESCRIPTION = """Year-end evaluation of TKS: indicators kept from recruitment, groups and
mentoring events; a cycle per year (open, preview, close) whose outcomes are published on
`tkm.evaluation.v1` (TksEvaluated keyed by TKS, EvaluationOpened/EvaluationClosed keyed by
year) for recruitment to continue or replace each TKS."""


def build_spec(policy: Policy | None = None) -> ServiceSpec:
    """The service with its production defaults; tests may pass another policy."""
    return ServiceSpec(
        name="evaluation", topic=EVALUATION,
        routers=[build_router(policy or load_policy())],
        migrations=Path(__file__).parent / "migrations",
        consumes=(RECRUITMENT, GROUPS, MENTORING),
        handlers=HANDLERS, projector=project, read_models=OWN_TABLES, description=DESCRIPTION)
