"""Topic `tkm.evaluation.v1`; the message key is the stream id: `tks-<id>` for TksEvaluated,
`evaluation-<year>` for the cycle events."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.common import Id, ProvinceCode, RegencyCode, Year
from shared.envelope import Event, register
from shared.topics import EVALUATION

Decision = Literal["continue", "replace"]


class _Published(Event):
    topic = EVALUATION


class Indicator(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")
    name: str
    value: float
    weight: float
    contribution: float


@register
class EvaluationOpened(_Published):
    event_type = "EvaluationOpened"
    year: Year
    policy_version: str


@register
class TksEvaluated(_Published):
    event_type = "TksEvaluated"
    year: Year
    tks_id: Id
    province_code: ProvinceCode
    regency_code: RegencyCode
    score: float = Field(ge=0, le=100)
    decision: Decision
    indicators: tuple[Indicator, ...]
    policy_version: str


@register
class EvaluationClosed(_Published):
    event_type = "EvaluationClosed"
    year: Year
    evaluated: int = Field(ge=0)
    continued: int = Field(ge=0)
    replaced: int = Field(ge=0)
    policy_version: str
