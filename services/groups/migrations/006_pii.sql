-- Members' personal data sealed at rest (issue 18, docs/privacy.md): since RosterRecorded and
-- RosterChanged version 2 the NIK, name, phone and birth date of a member are `pii1:` tokens
-- under the person's data key (shared/pii.py), copied as they are into group_members (so a
-- rebuild gives the same rows); `nik_hash` (the NIK's keyed HMAC, hex) sits beside them and is
-- what removals, corrections, erasures and the one-group-per-person rule compare.
-- Rows written before hold plaintext and no hash (as their version 1 events do): read as is.

-- the persons' data keys (pii_person_keys, person_ref = the NIK's hash) are the kernel's
-- step (shared.privacy.migrate, ServiceSpec.personal_data)

-- a token is text; the plaintext dates recorded so far read as their ISO form, as their events
ALTER TABLE group_members ADD COLUMN nik_hash text,
    ALTER COLUMN birth_date TYPE text USING birth_date::text;
CREATE INDEX group_members_by_nik_hash ON group_members (nik_hash);

-- the rule compares the NIK's hash (rows claimed before hold the NIK itself)
ALTER TABLE active_memberships RENAME COLUMN nik TO nik_hash;
