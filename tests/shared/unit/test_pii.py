import base64
import random
import uuid

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared import pii
from shared.nik import random_valid_nik


def _keyring(*ids: str) -> pii.Keyring:
    return pii.Keyring.from_lines([pii.new_key_line(i) for i in ids])


def _person_key(person_ref: str = "applicant-1") -> pii.PersonKey:
    return pii.PersonKey(person_ref, uuid.uuid4(), AESGCM(AESGCM.generate_key(256)))


def test_a_value_comes_back_from_its_token_which_shows_neither_it_nor_its_length_in_clear():
    key = _person_key()
    token = key.encrypt("full_name", "Siti Nurhaliza binti Ahmad")
    assert pii.is_token(token) and "Siti" not in token
    assert key.decrypt("full_name", token) == "Siti Nurhaliza binti Ahmad"
    # a fresh nonce each time: equal values give unequal tokens (nothing to compare or count)
    assert key.encrypt("full_name", "Siti Nurhaliza binti Ahmad") != token
    assert key.encrypt("phone", None) is None and key.decrypt("phone", None) is None


def test_a_token_read_as_another_field_or_for_another_person_fails_loudly():
    key = _person_key("applicant-1")
    token = key.encrypt("nik", "3171014101900001")
    with pytest.raises(pii.PiiDecryptError, match="nik_hash of applicant-1"):
        key.decrypt("nik_hash", token)
    # the same key under another person ref (a row moved or copied) does not read it either
    moved = pii.PersonKey("applicant-2", key.key_id, key.aead)
    with pytest.raises(pii.PiiDecryptError):
        moved.decrypt("nik", token)


def test_an_altered_or_malformed_token_is_refused_and_the_message_has_no_value():
    key = _person_key()
    token = key.encrypt("phone", "+6281234567890")
    raw = bytearray(base64.urlsafe_b64decode(token[len(pii.TOKEN_PREFIX):] + "=="))
    raw[-1] ^= 1
    altered = pii.TOKEN_PREFIX + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(pii.PiiDecryptError) as caught:
        key.decrypt("phone", altered)
    assert "6281234567890" not in str(caught.value)
    for bad in ("pii1:", "pii1:@@@@", "+6281234567890"):
        with pytest.raises(pii.PiiDecryptError):
            key.decrypt("phone", bad)


def test_an_erased_key_reads_every_token_as_erased_and_encrypts_nothing():
    key = _person_key()
    token = key.encrypt("birth_date", "1990-01-01")
    erased = pii.PersonKey(key.person_ref, key.key_id, None)
    assert erased.decrypt("birth_date", token) is pii.ERASED
    assert erased.decrypt("birth_date", None) is None
    with pytest.raises(pii.PersonErasedError):
        erased.encrypt("birth_date", "1990-01-01")
    # a key replaced by a new one (a correction): the old tokens read as erased, not as errors
    rekeyed = pii.PersonKey(key.person_ref, uuid.uuid4(), AESGCM(AESGCM.generate_key(256)))
    assert rekeyed.decrypt("birth_date", token) is pii.ERASED
    assert isinstance(pii.ERASED, str)


def test_the_token_carries_the_data_key_id():
    key = _person_key()
    token = key.encrypt("email", "siti@example.id")
    raw = base64.urlsafe_b64decode(token[len(pii.TOKEN_PREFIX):] + "==")
    assert raw[:16] == key.key_id.bytes


def test_nik_hash_is_stable_keyed_by_the_root_and_kept_through_a_kek_rotation():
    rng = random.Random(18)
    nik = random_valid_nik(rng)
    lines = [pii.new_key_line("2026a")]
    first = pii.Keyring.from_lines(lines)
    assert first.nik_hash(nik) == pii.Keyring.from_lines(lines).nik_hash(nik)
    assert first.nik_hash(nik) == first.nik_hash(f" {nik[:6]} {nik[6:12]} {nik[12:]} ")
    assert len(first.nik_hash(nik)) == 64 and nik not in first.nik_hash(nik)
    assert first.nik_hash(nik) != first.nik_hash(random_valid_nik(rng))
    # another key file, another hash: the hash is keyed, not a plain SHA-256 anyone can build
    assert _keyring("2026a").nik_hash(nik) != first.nik_hash(nik)
    # a new current KEK on top: the root (last line) and so every hash stay the same
    rotated = pii.Keyring.from_lines([pii.new_key_line("2027a"), *lines])
    assert rotated.current_id == "2027a" and rotated.root_id == "2026a"
    assert rotated.nik_hash(nik) == first.nik_hash(nik)


def test_key_file_lines_are_checked_without_echoing_a_key(tmp_path):
    good = pii.new_key_line("k1")
    keyring = pii.Keyring.from_lines(["# current first", "", good])
    assert keyring.kek_ids == ["k1"] and "k1" in repr(keyring)
    assert good.split()[1] not in repr(keyring)
    short = "k2 " + base64.b64encode(b"x" * 16).decode()
    for lines, reason in ([[], "no key"], [["k1"], "line 1"], [["bad/id " + good.split()[1]],
                                                              "line 1"],
                          [[good, "k2 not*base64"], "line 2: the key is not base64"],
                          [[short], "32 bytes"], [[good, good], "twice"]):
        with pytest.raises(pii.PiiKeyError, match=reason) as caught:
            pii.Keyring.from_lines(lines)
        assert good.split()[1] not in str(caught.value)
    with pytest.raises(pii.PiiKeyError, match="cannot read"):
        pii.Keyring.from_file(tmp_path / "missing")
    with pytest.raises(pii.PiiKeyError):
        pii.new_key_line("no spaces allowed")


def test_the_dev_key_serves_only_dev_and_test_and_a_key_file_is_required_elsewhere(tmp_path):
    assert pii.Keyring.from_environment({"TKM_ENV": "test"}).holds_dev_key
    assert pii.Keyring.from_environment({"TKM_ENV": "dev"}).current_id == pii.DEV_KEK_ID
    with pytest.raises(pii.PiiKeyError, match="TKM_PII_MASTER_KEY_FILE must be set"):
        pii.Keyring.from_environment({})
    dev_file = tmp_path / "dev.keys"
    dev_file.write_text(f"dev {pii.DEV_MASTER_KEY}\n")
    with pytest.raises(pii.PiiKeyError, match="dev key"):
        pii.Keyring.from_environment({"TKM_ENV": "production", pii.KEY_FILE_ENV: str(dev_file)})
    real = tmp_path / "pii.keys"
    real.write_text(pii.new_key_line("2026a") + "\n")
    keyring = pii.Keyring.from_environment({pii.KEY_FILE_ENV: str(real)})
    assert keyring.current_id == "2026a" and not keyring.holds_dev_key


def test_a_key_wrapped_under_one_kek_does_not_unwrap_under_another_of_the_same_name():
    ref, key_id, dek = "member-7", uuid.uuid4(), AESGCM.generate_key(256)
    ours, theirs = _keyring("k1"), _keyring("k1")
    wrapped = ours._wrap(ref, key_id, dek)
    assert ours._unwrap(ref, key_id, "k1", wrapped) == dek
    with pytest.raises(pii.PiiKeyError, match="does not unwrap"):
        theirs._unwrap(ref, key_id, "k1", wrapped)
    # bound to its person and key id: a row copied to another person does not unwrap
    with pytest.raises(pii.PiiKeyError, match="does not unwrap"):
        ours._unwrap("member-8", key_id, "k1", wrapped)
    with pytest.raises(pii.PiiKeyError, match="does not hold"):
        ours._unwrap(ref, key_id, "k0", wrapped)
