"""Who may sign in to the console, and their sessions.

A user has one role and its scope (shared.auth's roles: the ministry, a provincial officer of one
province, a TKS, an agency viewer). Passwords are kept only as argon2id hashes (argon2-cffi's
defaults, rehashed when those change). A session is a random token in an HttpOnly, SameSite=Strict
cookie (Secure unless turned off for a plain-http test host), known to the database only by its
SHA-256; it carries its own CSRF token, which every state-changing request must send back."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from shared.auth import PROVINCE_CODE, Role

_hasher = PasswordHasher()
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}$")
MIN_PASSWORD = 10
# verifying against this keeps an unknown e-mail as slow as a wrong password
_DUMMY_HASH = _hasher.hash("not-a-password-of-anyone")


class UserError(ValueError):
    """A user that cannot be made as asked (the message says why)."""


@dataclass(frozen=True)
class User:
    email: str
    display_name: str
    role: Role
    province_code: str | None = None
    tks_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str


def check_user(email: str, role: Role | str, province_code: str | None,
               tks_id: str | None, password: str) -> Role:
    role = Role(role)
    if not EMAIL.match(email):
        raise UserError("the e-mail address is not valid")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"a password has at least {MIN_PASSWORD} characters")
    if role is Role.PROVINCE and not (province_code and PROVINCE_CODE.match(province_code)):
        raise UserError("a provincial officer needs --province (a two-digit code)")
    if role is Role.TKS and not tks_id:
        raise UserError("a TKS user needs --tks-id")
    if role is not Role.PROVINCE and province_code:
        raise UserError("only a provincial officer has a province")
    if role is not Role.TKS and tks_id:
        raise UserError("only a TKS user has a TKS id")
    return role


async def add_user(conn: asyncpg.Connection | asyncpg.Pool, email: str, password: str,
                   role: Role | str, *, display_name: str | None = None,
                   province_code: str | None = None, tks_id: str | None = None,
                   replace: bool = False) -> User:
    """Create (or with `replace`, overwrite) a user. Raises UserError."""
    email = email.strip().lower()
    role = check_user(email, role, province_code, tks_id, password)
    name = (display_name or email.split("@")[0]).strip()[:120]
    row = await conn.fetchrow(
        "INSERT INTO console_users (email, display_name, role, province_code, tks_id, "
        "password_hash) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (email) DO "
        + ("UPDATE SET display_name = $2, role = $3, province_code = $4, tks_id = $5, "
           "password_hash = $6, active = true " if replace else "NOTHING ") + "RETURNING email",
        email, name, role.value, province_code, tks_id, _hasher.hash(password))
    if row is None:
        raise UserError(f"{email} already exists (use --replace to overwrite it)")
    if replace:  # a changed password or role ends the user's open sessions
        await conn.execute("DELETE FROM console_sessions WHERE email = $1", email)
    return User(email, name, role, province_code, tks_id)


async def authenticate(pool: asyncpg.Pool, email: str, password: str) -> User | None:
    email = email.strip().lower()
    row = await pool.fetchrow("SELECT * FROM console_users WHERE email = $1 AND active", email)
    try:
        _hasher.verify(row["password_hash"] if row else _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    if _hasher.check_needs_rehash(row["password_hash"]):
        await pool.execute("UPDATE console_users SET password_hash = $2 WHERE email = $1",
                           email, _hasher.hash(password))
    return _user(row)


def _user(row: asyncpg.Record) -> User:
    return User(row["email"], row["display_name"], Role(row["role"]), row["province_code"],
                row["tks_id"])


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def open_session(pool: asyncpg.Pool, user: User, hours: float) -> str:
    """A new session for `user`; returns the cookie's value (kept nowhere in clear)."""
    token = secrets.token_urlsafe(32)
    await pool.execute(
        "INSERT INTO console_sessions (token_hash, email, csrf_token, expires_at) "
        "VALUES ($1, $2, $3, $4)", _digest(token), user.email, secrets.token_urlsafe(32),
        datetime.now(UTC) + timedelta(hours=hours))
    await pool.execute("DELETE FROM console_sessions WHERE expires_at < now()")
    return token


async def find_session(pool: asyncpg.Pool, token: str | None) -> Session | None:
    if not token or len(token) > 100:
        return None
    row = await pool.fetchrow(
        "SELECT u.*, s.csrf_token FROM console_sessions s JOIN console_users u USING (email) "
        "WHERE s.token_hash = $1 AND s.expires_at > now() AND u.active", _digest(token))
    return Session(_user(row), row["csrf_token"]) if row else None


async def close_session(pool: asyncpg.Pool, token: str | None) -> None:
    if token:
        await pool.execute("DELETE FROM console_sessions WHERE token_hash = $1", _digest(token))


def same_token(expected: str | None, given: str | None) -> bool:
    return bool(expected and given) and hmac.compare_digest(expected, given)
