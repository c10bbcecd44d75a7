-- Reasons (rejection, LPJ return, dissolution) are published as codes; the officer's own words,
-- which may name members, become a note kept here and shown only to the ministry and the
-- group's provincial officer. The free text stored so far is dropped, as replaying its upcast
-- (version 1) events drops it: a rebuild from the event store gives the same tables.
ALTER TABLE group_registry ADD COLUMN status_reason_code text, ADD COLUMN status_note text;
UPDATE group_registry SET status_reason_code = 'other' WHERE status_reason IS NOT NULL;
ALTER TABLE group_registry DROP COLUMN status_reason;

ALTER TABLE lpj_reports ADD COLUMN reason_code text, ADD COLUMN note text;
UPDATE lpj_reports SET reason_code = 'other' WHERE reason IS NOT NULL;
ALTER TABLE lpj_reports DROP COLUMN reason;
