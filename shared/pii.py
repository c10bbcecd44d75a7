"""Personal data encrypted at rest and erasable: crypto-shredding with per-person keys.

Each person (a `person_ref`: the id of the person's record in the owning service, never the NIK
itself) has a data key (DEK, AES-256-GCM) kept in `pii_person_keys`, wrapped by a master key
(KEK) that lives in a secret file, never in the database. A personal field is stored (in an
event's payload, a read model) as a token `pii1:<base64url(DEK id | nonce | ciphertext)>`
whose associated data binds it to the person and the field name. Erasing a person deletes their
DEK and keeps a tombstone: every token of theirs, in events, read models and backups taken
afterwards, is unreadable for good, while streams, counts and rupiah totals stay as they were.

Guarantees:
- `ensure_keys` returns a key for every person asked, in one statement for the whole batch
  (concurrent callers agree on one key per person); `load_keys` reads keys in one statement.
- `PersonKeys.decrypt` of an erased person's token returns `ERASED` (also for a token made
  under a key replaced by `rekey`): replays and rebuilds carry on. A token decrypted under the
  wrong person or field, or altered, raises `PiiDecryptError`; it never returns garbage.
- `PersonKeys.encrypt` for an erased person raises `PersonErasedError`: nothing new is written
  readable for a person whose data was erased.
- A wrapped key is bound to its person and key id: it unwraps under its own KEK only.
- `rewrap` moves every live DEK to the keyring's current KEK (rotation); tokens do not change.
- `Keyring.nik_hash` is an HMAC-SHA256 of the NIK under a key derived from the keyring's root
  key (the last line of the key file): stable across restarts and KEK rotations, different for
  another key file. The one-person-one-group and NIK-dedup rules compare these hashes.

The key file (`TKM_PII_MASTER_KEY_FILE`): one key a line, `<kek id> <base64 of 32 bytes>`,
`#` comments; the first line is the current KEK (wraps new and re-wrapped keys), the last line
is the root the NIK hash is derived from. With TKM_ENV=dev or test and no file, the
repository's dev key is used; it is refused anywhere else (docs/privacy.md: rotation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PII_SCHEMA = """
CREATE TABLE IF NOT EXISTS pii_person_keys (
    person_ref text PRIMARY KEY CHECK (length(person_ref) BETWEEN 1 AND 200),
    key_id uuid NOT NULL,
    kek_id text,
    wrapped_key bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    rekeyed_at timestamptz,
    erased_at timestamptz,
    CHECK ((wrapped_key IS NULL) = (kek_id IS NULL)),
    CHECK ((erased_at IS NULL) = (wrapped_key IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS pii_person_keys_by_kek ON pii_person_keys (kek_id)
    WHERE wrapped_key IS NOT NULL;
"""

KEY_FILE_ENV = "TKM_PII_MASTER_KEY_FILE"
TOKEN_PREFIX = "pii1:"
DEV_KEK_ID = "dev"
# in the repository, hence known to everyone: only TKM_ENV=dev or test may use it
DEV_MASTER_KEY = base64.b64encode(
    hashlib.sha256(b"tkm-dev-pii-master-key-not-for-production-use").digest()).decode()
_KEK_ID = re.compile(r"[A-Za-z0-9._-]{1,32}")
_NONCE = 12
_DEK_ID = 16


class PiiError(Exception):
    """A key or token problem. Messages name persons and key ids, never values or key bytes."""


class PiiKeyError(PiiError):
    """The key file is missing or malformed, a KEK id is unknown, or a wrapped key will not
    unwrap (another KEK, or the row was altered or moved to another person)."""


class PiiDecryptError(PiiError):
    """A token is malformed, altered, or read under the wrong person or field."""


class PersonErasedError(PiiError):
    """The person's data was erased: nothing is encrypted for them any more."""

    def __init__(self, person_ref: str) -> None:
        super().__init__(f"the personal data of {person_ref} was erased")
        self.person_ref = person_ref


class Erased(str):
    """What an erased value reads as. A str, so read models and JSON answers take it as is;
    test with `value is ERASED` or `isinstance(value, Erased)`."""

    __slots__ = ()


ERASED = Erased("[erased]")


def _derive(material: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"tkm.pii." + purpose).derive(material)


@dataclass(frozen=True, slots=True, repr=False)
class _Kek:
    kek_id: str
    aead: AESGCM
    material_digest: bytes  # to recognise the dev key without keeping the material


class Keyring:
    """The master keys (KEKs) from the key file: the first is current, the last is the root of
    the NIK hash. Build with `from_environment`, `from_file` or `from_lines`."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise PiiKeyError("the PII key file holds no key")
        self._keks: dict[str, _Kek] = {}
        for kek_id, material in keys:
            if kek_id in self._keks:
                raise PiiKeyError(f"the PII key file names key {kek_id!r} twice")
            self._keks[kek_id] = _Kek(kek_id, AESGCM(_derive(material, b"kek-wrap.v1")),
                                      hashlib.sha256(material).digest())
        self.current_id = keys[0][0]
        self.root_id = keys[-1][0]
        self._nik_key = _derive(keys[-1][1], b"nik-hash.v1")

    def __repr__(self) -> str:
        return f"Keyring(current={self.current_id!r}, keys={list(self._keks)!r})"

    @property
    def kek_ids(self) -> list[str]:
        return list(self._keks)

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> Keyring:
        """Parse `<kek id> <base64 of 32 bytes>` lines. Raises PiiKeyError naming the line."""
        keys = []
        for number, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2 or not _KEK_ID.fullmatch(parts[0]):
                raise PiiKeyError(f"PII key file line {number}: expected '<kek id> <base64 key>'"
                                  " with an id of letters, digits, '.', '_' or '-'")
            try:
                material = base64.b64decode(parts[1].replace("-", "+").replace("_", "/"),
                                            validate=True)
            except (binascii.Error, ValueError):
                raise PiiKeyError(f"PII key file line {number}: the key is not base64") from None
            if len(material) != 32:
                raise PiiKeyError(f"PII key file line {number}: the key must be 32 bytes "
                                  f"(256 bits), not {len(material)}")
            keys.append((parts[0], material))
        return cls(keys)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Keyring:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PiiKeyError(f"{KEY_FILE_ENV}: cannot read the file ({exc.strerror})") from None
        return cls.from_lines(text.splitlines())

    @classmethod
    def dev(cls) -> Keyring:
        return cls.from_lines([f"{DEV_KEK_ID} {DEV_MASTER_KEY}"])

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Keyring:
        """The keyring of `TKM_PII_MASTER_KEY_FILE`; without it the dev key, only with
        TKM_ENV=dev or test (fail closed, as shared.settings does for the signing key)."""
        test_like = environ.get("TKM_ENV", "production") in ("dev", "test")
        path = environ.get(KEY_FILE_ENV)
        if not path:
            if not test_like:
                raise PiiKeyError(f"{KEY_FILE_ENV} must be set: the dev key is accepted only "
                                  "with TKM_ENV=dev or test")
            return cls.dev()
        keyring = cls.from_file(path)
        if not test_like and keyring.holds_dev_key:
            raise PiiKeyError(f"{KEY_FILE_ENV} holds the repository's dev key: refused outside "
                              "TKM_ENV=dev or test")
        return keyring

    @property
    def holds_dev_key(self) -> bool:
        dev_digest = hashlib.sha256(base64.b64decode(DEV_MASTER_KEY)).digest()
        return any(hmac.compare_digest(k.material_digest, dev_digest)
                   for k in self._keks.values())

    def nik_hash(self, nik: str) -> str:
        """Hex HMAC-SHA256 of the NIK (spaces and dots ignored), keyed by the root key."""
        digits = re.sub(r"[\s.]", "", nik)
        return hmac.new(self._nik_key, digits.encode(), hashlib.sha256).hexdigest()

    def _wrap(self, person_ref: str, key_id: uuid.UUID, dek: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._keks[self.current_id].aead.encrypt(
            nonce, dek, _wrap_ad(person_ref, key_id))

    def _unwrap(self, person_ref: str, key_id: uuid.UUID, kek_id: str, wrapped: bytes) -> bytes:
        kek = self._keks.get(kek_id)
        if kek is None:
            raise PiiKeyError(f"the key of {person_ref} is wrapped by KEK {kek_id!r}, which the "
                              f"key file does not hold (it holds {self.kek_ids})")
        try:
            return kek.aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:],
                                    _wrap_ad(person_ref, key_id))
        except InvalidTag:
            raise PiiKeyError(f"the key of {person_ref} does not unwrap under KEK {kek_id!r}: "
                              "another key file, or an altered row") from None


def _wrap_ad(person_ref: str, key_id: uuid.UUID) -> bytes:
    return b"tkm.pii.dek.v1\x00" + person_ref.encode() + b"\x00" + key_id.bytes


def _field_ad(person_ref: str, field: str) -> bytes:
    return b"tkm.pii.v1\x00" + person_ref.encode() + b"\x00" + field.encode()


def is_token(value: object) -> bool:
    """Whether `value` is an encrypted personal field (of this kernel's format)."""
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


@dataclass(frozen=True, slots=True, repr=False)
class PersonKey:
    """One person's data key; `aead` is None once erased."""

    person_ref: str
    key_id: uuid.UUID
    aead: AESGCM | None

    @property
    def erased(self) -> bool:
        return self.aead is None

    def __repr__(self) -> str:
        return f"PersonKey({self.person_ref!r}, erased={self.erased})"

    def encrypt(self, field: str, value: str | None) -> str | None:
        """`value` as a token bound to this person and `field`; None stays None. Raises
        PersonErasedError for an erased person."""
        if value is None:
            return None
        if self.aead is None:
            raise PersonErasedError(self.person_ref)
        nonce = os.urandom(_NONCE)
        sealed = self.aead.encrypt(nonce, value.encode(), _field_ad(self.person_ref, field))
        return TOKEN_PREFIX + base64.urlsafe_b64encode(
            self.key_id.bytes + nonce + sealed).rstrip(b"=").decode()

    def decrypt(self, field: str, token: str | None) -> str | Erased | None:
        """The value of a token made by `encrypt` for this person and `field`; ERASED when the
        person was erased or the token was made under a key since replaced (`rekey`). Raises
        PiiDecryptError for a malformed or altered token, or another person's or field's."""
        if token is None:
            return None
        if not is_token(token):
            raise PiiDecryptError(f"{field} of {self.person_ref} is not an encrypted value")
        body = token[len(TOKEN_PREFIX):]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise PiiDecryptError(f"{field} of {self.person_ref}: malformed token") from None
        if len(raw) < _DEK_ID + _NONCE + 16:
            raise PiiDecryptError(f"{field} of {self.person_ref}: malformed token")
        if self.aead is None or raw[:_DEK_ID] != self.key_id.bytes:
            return ERASED
        try:
            return self.aead.decrypt(raw[_DEK_ID:_DEK_ID + _NONCE], raw[_DEK_ID + _NONCE:],
                                     _field_ad(self.person_ref, field)).decode()
        except InvalidTag:
            raise PiiDecryptError(f"{field} of {self.person_ref} does not decrypt: another "
                                  "person's or field's value, or altered") from None


class PersonKeys(Mapping[str, PersonKey]):
    """The keys of a batch of persons, by person_ref (from `ensure_keys` or `load_keys`)."""

    def __init__(self, keys: dict[str, PersonKey]) -> None:
        self._keys = keys

    def __getitem__(self, person_ref: str) -> PersonKey:
        try:
            return self._keys[person_ref]
        except KeyError:
            raise PiiKeyError(f"no data key for {person_ref} in this batch") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def encrypt(self, person_ref: str, field: str, value: str | None) -> str | None:
        return self[person_ref].encrypt(field, value)

    def decrypt(self, person_ref: str, field: str, token: str | None) -> str | Erased | None:
        return self[person_ref].decrypt(field, token)


def _key_from_row(keyring: Keyring, row) -> PersonKey:
    if row["wrapped_key"] is None:
        return PersonKey(row["person_ref"], row["key_id"], None)
    dek = keyring._unwrap(row["person_ref"], row["key_id"], row["kek_id"], row["wrapped_key"])
    return PersonKey(row["person_ref"], row["key_id"], AESGCM(dek))


def _new_keys(keyring: Keyring, refs: list[str]) -> tuple[list[uuid.UUID], list[bytes]]:
    key_ids = [uuid.uuid4() for _ in refs]
    wrapped = [keyring._wrap(ref, key_id, AESGCM.generate_key(256))
               for ref, key_id in zip(refs, key_ids, strict=True)]
    return key_ids, wrapped


_ENSURE = """
WITH wanted AS (
    SELECT * FROM unnest($1::text[], $2::uuid[], $3::bytea[]) AS w(person_ref, key_id, wrapped)
), created AS (
    INSERT INTO pii_person_keys (person_ref, key_id, kek_id, wrapped_key)
    SELECT person_ref, key_id, $4, wrapped FROM wanted ORDER BY person_ref
    ON CONFLICT (person_ref) DO NOTHING
    RETURNING person_ref, key_id, kek_id, wrapped_key
)
SELECT person_ref, key_id, kek_id, wrapped_key FROM created
UNION ALL
SELECT k.person_ref, k.key_id, k.kek_id, k.wrapped_key
FROM pii_person_keys k JOIN wanted USING (person_ref)
"""
_LOAD = ("SELECT person_ref, key_id, kek_id, wrapped_key FROM pii_person_keys "
         "WHERE person_ref = ANY($1::text[])")


async def ensure_keys(conn, keyring: Keyring, person_refs: Iterable[str]) -> PersonKeys:
    """The keys of `person_refs`, created (wrapped by the current KEK) for those who have none,
    in one statement for the batch (a second only when a concurrent caller created one of them
    meanwhile). Erased persons come back erased. Raises PiiKeyError when a key will not unwrap.
    Keys are inserted in person_ref order, so concurrent batches wait for, never deadlock on,
    each other (a transaction that calls this twice should ask in ascending order too). Needs
    READ COMMITTED (Postgres' default): the second statement must see the other's commit."""
    refs = sorted(set(person_refs))
    if not refs:
        return PersonKeys({})
    key_ids, wrapped = _new_keys(keyring, refs)
    found: dict[str, PersonKey] = {}
    for _ in range(3):
        # a row committed by a concurrent caller after this statement's snapshot is neither
        # inserted nor seen: ask again for those
        rows = await conn.fetch(_ENSURE, refs, key_ids, wrapped, keyring.current_id)
        for row in rows:
            found[row["person_ref"]] = _key_from_row(keyring, row)
        missing = [i for i, ref in enumerate(refs) if ref not in found]
        if not missing:
            return PersonKeys(found)
        refs = [refs[i] for i in missing]
        key_ids = [key_ids[i] for i in missing]
        wrapped = [wrapped[i] for i in missing]
    raise PiiError(f"no data key could be created or read for {refs[:3]}")


async def load_keys(conn, keyring: Keyring, person_refs: Iterable[str]) -> PersonKeys:
    """The existing keys of `person_refs` (erased ones as erased), in one statement; persons
    without a key are absent (PersonKeys[...] then raises PiiKeyError)."""
    refs = list(dict.fromkeys(person_refs))
    rows = await conn.fetch(_LOAD, refs) if refs else []
    return PersonKeys({row["person_ref"]: _key_from_row(keyring, row) for row in rows})


async def erase(conn, person_ref: str) -> bool:
    """Delete the person's data key, keeping a tombstone (key id, erased_at); a person without
    a key gets a tombstone, so no key is created for them later. True when a readable key was
    deleted now, False when the person was erased already. Inside the caller's transaction when
    one is open: the erasure commits with it. Rows of older versions stay in the table's file
    until vacuumed: `vacuum_keys` after erasures, before the next backup."""
    status = await conn.fetchval(
        "INSERT INTO pii_person_keys (person_ref, key_id, erased_at) VALUES ($1, $2, now()) "
        "ON CONFLICT (person_ref) DO UPDATE SET wrapped_key = NULL, kek_id = NULL, "
        "erased_at = now() WHERE pii_person_keys.erased_at IS NULL "
        "RETURNING (xmax <> 0)", person_ref, uuid.uuid4())
    return status is True


async def rekey(conn, keyring: Keyring, person_ref: str) -> PersonKey:
    """Replace the person's data key by a new one: tokens made before read as ERASED from now on
    (a correction re-records every personal field under the new key, so the superseded values
    become unreadable). Raises PersonErasedError for an erased person, PiiKeyError for one
    without a key."""
    key_id = uuid.uuid4()
    wrapped = keyring._wrap(person_ref, key_id, AESGCM.generate_key(256))
    row = await conn.fetchrow(
        "UPDATE pii_person_keys SET key_id = $2, wrapped_key = $3, kek_id = $4, "
        "rekeyed_at = now() WHERE person_ref = $1 AND erased_at IS NULL "
        "RETURNING person_ref, key_id, kek_id, wrapped_key",
        person_ref, key_id, wrapped, keyring.current_id)
    if row is None:
        if await conn.fetchval("SELECT true FROM pii_person_keys WHERE person_ref = $1",
                               person_ref):
            raise PersonErasedError(person_ref)
        raise PiiKeyError(f"no data key for {person_ref}")
    return _key_from_row(keyring, row)


async def rewrap(conn, keyring: Keyring, *, batch_size: int = 1000) -> int:
    """Re-wrap every live data key not under the current KEK with the current one (the keys and
    so every token stay the same), a batch per transaction. Returns how many were re-wrapped;
    afterwards no row names an old KEK and it may leave the key file (not the root: see the
    module doc). Raises PiiKeyError when a key will not unwrap (nothing of that batch changes)."""
    total = 0
    while True:
        async with conn.transaction():
            rows = await conn.fetch(
                "SELECT person_ref, key_id, kek_id, wrapped_key FROM pii_person_keys "
                "WHERE wrapped_key IS NOT NULL AND kek_id <> $1 LIMIT $2 FOR UPDATE SKIP LOCKED",
                keyring.current_id, batch_size)
            if not rows:
                return total
            refs, wrapped = [], []
            for row in rows:
                dek = keyring._unwrap(row["person_ref"], row["key_id"], row["kek_id"],
                                      row["wrapped_key"])
                refs.append(row["person_ref"])
                wrapped.append(keyring._wrap(row["person_ref"], row["key_id"], dek))
            await conn.execute(
                "UPDATE pii_person_keys k SET wrapped_key = w.wrapped, kek_id = $3 "
                "FROM unnest($1::text[], $2::bytea[]) AS w(person_ref, wrapped) "
                "WHERE k.person_ref = w.person_ref AND k.wrapped_key IS NOT NULL",
                refs, wrapped, keyring.current_id)
            total += len(rows)


async def kek_usage(conn) -> dict[str, int]:
    """{kek id: live keys it wraps}: what must be re-wrapped before a KEK leaves the file."""
    rows = await conn.fetch("SELECT kek_id, count(*) AS n FROM pii_person_keys "
                            "WHERE wrapped_key IS NOT NULL GROUP BY kek_id")
    return {row["kek_id"]: row["n"] for row in rows}


async def vacuum_keys(conn) -> None:
    """Rewrite the key table's file without the deleted keys' old row versions (outside a
    transaction): what an erasure leaves in the table file is gone before the next backup.
    The write-ahead log keeps them until its segments are recycled (docs/privacy.md). Locks the
    table while it runs (about a second for 100,000 keys): run it after a batch of erasures."""
    await conn.execute("VACUUM (FULL) pii_person_keys")


def new_key_line(kek_id: str) -> str:
    """A fresh line for the key file: `<kek id> <base64 of 32 random bytes>`."""
    if not _KEK_ID.fullmatch(kek_id):
        raise PiiKeyError("a KEK id is 1-32 letters, digits, '.', '_' or '-'")
    return f"{kek_id} {base64.b64encode(os.urandom(32)).decode()}"


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "new-key":
        sys.exit("usage: python -m shared.pii new-key <kek id>   (prints a key file line)")
    print(new_key_line(sys.argv[2]))
