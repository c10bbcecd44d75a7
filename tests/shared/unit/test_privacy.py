"""The privacy kernel's pure parts: the NIK of a request is validated and hashed without being
echoed, stored values read whether tokens or older plaintext, the keyring comes from the
settings and fails closed, and the routes are ministry-admin commands with the NIK in the body."""

from __future__ import annotations

import random

import pytest
from pydantic import BaseModel

from shared import pii, privacy
from shared.errors import RuleViolationError
from shared.nik import random_valid_nik
from shared.pii import PersonKey
from shared.settings import load_settings

NIK = random_valid_nik(random.Random(18))


def test_a_valid_nik_becomes_its_keyed_hash_and_a_bad_one_is_refused_without_echo():
    keyring = pii.Keyring.dev()
    subject = privacy.subject_of(f" {NIK} ", keyring)
    assert subject.nik == NIK and subject.nik_hash == keyring.nik_hash(NIK)
    assert NIK not in repr(subject)
    bad = NIK[:-4] + "0000"  # serial 0000: not a NIK
    with pytest.raises(RuleViolationError) as refused:
        privacy.subject_of(bad, keyring)
    assert refused.value.status == 422 and refused.value.field == "nik"
    assert bad not in str(refused.value.body())


def test_reveal_reads_tokens_plaintext_and_erased_persons():
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    import uuid

    key = PersonKey("applicant-1", uuid.uuid4(), AESGCM(AESGCM.generate_key(256)))
    token = key.encrypt("full_name", "Siti Aminah")
    keys = {"applicant-1": key}
    assert privacy.reveal(keys, "applicant-1", "full_name", token) == "Siti Aminah"
    # written before encryption: read as it is
    assert privacy.reveal(keys, "applicant-1", "full_name", "Budi") == "Budi"
    assert privacy.reveal(keys, "applicant-1", "phone", None) is None
    # no key at all (never created, or another database): erased, not an error
    assert privacy.reveal({}, "applicant-1", "full_name", token) is pii.ERASED
    erased = {"applicant-1": PersonKey("applicant-1", key.key_id, None)}
    assert privacy.reveal(erased, "applicant-1", "full_name", token) is pii.ERASED


def test_the_keyring_comes_from_the_settings_and_fails_closed(tmp_path):
    url = "postgresql://u@127.0.0.1/db"
    dev = load_settings("recruitment", database_url=url, environment="test").keyring()
    assert dev.holds_dev_key
    key_file = tmp_path / "pii.key"
    key_file.write_text(pii.new_key_line("2026a") + "\n")
    own = load_settings("recruitment", database_url=url, environment="test",
                        pii_master_key_file=str(key_file)).keyring()
    assert own.current_id == "2026a" and own.nik_hash(NIK) != dev.nik_hash(NIK)
    production = load_settings("recruitment", database_url=url, environment="production",
                               auth_signing_key="x" * 40, http_host="127.0.0.1")
    with pytest.raises(pii.PiiKeyError, match="TKM_PII_MASTER_KEY_FILE"):
        production.keyring()


def test_the_key_file_variable_is_known_to_every_service():
    from shared.settings import SERVICE_PORTS, ServiceSettings

    for service in SERVICE_PORTS:
        assert "TKM_PII_MASTER_KEY_FILE" in ServiceSettings.env_names(service)


class _Changes(BaseModel):
    name: str | None = None


async def _nothing(*_):
    return []


def test_the_routes_are_posts_with_the_nik_in_the_body_for_the_ministry_only():
    from fastapi import FastAPI

    app = FastAPI()
    app.include_router(privacy.build_router(privacy.Privacy(
        find=_nothing, export=_nothing, current=_nothing, corrections=_Changes)))
    paths = app.openapi()["paths"]
    assert set(paths) == {"/privacy/subject-access", "/privacy/correction", "/privacy/erasure"}
    for path, ops in paths.items():
        assert set(ops) == {"post"}, path
        assert not [p for p in ops["post"].get("parameters", []) if p["in"] in ("path", "query")]
    schemas = app.openapi()["components"]["schemas"]
    assert schemas["ErasureIn"]["properties"]["reason_code"]["enum"] == list(
        privacy.REASON_CODES)
