"""The evaluation cycle of one year (stream `evaluation-<year>`) and the TKS outcome streams
(`tks-<id>`, so outcomes are published keyed by TKS). Pure: no I/O."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.evaluation.config import Policy
from services.evaluation.scoring import ExclusionReason, YearOutcome
from shared.aggregate import Aggregate
from shared.contracts.common import Id, Year
from shared.contracts.evaluation import (
    EvaluationClosed,
    EvaluationOpened,
    Indicator,
    TksEvaluated,
)
from shared.envelope import Event, register
from shared.errors import ConflictError, RuleViolationError


def cycle_stream(year: int) -> str:
    return f"evaluation-{year}"


def tks_stream(tks_id: str) -> str:
    return f"tks-{tks_id}"


@register
class PolicyAdopted(Event):
    """The full policy a cycle uses: the year's at opening, and again at closing when the year's
    rules changed meanwhile (the contract only names its version)."""

    event_type = "evaluation.PolicyAdopted"
    year: Year
    policy: Policy


class Exclusion(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")
    tks_id: Id
    reason: ExclusionReason
    months_served: int = Field(ge=0, le=12)
    province_code: str | None = None
    regency_code: str | None = None


@register
class TksNotEvaluated(Event):
    """Who was left out of a closed cycle and why, so the answer survives a rebuild."""

    event_type = "evaluation.TksNotEvaluated"
    year: Year
    exclusions: tuple[Exclusion, ...]


class EvaluationCycle(Aggregate):
    def __init__(self, stream_id: str):
        super().__init__(stream_id)
        self.status: Literal["new", "open", "closed"] = "new"
        self.year: int | None = None
        self.policy: Policy | None = None

    def apply(self, event: Event) -> None:
        match event:
            case EvaluationOpened():
                self.status, self.year = "open", event.year
            case PolicyAdopted():
                self.policy = event.policy
            case EvaluationClosed():
                self.status = "closed"
            case TksNotEvaluated():
                pass

    def open(self, year: int, policy: Policy) -> None:
        if self.status != "new":
            raise ConflictError(f"the {year} evaluation is already {self.status}", field="year",
                                current_status=self.status)
        self.record(EvaluationOpened(year=year, policy_version=policy.version))
        self.record(PolicyAdopted(year=year, policy=policy))

    def adopt(self, policy: Policy) -> None:
        """The year's policy as in force when it closes: recorded again when it changed since
        the opening (a new version adopted for the year meanwhile)."""
        if self.status != "open" or self.year is None:
            raise RuleViolationError("an evaluation must be open to adopt a policy", field="year")
        if policy != self.policy:
            self.record(PolicyAdopted(year=self.year, policy=policy))

    def close(self, outcome: YearOutcome) -> list[TksEvaluated]:
        """Records the cycle's closing; returns one outcome event per evaluated TKS, to be saved
        on that TKS's stream."""
        if self.status == "closed":
            raise ConflictError(f"the {self.year} evaluation is already closed", field="year")
        if self.status != "open" or self.policy is None or self.year is None:
            raise RuleViolationError("an evaluation must be opened before it is closed",
                                     field="year")
        year, policy = self.year, self.policy
        evaluated = [
            TksEvaluated(year=year, tks_id=s.facts.tks_id, province_code=s.facts.province_code,
                         regency_code=s.facts.regency_code, score=s.score, decision=s.decision,
                         indicators=tuple(Indicator(name=i.name, value=i.value, weight=i.weight,
                                                    contribution=i.contribution)
                                          for i in s.indicators),
                         policy_version=policy.version)
            for s in outcome.evaluated]
        if outcome.excluded:
            self.record(TksNotEvaluated(year=year, exclusions=tuple(
                Exclusion(tks_id=f.tks_id, reason=reason, months_served=f.months_served,
                          province_code=f.province_code, regency_code=f.regency_code)
                for f, reason in outcome.excluded)))
        continued = sum(1 for e in evaluated if e.decision == "continue")
        self.record(EvaluationClosed(year=year, evaluated=len(evaluated), continued=continued,
                                     replaced=len(evaluated) - continued,
                                     policy_version=policy.version))
        return evaluated


class TksEvaluations(Aggregate):
    """A TKS's published outcomes. The cycle decides them; this stream only carries them, so it
    is resumed at its version rather than replayed (see handlers.close_evaluation)."""

    def __init__(self, stream_id: str):
        super().__init__(stream_id)

    def apply(self, event: Event) -> None:
        if not isinstance(event, TksEvaluated):
            raise TypeError(f"a TKS evaluation stream cannot hold {event.event_type}")

    def add(self, outcome: TksEvaluated) -> None:
        self.record(outcome)

    @classmethod
    def at_version(cls, stream_id: str, version: int) -> TksEvaluations:
        stream = cls(stream_id)
        stream.version = version
        return stream
