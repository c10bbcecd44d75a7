"""Composition root of the groups service."""

from __future__ import annotations

from pathlib import Path

from services.groups.api import build_router
from services.groups.config import GroupYearRules, ProgrammeConfig, load_config, rule_book
from services.groups.csv_import import CSV_LAYOUT
from services.groups.handlers import four_eyes_of
from services.groups.privacy import groups_privacy
from services.groups.projections import REBUILD, project
from shared.privacy import build_router as privacy_router
from shared.rules import RuleBook
from shared.service import ServiceSpec
from shared.topics import GROUPS

DESCRIPTION = f"""TKM self-employment groups: registered (one by one or from a CSV file),
approved, funded, accounted for (LPJ) and advanced through the empowerment stages. Publishes
`{GROUPS}` (key = group id; member counts only, never member data); consumes no topic.

Roles: ministry_admin everything; provincial_officer registers, approves, reviews and reads in
its province; agency and tks read groups and aggregates without member data.

Four eyes on money (docs/four-eyes.md): a funding (tranche 1 `fund`, a later one
`change_tranche`) and an LPJ acceptance are asked for by a maker (ministry or the group's
provincial officer) and answered 202 `{{"state": "pending", "request_id", ...}}`; another person
with a checking role (the ministry for fundings; the ministry or another officer of the
province for LPJs) grants it (`POST /approvals/{id}/grant`, carried out exactly once) or rejects
it with a reason code; undecided requests expire. Which commands, roles, thresholds and expiry
apply is the `four_eyes` section of each year's rules. Members' NIKs are shown masked, to the ministry and the group's provincial officer.
Every command applies the programme rules of the group's own year (group size, ages and the day
they are measured on, funding ceiling and split, tranches, LPJ due days, stages, advancement):
`GET /rules/{{year}}` shows them, `PUT /rules/{{year}}` (ministry_admin) adopts a new version. The
ministry registers a past year's groups with their own `registered_on` (audited).

Rejections, returned LPJs and dissolutions carry a reason code (published); the officer's
optional note stays in this service and is shown only to the ministry and provincial officers.

{CSV_LAYOUT}
"""


def build_spec(config: ProgrammeConfig | None = None,
               rules: RuleBook[GroupYearRules] | None = None) -> ServiceSpec:
    """`rules`: the programme rules per year (default: a book of its own, seeded with the
    shipped config/rules/<year>.toml; one per app, as its cache belongs to its database)."""
    config = config or load_config()
    book = rules or rule_book()
    four_eyes = four_eyes_of(book)
    return ServiceSpec(name="groups", topic=GROUPS,
                       routers=[build_router(config, book, four_eyes),
                                book.router(tags=["rules"]),
                                four_eyes.router(tags=["approvals"]),
                                privacy_router(groups_privacy())],
                       migrations=Path(__file__).parent / "migrations", projector=project,
                       rebuild=REBUILD, description=DESCRIPTION,
                       background=(book.background(), four_eyes.sweeper()),
                       personal_data=True)
