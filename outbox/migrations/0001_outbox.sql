-- The transactional outbox: one row per job enqueued inside an application
-- transaction, published to QStash by a relay after the transaction commits.
CREATE TABLE IF NOT EXISTS jobworker_outbox (
    -- A UUIDv7 made by Enqueue: time-ordered, and unique across databases,
    -- so the deduplication id derived from it cannot collide when a
    -- database is recreated (ids restarting at 1 would).
    id           uuid PRIMARY KEY,
    kind         text NOT NULL,
    -- The job's JSON payload, byte for byte as it will be published. text,
    -- not jsonb: jsonb would reorder keys and reject "\u0000".
    body         text NOT NULL,
    -- jobs.MessageOptions as JSON: retries, delay, deduplication, queue...
    options      jsonb NOT NULL DEFAULT '{}'::jsonb,
    state        text NOT NULL DEFAULT 'pending'
                 CONSTRAINT jobworker_outbox_state_check CHECK (state IN ('pending', 'sent', 'failed')),
    -- The enqueuing transaction's start time (database clock). A job's
    -- delay counts from here, not from when the relay publishes it.
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- The earliest time the relay may try the row (again).
    available_at timestamptz NOT NULL DEFAULT now(),
    attempts     integer NOT NULL DEFAULT 0,
    -- Why the last attempt failed; for a failed row, why it was given up.
    last_error   text,
    -- QStash's answer once sent.
    message_id   text,
    deduplicated boolean,
    -- When the row became sent or failed.
    finished_at  timestamptz
);

-- What the relay claims, oldest first.
CREATE INDEX IF NOT EXISTS jobworker_outbox_pending_idx
    ON jobworker_outbox (available_at, id) WHERE state = 'pending';

-- What the cleanup deletes once the retention has passed.
CREATE INDEX IF NOT EXISTS jobworker_outbox_sent_idx
    ON jobworker_outbox (finished_at) WHERE state = 'sent';

-- Failed rows wait for an operator; the relay counts them for a gauge.
CREATE INDEX IF NOT EXISTS jobworker_outbox_failed_idx
    ON jobworker_outbox (finished_at) WHERE state = 'failed';
