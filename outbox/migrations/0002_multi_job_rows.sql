-- Rows that carry several jobs (EnqueueBatch): a change's follow-ups in one
-- row, written with one INSERT and published in one QStash batch call.
-- Existing rows are untouched: a row with kind and body is the one job it
-- always was; a row with jobs instead holds a JSON array of
-- {"kind", "body", "options"} (body a JSON string, byte for byte the
-- payload; text, not jsonb, for the same reason as body). kind and body are
-- NULL on such a row, so a relay of a release before this migration fails
-- to read it (its round rolls back and retries) rather than publishing only
-- part of it.
ALTER TABLE jobworker_outbox ADD COLUMN IF NOT EXISTS jobs text;
ALTER TABLE jobworker_outbox ALTER COLUMN kind DROP NOT NULL;
ALTER TABLE jobworker_outbox ALTER COLUMN body DROP NOT NULL;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'jobworker_outbox_one_or_many_check') THEN
        ALTER TABLE jobworker_outbox ADD CONSTRAINT jobworker_outbox_one_or_many_check
            CHECK ((jobs IS NULL AND kind IS NOT NULL AND body IS NOT NULL)
                OR (jobs IS NOT NULL AND kind IS NULL AND body IS NULL));
    END IF;
END $$;
