"""What part of the country a caller may read: one fail-closed helper for every endpoint.

A provincial officer reads its own province only, whatever it asked for (asking for another
province, or a regency in another province, is a 403); the ministry, agencies and TKS read the
province they ask for (None: all). A role this module does not know reads nothing."""

from __future__ import annotations

from shared.auth import Actor, Role
from shared.errors import ForbiddenError

UNSCOPED = (Role.ADMIN, Role.AGENCY, Role.TKS)


def province_scope(actor: Actor, province_code: str | None = None,
                   regency_code: str | None = None) -> str | None:
    """The province code a read is limited to (None: every province). Raises ForbiddenError
    when the caller asks for a province or regency outside its own."""
    if actor.role is Role.PROVINCE:
        own = actor.province_code
        if not own:  # decode_token refuses such tokens; never read everything because of one
            raise ForbiddenError("a provincial officer without a province reads nothing",
                                 field="Authorization")
        if province_code is not None and province_code != own:
            raise ForbiddenError(f"a provincial officer of {own} cannot read province "
                                 f"{province_code}", field="province_code")
        if regency_code is not None and regency_code[:2] != own:
            raise ForbiddenError(f"a provincial officer of {own} cannot read regency "
                                 f"{regency_code}", field="regency_code")
        return own
    if actor.role in UNSCOPED:
        return province_code
    raise ForbiddenError(f"role {actor.role} has no read scope", field="Authorization")
