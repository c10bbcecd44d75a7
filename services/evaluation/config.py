"""The evaluation policy: weights, caps, threshold and minimum service, read from a versioned data
file (`config/policy.toml`, or the file named by EVALUATION_POLICY_FILE)."""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

POLICY_FILE_ENV = "EVALUATION_POLICY_FILE"
DEFAULT_POLICY_FILE = Path(__file__).parent / "config" / "policy.toml"

IndicatorName = Literal["reporting_compliance", "revenue_growth", "new_workers",
                        "lpj_completion", "groups_active"]
INDICATORS: tuple[IndicatorName, ...] = get_args(IndicatorName)


class PolicyError(ValueError):
    """The policy file is missing, unreadable or breaks a rule; the service refuses to start."""


class IndicatorRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    weight: float = Field(ge=0, le=1)
    cap: float = Field(gt=0, description="the value that earns full marks")


class Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    version: str = Field(min_length=1, max_length=40)
    threshold: float = Field(ge=0, le=100, description="score >= threshold -> continue")
    minimum_months: int = Field(ge=0, le=12)
    indicators: dict[IndicatorName, IndicatorRule]

    @model_validator(mode="after")
    def _complete(self) -> Policy:
        missing = [name for name in INDICATORS if name not in self.indicators]
        if missing:
            raise ValueError(f"indicators missing from the policy: {', '.join(missing)}")
        total = sum(rule.weight for rule in self.indicators.values())
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"indicator weights must add up to 1, not {total:g}")
        return self


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy from `path`, else from EVALUATION_POLICY_FILE, else the packaged default.
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
