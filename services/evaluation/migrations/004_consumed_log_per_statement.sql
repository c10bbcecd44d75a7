-- consumed_log kept per statement instead of per row: a consumer batch claims its inbox rows
-- in one INSERT, and the row trigger ran a plpgsql INSERT for each of them (in the demo year,
-- 5 s of the evaluation database's time for 162,000 events). Transition tables give the
-- trigger the statement's rows at once; an UPDATE trigger with transition tables takes no
-- column list, so it copies every updated row's outcome (the same values when unchanged).
DROP TRIGGER inbox_kept_in_consumed_log ON inbox;
DROP FUNCTION consumed_log_keep();

CREATE FUNCTION consumed_log_keep_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO consumed_log (event_id, topic, kafka_partition, kafka_offset, outcome)
    SELECT event_id, topic, kafka_partition, kafka_offset, outcome FROM kept
    ON CONFLICT (event_id) DO UPDATE SET topic = EXCLUDED.topic,
        kafka_partition = EXCLUDED.kafka_partition, kafka_offset = EXCLUDED.kafka_offset,
        outcome = EXCLUDED.outcome;
    RETURN NULL;
END $$;

-- pruning deletes inbox rows: nothing happens here then
CREATE TRIGGER inbox_inserts_kept_in_consumed_log AFTER INSERT ON inbox
    REFERENCING NEW TABLE AS kept FOR EACH STATEMENT EXECUTE FUNCTION consumed_log_keep_rows();
CREATE TRIGGER inbox_updates_kept_in_consumed_log AFTER UPDATE ON inbox
    REFERENCING NEW TABLE AS kept FOR EACH STATEMENT EXECUTE FUNCTION consumed_log_keep_rows();
