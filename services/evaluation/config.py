"""The evaluation policy: weights, caps, threshold and minimum service.

A programme rule of each year (issue 17, item 1): `rule_book()` keeps one policy per programme
year, adopted through `PUT /rules/{year}` (shared.rules) and shipped for 2021 and 2023 in
`config/rules/<year>.toml`; a year's evaluation uses that year's policy. EVALUATION_POLICY_FILE,
when set, names one policy file that decides every year instead (an operator's override, as
before the rules per year).
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.approvals import CommandRule, FourEyesRules
from shared.auth import Role
from shared.rules import RuleBook

POLICY_FILE_ENV = "EVALUATION_POLICY_FILE"
RULES_DIR = Path(__file__).parent / "config" / "rules"
DEFAULT_POLICY_FILE = RULES_DIR / "2023.toml"  # the current policy

IndicatorName = Literal["reporting_compliance", "revenue_growth", "new_workers",
                        "lpj_completion", "groups_active"]
INDICATORS: tuple[IndicatorName, ...] = get_args(IndicatorName)


class PolicyError(ValueError):
    """The policy file is missing, unreadable or breaks a rule; the service refuses to start."""


class IndicatorRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    weight: float = Field(ge=0, le=1)
    cap: float = Field(gt=0, description="the value that earns full marks")


CLOSE_YEAR = "close_year"  # the four-eyes command type of the year-end close


def default_four_eyes() -> FourEyesRules:
    """Four eyes on the year-end close: one ministry admin asks, another grants (issue 18).
    What a year's rules adopted before the section existed are read with, so it must never let
    the close through alone; the shipped config/rules/<year>.toml say the same."""
    return FourEyesRules(commands={CLOSE_YEAR: CommandRule(
        makers=[Role.ADMIN], checkers=[Role.ADMIN], threshold=0)})


class Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    version: str = Field(min_length=1, max_length=40)
    threshold: float = Field(ge=0, le=100, description="score >= threshold -> continue")
    minimum_months: int = Field(ge=0, le=12)
    indicators: dict[IndicatorName, IndicatorRule]
    four_eyes: FourEyesRules = Field(default_factory=default_four_eyes, description=(
        "which commands need a maker and a different checker (docs/four-eyes.md): the "
        "year-end close, `close_year`"))

    @model_validator(mode="after")
    def _complete(self) -> Policy:
        missing = [name for name in INDICATORS if name not in self.indicators]
        if missing:
            raise ValueError(f"indicators missing from the policy: {', '.join(missing)}")
        total = sum(rule.weight for rule in self.indicators.values())
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"indicator weights must add up to 1, not {total:g}")
        return self


def rule_book(shipped: Path | None = RULES_DIR) -> RuleBook[Policy]:
    """The evaluation policy per programme year (one per app: its cache belongs to its
    database)."""
    return RuleBook("evaluation", Policy, shipped)


def override_policy() -> Policy | None:
    """The policy named by EVALUATION_POLICY_FILE, deciding every year; None when unset."""
    return load_policy() if os.environ.get(POLICY_FILE_ENV) else None


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy from `path`, else from EVALUATION_POLICY_FILE, else the packaged current
    one (2023's).
    Raises PolicyError naming the file and what is wrong."""
    path = Path(path or os.environ.get(POLICY_FILE_ENV) or DEFAULT_POLICY_FILE)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"cannot read the evaluation policy {path}: {exc}") from exc
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(f"invalid evaluation policy {path}: {exc}") from exc
