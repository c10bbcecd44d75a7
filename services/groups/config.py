"""Programme configuration of the groups service, loaded from a TOML data file."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.config import load_toml

DEFAULT_FILE = Path(__file__).parent / "config" / "programme.toml"
CONFIG_ENV = "GROUPS_CONFIG_FILE"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemberRules(_Section):
    min_count: int = Field(ge=1)
    max_count: int = Field(ge=1)
    min_age: int = Field(ge=0)
    max_age: int = Field(ge=0)


class FundingRules(_Section):
    ceiling_per_group: int = Field(gt=0)
    tools_percent: int = Field(ge=0, le=100)
    materials_percent: int = Field(ge=0, le=100)
    max_tranches: int = Field(ge=1)


class LpjRules(_Section):
    due_days: int = Field(ge=1)


class AdvancementRules(_Section):
    requires_accepted_lpj: bool
    requires_bimtek: bool
    requires_product_evidence: bool


class BulkLimits(_Section):
    concurrency: int = Field(ge=1, le=32)
    max_items: int = Field(ge=1)
    max_csv_rows: int = Field(ge=1)


class BusinessType(_Section):
    code: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")
    name: str = Field(min_length=1)


class Expo(_Section):
    """An expo groups show their products at; its code is what GroupShowcasedAtExpo publishes."""

    code: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")
    name: str = Field(min_length=1)
    regency_code: str | None = Field(None, pattern=r"^\d{4}$",
                                     description="where it is held, when always the same place")


OTHER_EXPO = Expo(code="other", name="Lainnya (tidak ada di katalog)")


class ProgrammeConfig(_Section):
    stages: tuple[str, ...]
    members: MemberRules
    funding: FundingRules
    lpj: LpjRules
    advancement: AdvancementRules
    bulk: BulkLimits
    business_types: tuple[BusinessType, ...] = Field(min_length=1)
    expos: tuple[Expo, ...] = (OTHER_EXPO,)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # stage names travel in GroupRegistered/GroupAdvanced, whose contract fixes them
        if not set(self.stages) <= {"pemula", "lanjutan", "pengembangan"} or not self.stages:
            raise ValueError("stages must be taken from pemula, lanjutan, pengembangan")
        if self.members.min_count > self.members.max_count:
            raise ValueError("members.min_count exceeds members.max_count")
        if self.members.min_age > self.members.max_age:
            raise ValueError("members.min_age exceeds members.max_age")
        if self.funding.tools_percent + self.funding.materials_percent != 100:
            raise ValueError("funding tools_percent + materials_percent must be 100")
        codes = [b.code for b in self.business_types]
        if len(codes) != len(set(codes)):
            raise ValueError("business type codes must be unique")
        expo_codes = [e.code for e in self.expos]
        if len(expo_codes) != len(set(expo_codes)):
            raise ValueError("expo codes must be unique")
        return self

    def business_type_codes(self) -> frozenset[str]:
        return frozenset(b.code for b in self.business_types)

    def expo(self, code: str) -> Expo | None:
        return next((e for e in self.expos if e.code == code), None)

    def next_stage(self, stage: str) -> str | None:
        i = self.stages.index(stage)
        return self.stages[i + 1] if i + 1 < len(self.stages) else None


def load_config(path: str | Path | None = None) -> ProgrammeConfig:
    return load_toml(ProgrammeConfig, DEFAULT_FILE, CONFIG_ENV, path)
