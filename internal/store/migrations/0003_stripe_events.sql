-- 0003: Stripe events received, the worker's dedupe when it runs on
-- PostgreSQL.
--
-- The worker records each verified event's id in the same transaction as
-- the event's stripe.event job (written to the outbox, jobworker_outbox),
-- so an event is acknowledged to Stripe only once its job is committed, and
-- a redelivered event finds its id here and gets no second job. The
-- primary key is the dedupe: a concurrent redelivery waits for the first
-- transaction and then sees the row. Rows older than the worker's
-- STRIPE_DEDUPE_TTL (Stripe retries for 3 days) are deleted by later
-- receipts, a few at a time.
CREATE TABLE stripe_events (
    event_id    text PRIMARY KEY CHECK (length(event_id) BETWEEN 1 AND 255),
    type        text NOT NULL CHECK (length(type) <= 255),
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_events_received_idx ON stripe_events (received_at);
