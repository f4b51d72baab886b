package outbox

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/digis/jobworker/jobs"
)

// Channel is the LISTEN/NOTIFY channel Enqueue notifies and relays listen
// on. PostgreSQL delivers the notification when the transaction commits,
// and never when it rolls back.
const Channel = "jobworker_outbox"

// DeduplicationPrefix starts the deduplication id Enqueue gives a job that
// has none of its own: "outbox-" + the row id.
const DeduplicationPrefix = "outbox-"

// Tx is what Enqueue needs from the caller's transaction. pgx.Tx satisfies
// it (as do *pgx.Conn, *pgxpool.Conn and *pgxpool.Pool, which commit at
// once); SQLTx adapts a database/sql transaction.
type Tx interface {
	Exec(ctx context.Context, sql string, arguments ...any) (pgconn.CommandTag, error)
}

// SQLExecer is the part of *sql.Tx (or *sql.Conn, *sql.DB) SQLTx uses.
type SQLExecer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// SQLTx adapts a database/sql transaction (any PostgreSQL driver) to Tx.
func SQLTx(tx SQLExecer) Tx { return sqlTx{tx} }

// WithoutNotify returns tx for Enqueue and EnqueueMany to write their rows
// without the NOTIFY. PostgreSQL serialises the commits of all transactions
// that NOTIFY — a lock on the whole cluster, held until the commit is
// flushed to disk — so when many transactions enqueue at once, the NOTIFY
// limits them to one commit flush at a time. Through WithoutNotify the rows
// are written the same way; wake the relays once the transaction has
// committed instead: Relay.Wake in the process that committed, or Notify
// (outside the transaction) for relays elsewhere. Relays find the rows on
// their sweep in any case.
func WithoutNotify(tx Tx) Tx { return quietTx{tx} }

type quietTx struct{ Tx }

// Notify wakes every relay listening on db's database, as the NOTIFY of
// Enqueue does at commit. Call it on a pool or connection, outside any
// transaction: it commits at once, without waiting for its commit to be
// flushed (a lost notification costs a relay one SweepInterval, nothing
// else), so it holds PostgreSQL's notification lock only for an instant.
func Notify(ctx context.Context, db Tx) error {
	// No arguments: the simple protocol, one round trip for the lot.
	_, err := db.Exec(ctx, "BEGIN; SET LOCAL synchronous_commit TO off; SELECT pg_notify('"+Channel+"', ''); COMMIT")
	if err != nil {
		return fmt.Errorf("outbox: notify: %w", err)
	}
	return nil
}

type sqlTx struct{ tx SQLExecer }

func (s sqlTx) Exec(ctx context.Context, query string, args ...any) (pgconn.CommandTag, error) {
	_, err := s.tx.ExecContext(ctx, query, args...)
	return pgconn.CommandTag{}, err
}

// Enqueue writes a job into the outbox inside the caller's transaction tx,
// so it is published if and only if tx commits. It takes the same args and
// options as jobs.Client.Enqueue — the args type's EnqueueDefaults, then
// opts, then the args' Validate method — and fails the same way
// (jobs.ErrInvalidName, jobs.ErrInvalidOption) before writing anything, so
// the caller can roll back. It returns the row's id (a UUID).
//
// A job without a deduplication id of its own (WithDeduplicationID or
// WithContentBasedDeduplication) gets DeduplicationPrefix + id, so a relay
// that publishes the row again after a crash is deduplicated by QStash.
// A delay (WithDelay) counts from the transaction's start, not from when the
// relay publishes. The insert also notifies Channel, which wakes relays the
// moment tx commits.
func Enqueue(ctx context.Context, tx Tx, args jobs.Args, opts ...jobs.EnqueueOption) (string, error) {
	ids, err := EnqueueMany(ctx, tx, []jobs.EnqueueRequest{{Args: args, Options: opts}})
	if err != nil {
		return "", err
	}
	return ids[0], nil
}

// insertChunk bounds the rows of one INSERT (4 parameters each, well under
// PostgreSQL's 65,535).
const insertChunk = 1000

// EnqueueMany is Enqueue for several jobs, in one statement per 1,000
// jobs. Nothing is written when any request is invalid. It returns the row
// ids in order.
func EnqueueMany(ctx context.Context, tx Tx, reqs []jobs.EnqueueRequest) ([]string, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	ids := make([]string, len(reqs))
	rows := make([][4]any, len(reqs))
	now := time.Now()
	for i, r := range reqs {
		m, err := jobs.PrepareMessage(ctx, r.Args, r.Options...)
		if err != nil {
			if len(reqs) > 1 {
				return nil, fmt.Errorf("outbox: request %d: %w", i, err)
			}
			return nil, fmt.Errorf("outbox: %w", err)
		}
		ids[i] = newID(now)
		if m.Options.DeduplicationID == "" && !m.Options.ContentBasedDeduplication {
			m.Options.DeduplicationID = DeduplicationPrefix + ids[i]
		}
		opts, err := json.Marshal(m.Options)
		if err != nil {
			return nil, fmt.Errorf("outbox: encode options: %w", err)
		}
		rows[i] = [4]any{ids[i], m.Kind, m.Body, string(opts)}
	}
	for len(rows) > 0 {
		n := min(len(rows), insertChunk)
		if err := insert(ctx, tx, rows[:n]); err != nil {
			return nil, err
		}
		rows = rows[n:]
	}
	return ids, nil
}

// MaxJobsPerRow bounds the jobs EnqueueBatch writes into one row: they are
// published in one QStash batch call.
const MaxJobsPerRow = 100

// storedJob is one job of a multi-job row (the jobs column): the row's
// kind, body and options for that job.
type storedJob struct {
	Kind    string          `json:"kind"`
	Body    string          `json:"body"`
	Options json.RawMessage `json:"options"`
}

// EnqueueBatch writes reqs — the jobs that follow one change, such as a
// tip's notification and counter refresh — as one outbox row inside tx, so
// they are published if and only if tx commits, and together: the relay
// publishes the row's jobs in one QStash batch call and marks the row sent
// once QStash accepted all of them. It is cheaper than EnqueueMany, which
// writes a row per job: one row to insert, claim, mark and clean up.
//
// Each request is prepared as Enqueue prepares its job, and nothing is
// written when any is invalid. A job without a deduplication id of its own
// gets DeduplicationPrefix + the row id + "-" + its index in reqs ("-0",
// "-1"...), so each job is still deduplicated on its own when the row is
// published again. reqs holds 1 to MaxJobsPerRow jobs (one job is written
// as Enqueue writes it). It returns the row's id.
//
// A row is one unit for the relay: if QStash refuses one of its jobs for
// good, the row is marked failed (the reason names the job), although
// QStash may have accepted the others.
func EnqueueBatch(ctx context.Context, tx Tx, reqs []jobs.EnqueueRequest) (string, error) {
	switch {
	case len(reqs) == 0:
		return "", fmt.Errorf("%w: outbox: EnqueueBatch needs at least one job", jobs.ErrInvalidOption)
	case len(reqs) == 1:
		return Enqueue(ctx, tx, reqs[0].Args, reqs[0].Options...)
	case len(reqs) > MaxJobsPerRow:
		return "", fmt.Errorf("%w: outbox: EnqueueBatch takes at most %d jobs, got %d", jobs.ErrInvalidOption, MaxJobsPerRow, len(reqs))
	}
	id := newID(time.Now())
	stored := make([]storedJob, len(reqs))
	for i, r := range reqs {
		m, err := jobs.PrepareMessage(ctx, r.Args, r.Options...)
		if err != nil {
			return "", fmt.Errorf("outbox: request %d: %w", i, err)
		}
		if m.Options.DeduplicationID == "" && !m.Options.ContentBasedDeduplication {
			m.Options.DeduplicationID = DeduplicationPrefix + id + "-" + strconv.Itoa(i)
		}
		opts, err := json.Marshal(m.Options)
		if err != nil {
			return "", fmt.Errorf("outbox: encode options: %w", err)
		}
		stored[i] = storedJob{Kind: m.Kind, Body: m.Body, Options: opts}
	}
	js, err := json.Marshal(stored)
	if err != nil {
		return "", fmt.Errorf("outbox: encode jobs: %w", err)
	}
	q := `WITH ins AS (INSERT INTO jobworker_outbox (id, jobs) VALUES ($1::uuid, $2) RETURNING 1)
		SELECT pg_notify('` + Channel + `', '') FROM ins`
	if _, quiet := tx.(quietTx); quiet {
		q = `INSERT INTO jobworker_outbox (id, jobs) VALUES ($1::uuid, $2)`
	}
	if _, err := tx.Exec(ctx, q, id, string(js)); err != nil {
		return "", fmt.Errorf("outbox: insert: %w", err)
	}
	return id, nil
}

func insert(ctx context.Context, tx Tx, rows [][4]any) error {
	var values strings.Builder
	args := make([]any, 0, 4*len(rows))
	for i, r := range rows {
		if i > 0 {
			values.WriteString(", ")
		}
		n := len(args)
		// Explicit casts: every argument travels as text, so database/sql
		// drivers need no type mapping.
		fmt.Fprintf(&values, "($%d::uuid, $%d, $%d, $%d::jsonb)", n+1, n+2, n+3, n+4)
		args = append(args, r[:]...)
	}
	// One round trip: the data-modifying CTE inserts, the SELECT notifies.
	// Notifications of one transaction with the same payload are folded
	// into one, delivered at commit.
	q := `WITH ins AS (INSERT INTO jobworker_outbox (id, kind, body, options) VALUES ` + values.String() +
		` RETURNING 1) SELECT pg_notify('` + Channel + `', '') FROM ins LIMIT 1`
	if _, quiet := tx.(quietTx); quiet {
		q = `INSERT INTO jobworker_outbox (id, kind, body, options) VALUES ` + values.String()
	}
	if _, err := tx.Exec(ctx, q, args...); err != nil {
		return fmt.Errorf("outbox: insert: %w", err)
	}
	return nil
}

// newID returns a UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then
// random bits, so ids sort roughly by creation and never repeat.
func newID(now time.Time) string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics instead)
	ms := uint64(now.UnixMilli())
	binary.BigEndian.PutUint16(b[0:2], uint16(ms>>32))
	binary.BigEndian.PutUint32(b[2:6], uint32(ms))
	b[6] = b[6]&0x0f | 0x70 // version 7
	b[8] = b[8]&0x3f | 0x80 // variant 10
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
