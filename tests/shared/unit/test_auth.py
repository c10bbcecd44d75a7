import time
from datetime import timedelta

import jwt
import pytest

from shared.auth import ISSUER, MAX_TOKEN_LIFETIME, Actor, Role, decode_token, mint_token, pseudonym
from shared.errors import ForbiddenError, UnauthorizedError

KEY = "unit-test-signing-key-of-at-least-32-bytes"


def test_a_token_carries_role_and_scope():
    actor = decode_token(KEY, mint_token(KEY, "bandung-office", Role.PROVINCE, province_code="32"))
    assert (actor.subject, actor.role, actor.province_code) == ("bandung-office", Role.PROVINCE,
                                                                "32")


def test_the_events_actor_is_a_pseudonym_never_the_subject():
    subject = "siti.rahma@kemnaker.go.id"
    actor = decode_token(KEY, mint_token(KEY, subject, Role.ADMIN))
    assert actor.id == f"ministry_admin:{pseudonym(KEY, subject)}"
    assert "siti" not in actor.id and "@" not in actor.id
    again = decode_token(KEY, mint_token(KEY, subject, Role.ADMIN))
    assert again.id == actor.id, "the same caller keeps the same pseudonym"
    other_key = "another-signing-key-of-at-least-32-bytes"
    assert decode_token(other_key, mint_token(other_key, subject, Role.ADMIN)).id != actor.id


def test_a_token_signed_with_another_key_is_refused():
    with pytest.raises(UnauthorizedError, match="invalid bearer token"):
        decode_token(KEY, mint_token("another-signing-key-of-at-least-32-bytes", "x", Role.ADMIN))


def test_an_expired_token_is_refused():
    with pytest.raises(UnauthorizedError, match="expired"):
        decode_token(KEY, mint_token(KEY, "x", Role.ADMIN, ttl=timedelta(seconds=-1)))


def test_scopes_are_enforced():
    officer = Actor("o", Role.PROVINCE, province_code="32")
    officer.ensure_province("32")
    with pytest.raises(ForbiddenError):
        officer.ensure_province("33")
    Actor("a", Role.ADMIN).ensure_province("33")
    tks = Actor("t", Role.TKS, tks_id="tks-1")
    tks.ensure_tks("tks-1")
    with pytest.raises(ForbiddenError):
        tks.ensure_tks("tks-2")


def test_scoped_roles_need_their_scope():
    with pytest.raises(ValueError):
        mint_token(KEY, "o", Role.PROVINCE)
    with pytest.raises(ValueError):
        mint_token(KEY, "t", Role.TKS)


def forged(claims: dict) -> str:
    """A correctly signed token with exactly these claims (as a careless minting tool makes)."""
    now = int(time.time())
    return jwt.encode({"iss": ISSUER, "sub": "s", "iat": now, "exp": now + 3600, **claims}, KEY,
                      algorithm="HS256")


@pytest.mark.parametrize("claims", [
    {"role": "provincial_officer"},
    {"role": "provincial_officer", "province": ""},
    {"role": "provincial_officer", "province": "3"},
    {"role": "provincial_officer", "province": ["32"]},
    {"role": "tks"},
    {"role": "tks", "tks_id": ""},
    {"role": "root"},
])
def test_a_scoped_role_without_its_scope_is_refused_at_decode(claims):
    with pytest.raises(UnauthorizedError, match="invalid bearer token"):
        decode_token(KEY, forged(claims))


def test_scope_claims_of_another_role_are_ignored():
    actor = decode_token(KEY, forged({"role": "ministry_admin", "province": "32",
                                      "tks_id": "x"}))
    assert (actor.role, actor.province_code, actor.tks_id) == (Role.ADMIN, None, None)


def test_a_token_living_longer_than_the_maximum_is_refused_at_mint_and_at_decode():
    with pytest.raises(ValueError, match="at most"):
        mint_token(KEY, "x", Role.ADMIN, ttl=MAX_TOKEN_LIFETIME + timedelta(seconds=1))
    now = int(time.time())
    with pytest.raises(UnauthorizedError, match="longer"):
        decode_token(KEY, forged({"role": "ministry_admin", "exp": 253402300799}))  # year 9999
    with pytest.raises(UnauthorizedError, match="longer"):
        decode_token(KEY, forged({"role": "ministry_admin", "exp": now + 25 * 3600}))
    with pytest.raises(UnauthorizedError, match="longer"):
        decode_token(KEY, mint_token(KEY, "x", Role.ADMIN, ttl=timedelta(hours=3)),
                     max_lifetime=timedelta(hours=2))
    without_iat = jwt.encode({"iss": ISSUER, "sub": "s", "role": "ministry_admin",
                              "exp": now + 60}, KEY, algorithm="HS256")
    with pytest.raises(UnauthorizedError, match="iat"):
        decode_token(KEY, without_iat)
    assert decode_token(KEY, mint_token(KEY, "x", Role.ADMIN, ttl=MAX_TOKEN_LIFETIME)).role \
        is Role.ADMIN


def test_a_token_is_verified_once_and_its_clock_checked_at_every_call(monkeypatch):
    """The signature is checked once per token (shared.auth._verified remembers it); expiry
    is not: a remembered token is refused once its time is up."""
    import shared.auth as auth

    token = mint_token(KEY, "kept", Role.ADMIN, ttl=timedelta(minutes=5))
    calls = []
    real = jwt.decode
    monkeypatch.setattr(auth.jwt, "decode", lambda *a, **k: calls.append(1) or real(*a, **k))
    first, again = decode_token(KEY, token), decode_token(KEY, token)
    assert first == again and len(calls) == 1
    later = auth.utcnow() + timedelta(minutes=6)
    monkeypatch.setattr(auth, "utcnow", lambda: later)
    with pytest.raises(UnauthorizedError, match="expired"):
        decode_token(KEY, token)
    assert len(calls) == 1  # refused from what was remembered, by the clock alone


def test_a_token_from_the_future_is_refused_even_once_remembered(monkeypatch):
    import shared.auth as auth

    now = int(time.time())
    early = forged({"role": "ministry_admin", "iat": now + 600, "exp": now + 1200})
    with pytest.raises(UnauthorizedError, match="not yet valid"):
        decode_token(KEY, early)
    with pytest.raises(UnauthorizedError, match="not yet valid"):
        decode_token(KEY, early)  # the second call answers from what was remembered
    not_before = forged({"role": "ministry_admin", "nbf": now + 600})
    with pytest.raises(UnauthorizedError, match="nbf"):
        decode_token(KEY, not_before)
    later = auth.utcnow() + timedelta(minutes=11)
    monkeypatch.setattr(auth, "utcnow", lambda: later)
    assert decode_token(KEY, early).role is Role.ADMIN
    assert decode_token(KEY, not_before).role is Role.ADMIN


@pytest.mark.parametrize("claims", [{"iat": "now"}, {"iat": True}, {"exp": [1]}])
def test_time_claims_that_are_not_numbers_are_refused(claims):
    with pytest.raises(UnauthorizedError, match="invalid bearer token"):
        decode_token(KEY, forged({"role": "ministry_admin", **claims}))


def test_a_bad_signature_is_not_remembered():
    token = mint_token(KEY, "x", Role.ADMIN)
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for _ in range(2):
        with pytest.raises(UnauthorizedError, match="invalid bearer token"):
            decode_token(KEY, tampered)
