from datetime import timedelta

import pytest

from shared.auth import Actor, Role, decode_token, mint_token, pseudonym
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
