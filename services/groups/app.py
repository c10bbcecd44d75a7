"""Composition root of the groups service."""

from __future__ import annotations

from pathlib import Path

from services.groups.api import build_router
from services.groups.config import ProgrammeConfig, load_config
from services.groups.csv_import import CSV_LAYOUT
from services.groups.projections import REBUILD, project
from shared.service import ServiceSpec
from shared.topics import GROUPS

DESCRIPTION = f"""TKM self-employment groups: registered (one by one or from a CSV file),
approved, funded, accounted for (LPJ) and advanced through the empowerment stages. Publishes
`{GROUPS}` (key = group id; member counts only, never member data); consumes no topic.

Roles: ministry_admin everything; provincial_officer registers, approves, reviews and reads in
its province (funding is the ministry's); agency and tks read groups and aggregates without
member data. Members' NIKs are shown masked, to the ministry and the group's provincial officer.
Rejections, returned LPJs and dissolutions carry a reason code (published); the officer's
optional note stays in this service and is shown only to the ministry and provincial officers.

{CSV_LAYOUT}
"""


def build_spec(config: ProgrammeConfig | None = None) -> ServiceSpec:
    config = config or load_config()
    return ServiceSpec(name="groups", topic=GROUPS, routers=[build_router(config)],
                       migrations=Path(__file__).parent / "migrations", projector=project,
                       rebuild=REBUILD, description=DESCRIPTION)
