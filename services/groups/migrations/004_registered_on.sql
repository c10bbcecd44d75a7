-- A past year's groups are registered with their own date (issue 17, item 2): the registration
-- date the command gave (RosterRecorded.registered_on) is kept apart from when it was recorded
-- (registered_at, the event's time); `registration_backdated` marks a date the ministry gave.
-- Rows recorded so far were registered on the day they were recorded (UTC then).
ALTER TABLE group_registry ADD COLUMN registered_on date,
    ADD COLUMN registration_backdated boolean NOT NULL DEFAULT false;
UPDATE group_registry SET registered_on = (registered_at AT TIME ZONE 'UTC')::date;
