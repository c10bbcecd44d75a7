-- Consumed events as the consumer applied them, kept for `tkm rebuild` (shared.projections):
-- the inbox is pruned after TKM_INBOX_RETENTION_DAYS, this log is not. A rebuild replays
-- exactly the events recorded here as applied, read back from their topics at these offsets.
-- Written by a trigger in the consumer's own transaction, so it never disagrees with the inbox;
-- a dead letter re-driven (its inbox row deleted, then claimed again) becomes applied here too.
CREATE TABLE consumed_log (
    event_id uuid PRIMARY KEY,
    topic text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    outcome text NOT NULL
);
INSERT INTO consumed_log (event_id, topic, kafka_partition, kafka_offset, outcome)
SELECT event_id, topic, kafka_partition, kafka_offset, outcome FROM inbox;

CREATE FUNCTION consumed_log_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO consumed_log (event_id, topic, kafka_partition, kafka_offset, outcome)
    VALUES (NEW.event_id, NEW.topic, NEW.kafka_partition, NEW.kafka_offset, NEW.outcome)
    ON CONFLICT (event_id) DO UPDATE SET topic = EXCLUDED.topic,
        kafka_partition = EXCLUDED.kafka_partition, kafka_offset = EXCLUDED.kafka_offset,
        outcome = EXCLUDED.outcome;
    RETURN NULL;
END $$;

-- pruning deletes inbox rows: nothing happens here then
CREATE TRIGGER inbox_kept_in_consumed_log AFTER INSERT OR UPDATE OF outcome ON inbox
    FOR EACH ROW EXECUTE FUNCTION consumed_log_keep();
