"""Programme configuration: eligibility rules, screening reasons, limits. Data, not code."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.config import load_toml

DEFAULT_FILE = Path(__file__).parent / "config" / "recruitment.toml"
ENV_VAR = "RECRUITMENT_CONFIG_FILE"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Eligibility(_Strict):
    education_levels: tuple[str, ...] = Field(min_length=1)
    minimum_education: str
    min_age: int = Field(ge=0)
    max_age: int = Field(ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Eligibility:
        if self.minimum_education not in self.education_levels:
            raise ValueError(f"minimum_education {self.minimum_education!r} is not a level")
        if self.min_age > self.max_age:
            raise ValueError("min_age is above max_age")
        return self

    def rank(self, education: str) -> int:
        return self.education_levels.index(education)


class Screening(_Strict):
    rejection_reasons: tuple[str, ...] = Field(min_length=1)


class Contact(_Strict):
    phone_region: str = Field(pattern=r"^[A-Z]{2}$")
    # contact fields an applicant must give; the others are optional (still checked when given)
    required: tuple[Literal["phone", "email"], ...] = ()


class Limits(_Strict):
    batch_max_items: int = Field(ge=1)


class RecruitmentConfig(_Strict):
    eligibility: Eligibility
    screening: Screening
    contact: Contact
    limits: Limits


def load_config(path: str | Path | None = None) -> RecruitmentConfig:
    return load_toml(RecruitmentConfig, DEFAULT_FILE, ENV_VAR, path)
