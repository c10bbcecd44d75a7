-- Personal data encrypted at rest (shared.pii, docs/privacy.md): the read model holds the same
-- `pii1:` tokens as the events (NIK, name, birth date, phone, e-mail), so the birth date becomes
-- text (a token; rows projected before this change keep their ISO date, read as plaintext),
-- and the NIK's token and keyed hash sit beside the masked NIK.
ALTER TABLE applicants ALTER COLUMN birth_date TYPE text USING to_char(birth_date, 'YYYY-MM-DD');
ALTER TABLE applicants ADD COLUMN nik text, ADD COLUMN nik_hash text;
CREATE INDEX applicants_by_nik_hash ON applicants (nik_hash) WHERE nik_hash IS NOT NULL;
-- rows projected before: their (plaintext) NIK, as a rebuild from their events would write it
UPDATE applicants a SET nik = n.nik FROM applicant_nik n WHERE n.applicant_id = a.applicant_id;

-- The NIK rule's key: `nik` now holds the NIK's keyed hash (Keyring.nik_hash, 64 hex digits);
-- rows claimed before this change hold the 16-digit NIK itself until rewritten (a registration
-- checks both, see handlers._claim_nik). A subject-access request finds a person by it.
COMMENT ON COLUMN applicant_nik.nik IS
    'Keyring.nik_hash of the NIK (64 hex); the plain NIK in rows claimed before 003';
CREATE INDEX applicant_nik_by_nik ON applicant_nik (nik);
CREATE INDEX applicant_nik_by_applicant ON applicant_nik (applicant_id);
