"""Composition root of the evaluation service."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg

from services.evaluation.api import build_router, close_year_executor
from services.evaluation.config import CLOSE_YEAR, Policy, override_policy, rule_book
from services.evaluation.projections import HANDLERS, OWN_TABLES, project
from shared import approvals, contracts  # noqa: F401 - contracts registers the consumed types
from shared.approvals import APPROVAL_TABLES, FourEyes
from shared.envelope import Envelope, Event
from shared.projections import RebuildPlan
from shared.rules import RuleBook
from shared.service import ServiceSpec
from shared.topics import EVALUATION, GROUPS, MENTORING, RECRUITMENT

Db = asyncpg.Connection | asyncpg.Pool

DESCRIPTION = """Year-end evaluation of TKS: indicators kept from recruitment, groups and
mentoring events; a cycle per year (open, preview, close) whose outcomes are published on
`tkm.evaluation.v1` (TksEvaluated keyed by TKS, EvaluationOpened/EvaluationClosed keyed by
year) for recruitment to continue or replace each TKS. The close needs four eyes: one ministry
admin asks for it (`POST /evaluations/{year}/close`, 202 pending), another grants it
(`POST /approvals/{request_id}/grant`, docs/four-eyes.md). A year is evaluated under that year's policy
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
# The approval requests of the close (`approval_requests`) are rebuilt from their own events too.


async def project_all(conn: asyncpg.Connection, items: Sequence[tuple[Envelope, Event]]) -> None:
    """The rebuild's projector of the own events: the results and the approval requests (live,
    `shared.approvals` projects its events itself, in the command's transaction)."""
    await project(conn, list(items))
    await approvals.project(conn, items)


REBUILD = RebuildPlan((*FACTS, *OWN_TABLES, *APPROVAL_TABLES), project_all, consumed=HANDLERS,
                      scratch=("late_events",))


class _FixedRules:
    """The override policy as the rules of every year (for the four-eyes section)."""

    def __init__(self, policy: Policy):
        self.policy = policy

    async def in_force(self, db: Db, year: int) -> Any:
        return SimpleNamespace(rules=self.policy)


def build_spec(policy: Policy | None = None,
               rules: RuleBook[Policy] | None = None) -> ServiceSpec:
    """The service with its production defaults: each year evaluated under its own policy
    (`rules`, default a book of its own seeded with config/rules/<year>.toml). `policy` (or
    EVALUATION_POLICY_FILE) instead decides every year, without the rules routes."""
    fixed = policy or override_policy()
    book = rules or rule_book()

    async def policy_of(db: Db, year: int) -> Policy:
        return fixed if fixed is not None else (await book.in_force(db, year)).rules

    # four eyes on the close: the section of the year's rules (or of the override policy)
    four_eyes = FourEyes(book if fixed is None else _FixedRules(fixed),  # type: ignore[arg-type]
                         lambda policy: policy.four_eyes,
                         {CLOSE_YEAR: close_year_executor(policy_of)})
    routers = [build_router(policy_of, four_eyes), four_eyes.router(tags=["approvals"])]
    if fixed is None:
        routers.append(book.router(tags=["rules"]))
    return ServiceSpec(
        name="evaluation", topic=EVALUATION, routers=routers,
        migrations=Path(__file__).parent / "migrations",
        consumes=(RECRUITMENT, GROUPS, MENTORING),
        handlers=HANDLERS, projector=project, rebuild=REBUILD, description=DESCRIPTION,
        background=(*((book.background(),) if fixed is None else ()), four_eyes.sweeper()))
