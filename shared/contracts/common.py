"""Field types shared by the contract modules."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

ProvinceCode = Annotated[str, StringConstraints(pattern=r"^\d{2}$")]
RegencyCode = Annotated[str, StringConstraints(pattern=r"^\d{4}$")]
Period = Annotated[str, StringConstraints(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]  # YYYY-MM
# bounded so a typo cannot overflow a bigint column: no single figure reaches Rp 10^15
Rupiah = Annotated[int, Field(ge=0, le=10**15, description="whole rupiah")]
Year = Annotated[int, Field(ge=2000, le=2100)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=64)]
