"""One paging convention for every listing of the four services (issue 17, "readable results").

A listing takes `limit` (1..PAGE_MAX, default PAGE_DEFAULT) and `offset` (0..OFFSET_MAX) and
answers `{"items": [...], "total": n, "limit": limit, "offset": offset}`. A client walks the
pages with `offset += limit` until `offset >= total`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel

PAGE_DEFAULT = 100
PAGE_MAX = 1000
OFFSET_MAX = 1_000_000  # beyond any real listing; larger values would overflow a bigint OFFSET


@dataclass(frozen=True, slots=True)
class PageParams:
    limit: int = PAGE_DEFAULT
    offset: int = 0

    def window(self, args: list[Any]) -> str:
        """`LIMIT $n OFFSET $m` for a query whose positional arguments are `args` (extended)."""
        args.extend([self.limit, self.offset])
        return f"LIMIT ${len(args) - 1} OFFSET ${len(args)}"

    def out(self, items: list[Any], total: int) -> dict[str, Any]:
        return {"items": items, "total": total, "limit": self.limit, "offset": self.offset}


# a coroutine: FastAPI runs a plain function dependency in its thread pool, a hop per request
async def page_params(
        limit: Annotated[int, Query(ge=1, le=PAGE_MAX, description="items per page")] = PAGE_DEFAULT,
        offset: Annotated[int, Query(ge=0, le=OFFSET_MAX, description="items to skip")] = 0,
) -> PageParams:
    return PageParams(limit, offset)


PageQuery = Annotated[PageParams, Depends(page_params)]

T = TypeVar("T")


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int
