"""Composition root of the evaluation service."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from services.evaluation.api import build_router
from services.evaluation.config import Policy, override_policy, rule_book
from services.evaluation.projections import HANDLERS, OWN_TABLES, project
from shared import contracts  # noqa: F401 - registers the consumed event types
from shared.projections import RebuildPlan
from shared.rules import RuleBook
from shared.service import ServiceSpec
from shared.topics import EVALUATION, GROUPS, MENTORING, RECRUITMENT

Db = asyncpg.Connection | asyncpg.Pool

DESCRIPTION = """Year-end evaluation of TKS: indicators kept from recruitment, groups and
mentoring events; a cycle per year (open, preview, close) whose outcomes are published on
`tkm.evaluation.v1` (TksEvaluated keyed by TKS, EvaluationOpened/EvaluationClosed keyed by
year) for recruitment to continue or replace each TKS. A year is evaluated under that year's policy
(weights, caps, threshold, minimum months): `GET /rules/{year}` shows it, `PUT /rules/{year}`
(ministry_admin) adopts a new version, which the year's close uses."""


# `tkm rebuild evaluation`: the facts from the consumed topics (through the consumer handlers,
# which only project: evaluation has no policy appending events) and the own results. The two
# never meet in a table: facts are written only by consumed events, results only by own events,
# and each consumed fact is one upsert keyed by what it is about, so the replay's order (consumed
# before own) gives the live answer. `late_events` is not rebuilt: it records how the live
# interleaving went (a fact applied after its year closed), which no replay can reproduce, so
# the handlers' writes to it land in a scratch copy that is thrown away.
FACTS = ("tks_contracts", "tks_exits", "mentor_assignments", "report_facts", "group_facts",
         "periods_closed")
REBUILD = RebuildPlan((*FACTS, *OWN_TABLES), project, consumed=HANDLERS, scratch=("late_events",))


def build_spec(policy: Policy | None = None,
               rules: RuleBook[Policy] | None = None) -> ServiceSpec:
    """The service with its production defaults: each year evaluated under its own policy
    (`rules`, default a book of its own seeded with config/rules/<year>.toml). `policy` (or
    EVALUATION_POLICY_FILE) instead decides every year, without the rules routes."""
    fixed = policy or override_policy()
    book = rules or rule_book()

    async def policy_of(db: Db, year: int) -> Policy:
        return fixed if fixed is not None else (await book.in_force(db, year)).rules

    routers = [build_router(policy_of)]
    if fixed is None:
        routers.append(book.router(tags=["rules"]))
    return ServiceSpec(
        name="evaluation", topic=EVALUATION, routers=routers,
        migrations=Path(__file__).parent / "migrations",
        consumes=(RECRUITMENT, GROUPS, MENTORING),
        handlers=HANDLERS, projector=project, rebuild=REBUILD, description=DESCRIPTION,
        background=(book.background(),) if fixed is None else ())
