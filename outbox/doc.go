// Package outbox enqueues jobs transactionally: a job written with Enqueue
// inside a PostgreSQL transaction is published to QStash if and only if
// that transaction commits.
//
// Enqueue inserts the job — the same typed args, EnqueueDefaults, Validate
// and options as jobs.Client.Enqueue — as a row of the outbox table, in the
// caller's transaction:
//
//	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
//		if err := insertTip(ctx, tx, tip); err != nil {
//			return err
//		}
//		_, err := outbox.Enqueue(ctx, tx, appjobs.TipCreated{TipID: tip.ID}, jobs.WithRetries(5))
//		return err // an invalid job fails here, before commit
//	})
//
// EnqueueMany writes several jobs, a row each; EnqueueBatch writes the jobs
// that follow one change as one row, cheaper to write and to relay, whose
// jobs are published together and each deduplicated on its own.
//
// A Relay publishes committed rows and marks them sent. It wakes on the
// NOTIFY that Enqueue sends (delivered at commit), sweeps every
// SweepInterval as a safety net, publishes in batches (POST /v2/batch) and
// backs off, jittered and capped, while QStash is unreachable or answers
// 5xx or 429 (honouring Retry-After). A row QStash refuses for good (a 4xx
// other than 429 and the relay's own 401/403/404/405/408) is marked failed
// with the reason, logged at error level and counted; failed rows stay in
// the table until an operator deletes them. Sent rows are deleted after
// Config.Retention (24 h by default). Each round holds its rows with
// FOR UPDATE SKIP LOCKED until their outcome is committed, so relays
// sharing a database never publish a row at the same time.
//
// A NOTIFY makes PostgreSQL serialise the commits of the transactions that
// send it, so callers with many concurrent enqueuing transactions write
// through WithoutNotify(tx) and wake the relays once the transaction
// committed: Relay.Wake in their own process, Notify for relays elsewhere.
// The sweep finds rows whose wake-up was lost.
//
// Long-lived processes run the relay with Start and Stop (graceful: the
// round in flight finishes). Serverless deployments call RunOnce, or mount
// Handler behind QStash signature verification and point a QStash schedule
// at it. Migrate creates the table; the apps call it from their migrate
// step.
//
// # The guarantee
//
// A job is published only after its transaction committed (the relay
// cannot see uncommitted rows), and a committed job is published at least
// once, whatever crashes or outages happen, as long as its row exists.
// Duplicates are suppressed by QStash's deduplication: every job carries a
// deduplication id — its own (WithDeduplicationID, or content-based
// deduplication), else "outbox-<row id>" ("outbox-<row id>-<index>" in an
// EnqueueBatch row) — and a row whose outcome was not recorded (its relay
// crashed after QStash accepted it, or the database crashed before
// flushing the relay's commit, which does not wait for the flush) is
// published again under the same ids. QStash drops that second publish when it arrives
// within its 10-minute deduplication window, answering with the first
// message's id; the row is then recorded as sent and deduplicated.
//
// Past the window the second publish is a new message with a new QStash
// message id, so the worker's message-id deduplication does not catch it
// either: the job runs twice. That needs a relay to die (or lose its
// database connection) between QStash's answer and the commit of the
// outcome, and the row to stay unpublished for 10 minutes after — in
// practice, the database unreachable for that long, since any relay
// republishes a row whose claim died within one SweepInterval. Handlers
// must therefore still be idempotent on their payload (a tip id, a stream
// id); the outbox makes a duplicate rare and bounded, not impossible.
//
// See docs/outbox.md for the wiring, the deploy targets and the metrics.
package outbox
