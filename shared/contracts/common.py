"""Field types shared by the contract modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from shared.envelope import upcaster

ProvinceCode = Annotated[str, StringConstraints(pattern=r"^\d{2}$")]
RegencyCode = Annotated[str, StringConstraints(pattern=r"^\d{4}$")]
Period = Annotated[str, StringConstraints(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]  # YYYY-MM
# bounded so a typo cannot overflow a bigint column: no single figure reaches Rp 10^15
Rupiah = Annotated[int, Field(ge=0, le=10**15, description="whole rupiah")]
Year = Annotated[int, Field(ge=2000, le=2100)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=64)]
# a code from a catalogue the producing service keeps in its configuration (never typed text)
CatalogueCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
OTHER = "other"  # the catalogue code old free text is upcast to: the text itself never travels

Payload = dict[str, Any]
Upcast = Callable[[Payload], Payload]
UPCASTS: set[tuple[str, int]] = set()  # (event_type, from_version): what the contract gate checks


def contract_upcaster(event_type: str, from_version: int) -> Callable[[Upcast], Upcast]:
    """`shared.envelope.upcaster` for published events, recorded so the contract gate
    (scripts/contract_docs.py) can check that every new schema_version has one."""

    def wrap(fn: Upcast) -> Upcast:
        upcaster(event_type, from_version)(fn)
        UPCASTS.add((event_type, from_version))
        return fn

    return wrap
