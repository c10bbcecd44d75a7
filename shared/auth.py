"""Who may call what: signed bearer tokens (HS256) carrying a role and its scope.

Roles: the ministry administrator (everything), a provincial officer (one province), a TKS
(itself only), an agency (read-only) and an auditor (Inspektorat, BPK: reads the audit trail of
every province, `shared.audit`, and nothing else; no command accepts it). The caller becomes the
`actor` of the events its command writes.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.envelope import utcnow
from shared.errors import ForbiddenError, UnauthorizedError

ISSUER = "kemnaker-tkm"
# no token lives longer: a leaked one is useless by tomorrow (TKM_TOKEN_MAX_HOURS lowers it)
MAX_TOKEN_LIFETIME = timedelta(hours=24)
PROVINCE_CODE = re.compile(r"^\d{2}$")


class Role(StrEnum):
    ADMIN = "ministry_admin"
    PROVINCE = "provincial_officer"
    TKS = "tks"
    AGENCY = "agency"
    AUDITOR = "auditor"


def pseudonym(key: str, subject: str) -> str:
    """The stable stand-in for a caller in published events: token subjects may be e-mail
    addresses or names, which must not travel on a topic. Whoever holds the signing key can
    recompute it for a known subject (`tkm actor-id`)."""
    return hmac.new(key.encode(), subject.encode(), hashlib.sha256).hexdigest()[:20]


@dataclass(frozen=True)
class Actor:
    subject: str
    role: Role
    province_code: str | None = None
    tks_id: str | None = None
    alias: str | None = None  # pseudonym(key, subject), set when the token is decoded

    @property
    def id(self) -> str:
        """What events record as their actor: the role and the pseudonym, never the subject."""
        return f"{self.role.value}:{self.alias or pseudonym('', self.subject)}"

    def ensure_province(self, province_code: str) -> None:
        """A provincial officer acts only in its own province. Raises ForbiddenError."""
        if self.role is Role.PROVINCE and self.province_code != province_code:
            raise ForbiddenError(f"a provincial officer of {self.province_code} cannot act in "
                                 f"province {province_code}", field="province_code")

    def ensure_tks(self, tks_id: str) -> None:
        """A TKS acts only as itself. Raises ForbiddenError."""
        if self.role is Role.TKS and self.tks_id != tks_id:
            raise ForbiddenError("a TKS can act only for itself", field="tks_id")


def mint_token(key: str, subject: str, role: Role | str, *, province_code: str | None = None,
               tks_id: str | None = None, ttl: timedelta = timedelta(hours=12),
               max_lifetime: timedelta = MAX_TOKEN_LIFETIME) -> str:
    """A signed token. Raises ValueError for a scoped role without its scope or a `ttl`
    longer than `max_lifetime`."""
    role = Role(role)
    if role is Role.PROVINCE and not (province_code and PROVINCE_CODE.match(province_code)):
        raise ValueError("a provincial officer's token needs a two-digit province code")
    if role is Role.TKS and not tks_id:
        raise ValueError("a TKS token needs a tks id")
    if ttl > max_lifetime:
        raise ValueError(f"a token lives at most {max_lifetime}; asked for {ttl}")
    now = utcnow()
    claims = {"iss": ISSUER, "sub": subject, "role": role.value, "iat": now, "exp": now + ttl}
    if province_code:
        claims["province"] = province_code
    if tks_id:
        claims["tks_id"] = tks_id
    return jwt.encode(claims, key, algorithm="HS256")


def decode_token(key: str, token: str, *,
                 max_lifetime: timedelta = MAX_TOKEN_LIFETIME) -> Actor:
    """The caller a token names. Raises UnauthorizedError for a bad signature, an expired
    token, one issued in the future or living longer than `max_lifetime`, missing claims, and
    a scoped role without its scope (a provincial officer without a province, a TKS without
    its id): such a token would otherwise read everything.

    What never changes for a token (its signature, issuer, claims and scope) is checked once
    and remembered (`_verified`); what depends on the clock is checked at every call."""
    try:
        actor, issued, expires, not_before = _verified(key, token)
        now = utcnow().timestamp()
        if expires <= now:
            raise jwt.ExpiredSignatureError("Signature has expired")
        if issued > now:
            raise jwt.ImmatureSignatureError("The token is not yet valid (iat)")
        if not_before is not None and not_before > now:
            raise jwt.ImmatureSignatureError("The token is not yet valid (nbf)")
        limit = max_lifetime.total_seconds()
        if expires - issued > limit or expires - now > limit:
            raise ValueError(f"the token lives longer than the {max_lifetime} allowed")
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError, OSError) as exc:
        raise UnauthorizedError(f"invalid bearer token: {exc}", field="Authorization") from exc
    return actor


@functools.lru_cache(maxsize=4096)
def _verified(key: str, token: str) -> tuple[Actor, float, float, float | None]:
    """The actor a token names, when it was issued, expires and is valid from (epoch seconds;
    the last only if the token says), from the checks whose answer never changes for the same
    key and token: the HMAC signature, the issuer, the required claims and the role's scope. Every request carries its token, and
    verifying it (PyJWT, the HMAC and the pseudonym) was about a tenth of the groups service's
    CPU per command (profile of `make bench`, issue 16); a client sends the same token for
    hours. A token that fails raises and is not remembered."""
    claims = jwt.decode(token, key, algorithms=["HS256"], issuer=ISSUER,
                        options={"require": ["exp", "iat", "sub", "role", "iss"],
                                 "verify_exp": False, "verify_iat": False, "verify_nbf": False})
    role = Role(claims["role"])
    province, tks_id = claims.get("province"), claims.get("tks_id")
    if not isinstance(claims["sub"], str) or not claims["sub"]:
        raise ValueError("the subject must be a non-empty string")
    if role is Role.PROVINCE and not (isinstance(province, str)
                                      and PROVINCE_CODE.match(province)):
        raise ValueError("a provincial officer's token names no province")
    if role is Role.TKS and not (isinstance(tks_id, str) and tks_id):
        raise ValueError("a TKS token names no tks id")
    # numbers only (a bool is an int to Python), and within the datetime range
    issued = datetime.fromtimestamp(_number(claims["iat"]), UTC).timestamp()
    expires = datetime.fromtimestamp(_number(claims["exp"]), UTC).timestamp()
    not_before = _number(claims["nbf"]) if "nbf" in claims else None
    return (Actor(claims["sub"], role, province if role is Role.PROVINCE else None,
                  tks_id if role is Role.TKS else None, pseudonym(key, claims["sub"])),
            issued, expires, not_before)


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"a time claim must be a number of seconds, not {value!r}")
    return float(value)


_bearer = HTTPBearer(auto_error=False, description="token from `tkm token --role ...`")


def require(*roles: Role):
    """FastAPI dependency: the authenticated caller, who must hold one of `roles`."""

    async def dependency(request: Request,
                         creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Actor:
        if creds is None:
            raise UnauthorizedError("missing bearer token", field="Authorization")
        settings = getattr(request.app.state, "settings", None)
        hours = getattr(settings, "token_max_hours", None)
        actor = decode_token(request.app.state.signing_key, creds.credentials,
                             max_lifetime=timedelta(hours=hours) if hours else MAX_TOKEN_LIFETIME)
        # the access log names the caller: decoded once per request (shared.idempotency._actor)
        request.scope["tkm.actor"] = actor.id
        if actor.role not in roles:
            raise ForbiddenError(f"role {actor.role.value} may not call this; allowed: "
                                 f"{', '.join(r.value for r in roles)}", field="Authorization")
        return actor

    return dependency


# the programme's own roles: the auditor is not among them (it reads the audit trail only)
ANY_ROLE = (Role.ADMIN, Role.PROVINCE, Role.TKS, Role.AGENCY)
