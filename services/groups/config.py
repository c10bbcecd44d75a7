"""Configuration of the groups service.

Two kinds, kept apart (issue 17, item 1):
- the programme rules of a year (`GroupYearRules`: stages, members' count and ages and the day
  ages are measured on, funding ceiling, split and tranches, LPJ due days, advancement), data
  adopted per year through `PUT /rules/{year}` (shared.rules); the ministry's guidelines of
  2021 and 2023 ship in `config/rules/<year>.toml`; its `four_eyes` section says which money
  commands need a maker and a different checker (shared.approvals, docs/four-eyes.md);
- the operational configuration (`ProgrammeConfig`: bulk limits, the catalogues of business
  types and expos), one TOML file (`config/programme.toml`, or GROUPS_CONFIG_FILE).
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.approvals import CommandRule, FourEyesRules
from shared.auth import Role
from shared.config import load_toml
from shared.rules import RuleBook

DEFAULT_FILE = Path(__file__).parent / "config" / "programme.toml"
CONFIG_ENV = "GROUPS_CONFIG_FILE"
RULES_DIR = Path(__file__).parent / "config" / "rules"
STAGE_NAMES = ("pemula", "lanjutan", "pengembangan")
_MONTH_DAY = re.compile(r"^(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemberRules(_Section):
    min_count: int = Field(ge=1, le=200)
    max_count: int = Field(ge=1, le=200)
    min_age: int = Field(ge=0, le=150)
    max_age: int = Field(ge=0, le=150)
    age_reference: str = Field(
        "registration_date",
        description="the day ages are measured on: registration_date (the group's registration "
                    "date, or the day a member joins), year_start (1 January of the group's "
                    "year), or a month-day MM-DD of the group's year")

    @model_validator(mode="after")
    def _reference(self) -> Self:
        if self.age_reference not in ("registration_date", "year_start"):
            match = _MONTH_DAY.fullmatch(self.age_reference)
            if match is None:
                raise ValueError("age_reference must be registration_date, year_start or MM-DD")
            date(2000, int(match.group(1)), int(match.group(2)))  # 2000: 02-29 is a day
        return self

    def age_day(self, year: int, registered_on: date) -> date:
        """The day a member's age is measured on, for a group of `year` registered (or a member
        joining) on `registered_on`."""
        if self.age_reference == "registration_date":
            return registered_on
        if self.age_reference == "year_start":
            return date(year, 1, 1)
        month, day = int(self.age_reference[:2]), int(self.age_reference[3:])
        if (month, day) == (2, 29) and not (year % 4 == 0 and (year % 100 or year % 400 == 0)):
            day = 28
        return date(year, month, day)


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


# the command types of the groups service that four eyes may apply to (shared.approvals)
FUND, CHANGE_TRANCHE, ACCEPT_LPJ = "fund", "change_tranche", "accept_lpj"
FOUR_EYES_COMMANDS = (FUND, CHANGE_TRANCHE, ACCEPT_LPJ)


def default_four_eyes() -> FourEyesRules:
    """Four eyes on every money command of the groups service, whatever the amount: the rules
    of a version adopted before the section existed (read with this default) never let one
    person fund a group or accept an LPJ alone."""
    by_ministry = CommandRule(makers=[Role.ADMIN, Role.PROVINCE], checkers=[Role.ADMIN])
    return FourEyesRules(commands={
        FUND: by_ministry, CHANGE_TRANCHE: by_ministry,
        ACCEPT_LPJ: CommandRule(makers=[Role.PROVINCE, Role.ADMIN],
                                checkers=[Role.PROVINCE, Role.ADMIN])})


class GroupYearRules(_Section):
    """The programme rules of one year that the groups service enforces."""

    stages: tuple[str, ...]
    members: MemberRules
    funding: FundingRules
    lpj: LpjRules
    advancement: AdvancementRules
    four_eyes: FourEyesRules = Field(default_factory=default_four_eyes, description=(
        "which money commands (fund, change_tranche, accept_lpj) need a maker and a different "
        "checker, who may be either, from which amount, and when a request expires"))

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # stage names travel in GroupRegistered/GroupAdvanced, whose contract fixes them
        if not set(self.stages) <= set(STAGE_NAMES) or not self.stages \
                or len(set(self.stages)) != len(self.stages):
            raise ValueError("stages must be taken from pemula, lanjutan, pengembangan, "
                             "each once")
        if self.members.min_count > self.members.max_count:
            raise ValueError("members.min_count exceeds members.max_count")
        if self.members.min_age > self.members.max_age:
            raise ValueError("members.min_age exceeds members.max_age")
        if self.funding.tools_percent + self.funding.materials_percent != 100:
            raise ValueError("funding tools_percent + materials_percent must be 100")
        unknown = set(self.four_eyes.commands) - set(FOUR_EYES_COMMANDS)
        if unknown:
            raise ValueError(f"four_eyes.commands: unknown command {', '.join(sorted(unknown))}; "
                             f"groups knows {', '.join(FOUR_EYES_COMMANDS)}")
        return self

    def next_stage(self, stage: str) -> str | None:
        if stage not in self.stages:
            return None
        i = self.stages.index(stage)
        return self.stages[i + 1] if i + 1 < len(self.stages) else None


class ProgrammeConfig(_Section):
    """Operational configuration, the same for every year."""

    bulk: BulkLimits
    business_types: tuple[BusinessType, ...] = Field(min_length=1)
    expos: tuple[Expo, ...] = (OTHER_EXPO,)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
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


def rule_book(shipped: Path | None = RULES_DIR) -> RuleBook[GroupYearRules]:
    """The groups service's rules per year (one per app: its cache belongs to its database)."""
    return RuleBook("groups", GroupYearRules, shipped)


def load_year_rules(path: str | Path) -> GroupYearRules:
    """One year's rules from a TOML file (as shipped in config/rules)."""
    return load_toml(GroupYearRules, Path(path), "", path)


def load_config(path: str | Path | None = None) -> ProgrammeConfig:
    return load_toml(ProgrammeConfig, DEFAULT_FILE, CONFIG_ENV, path)
