"""Programme configuration of the mentoring service, loaded from a TOML data file."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from shared.config import load_toml

DEFAULT_FILE = Path(__file__).parent / "config" / "mentoring.toml"
CONFIG_ENV = "MENTORING_CONFIG_FILE"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AssignmentRules(_Section):
    caseload_cap: int = Field(ge=1)
    allow_same_province: bool


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
    assignment: AssignmentRules
    reporting: ReportingRules
    period_close: PeriodCloseRules
    batch: BatchLimits


def load_config(path: str | Path | None = None) -> MentoringConfig:
    return load_toml(MentoringConfig, DEFAULT_FILE, CONFIG_ENV, path)
