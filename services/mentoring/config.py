"""Configuration of the mentoring service.

Two kinds, kept apart (issue 17, items 1 and 4):
- the programme rules of a year (`MentoringYearRules`: the assignment policy, i.e. same regency,
  same-province fallback, caseload cap), data adopted per year through `PUT /rules/{year}`
  (shared.rules) and applied to each group by its programme year; shipped for 2021 and 2023 in
  `config/rules/<year>.toml`;
- the operational configuration (`MentoringConfig`: the report deadline day, the automatic
  month close, batch limits), one TOML file (`config/mentoring.toml`, or MENTORING_CONFIG_FILE).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from shared.config import load_toml
from shared.rules import RuleBook

DEFAULT_FILE = Path(__file__).parent / "config" / "mentoring.toml"
CONFIG_ENV = "MENTORING_CONFIG_FILE"
RULES_DIR = Path(__file__).parent / "config" / "rules"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AssignmentRules(_Section):
    caseload_cap: int = Field(ge=1, le=1000, description="groups one TKS may mentor at a time")
    allow_same_province: bool = Field(
        description="false: a TKS mentors only groups of its own regency/city; true: groups "
                    "left without one go to the lightest TKS of the province")


class MentoringYearRules(_Section):
    """The programme rules of one year that mentoring enforces."""

    assignment: AssignmentRules


class ReportingRules(_Section):
    # 28 keeps the deadline a real day in every month
    deadline_day: int = Field(ge=1, le=28)


class PeriodCloseRules(_Section):
    automatic: bool
    check_interval_seconds: float = Field(gt=0)
    window_days: int = Field(ge=0)


class BatchLimits(_Section):
    max_reports: int = Field(ge=1)
    groups_per_transaction: int = Field(ge=1, le=1000)


class MentoringConfig(_Section):
    """Operational configuration, the same for every year. The report deadline stays here: it
    closes a month for every group at once, whatever their programme years."""

    reporting: ReportingRules
    period_close: PeriodCloseRules
    batch: BatchLimits


def load_config(path: str | Path | None = None) -> MentoringConfig:
    return load_toml(MentoringConfig, DEFAULT_FILE, CONFIG_ENV, path)


def rule_book(shipped: Path | None = RULES_DIR) -> RuleBook[MentoringYearRules]:
    """Mentoring's rules per year (one per app: its cache belongs to its database)."""
    return RuleBook("mentoring", MentoringYearRules, shipped)
