-- 0004: an index on tips by time alone.
--
-- The scheduled refresh of tip counts (tips.refresh-counts) asks which
-- creators were tipped in the last 30 days, every five minutes: without an
-- index on the time alone that is a scan of every tip ever made.
CREATE INDEX tips_created_idx ON tips (created_at);
