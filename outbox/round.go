package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/digis/jobworker/jobs"
)

// isolateAfter: a row that was in this many failed batch calls is published
// on its own, so one row QStash keeps answering 5xx for cannot hold back
// the rows batched with it.
const isolateAfter = 2

// maxReasonBytes bounds the failure reason stored and logged per row.
const maxReasonBytes = 1000

type row struct {
	id        string
	kind      string // a one-job row's job; "" for a multi-job row
	body      string
	options   []byte
	jobs      string // a multi-job row's jobs (JSON); "" for a one-job row
	createdAt time.Time
	attempts  int
	msgs      []jobs.Message // decoded: one per job
}

// roundResult is what one round did.
type roundResult struct {
	claimed      int // rows
	published    int // jobs accepted by QStash, deduplicated included
	deduplicated int // jobs
	failed       int // jobs of the rows given up
	// unavailable is set when QStash could not take jobs: the relay should
	// wait its RetryAfter before the next round.
	unavailable *UnavailableError
}

// marks are the row updates one round writes, in one round trip.
type marks struct {
	sentIDs, sentMsgIDs []string
	sentDedup           []bool
	sentJobs, dedupJobs int
	failedIDs, reasons  []string
	failedJobs          int
	// attempted: tried while QStash was unavailable; stay due.
	attemptedIDs, attemptReasons []string
	// deferred: tried alone and refused for now; due again after a backoff.
	deferredIDs, deferReasons []string
	deferDelays               []time.Duration
}

const claimSQL = `
SELECT id::text, coalesce(kind, ''), coalesce(body, ''), options::text, coalesce(jobs, ''), created_at, attempts
FROM jobworker_outbox
WHERE state = 'pending' AND available_at <= now()
ORDER BY available_at, id
LIMIT $1
FOR UPDATE SKIP LOCKED`

// round claims up to limit due rows, publishes them and records the
// outcome, all in one transaction: the row locks keep every other relay
// off these rows until the outcome is committed, and vanish with the
// connection if this process dies, so another relay takes over at once
// (republishing under the same deduplication ids). A returned error is a
// database failure; QStash failures are in the result.
//
// Two round trips to the database: BEGIN and the claim in one pipeline,
// the outcome's updates and COMMIT in another.
func (r *Relay) round(ctx context.Context, limit int) (res roundResult, err error) {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return res, fmt.Errorf("outbox: acquire: %w", err)
	}
	defer conn.Release() // a connection left inside a transaction is closed, not reused
	defer func() {
		if err != nil && conn.Conn().PgConn().TxStatus() != 'I' {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_, _ = conn.Exec(rctx, "ROLLBACK")
		}
	}()
	rows, err := claim(ctx, conn.Conn(), limit)
	if err != nil {
		return res, err
	}
	res.claimed = len(rows)
	if len(rows) == 0 {
		if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
			return res, fmt.Errorf("outbox: commit: %w", err)
		}
		return res, nil
	}
	r.metrics.batch(len(rows))
	var m marks
	valid := rows[:0:0]
	for _, rw := range rows {
		if err := rw.decode(); err != nil {
			r.giveUp(ctx, &m, rw, -1, 0, classInvalid, err.Error())
			continue
		}
		valid = append(valid, rw)
	}
	r.publish(ctx, valid, &m, &res)
	if err := r.apply(ctx, conn.Conn(), &m); err != nil {
		// QStash has the jobs, the rows stay pending: they are published
		// again under the same deduplication ids (see the package doc).
		return res, err
	}
	res.published = m.sentJobs
	res.deduplicated = m.dedupJobs
	res.failed = m.failedJobs
	return res, nil
}

// syncRounds makes rounds wait for their commit to be flushed, and
// bitmapRounds lets the claim use a bitmap scan: the benchmark flips them
// to measure what the round's settings save.
var syncRounds, bitmapRounds = false, false

// roundSettings is the statement that sets the round transaction's
// settings (see claim).
func roundSettings() string {
	commit, bitmap := "off", "off"
	if syncRounds {
		commit = "on"
	}
	if bitmapRounds {
		bitmap = "on"
	}
	return "SELECT set_config('synchronous_commit', '" + commit + "', true), set_config('enable_bitmapscan', '" + bitmap + "', true)"
}

// claim begins the round's transaction and claims its rows, in one round
// trip.
//
// The claim must not use a bitmap scan (enable_bitmapscan off). Every row
// marked sent (or deleted) leaves a dead entry in the pending index until
// VACUUM; a plain index scan marks each dead entry it meets as such
// (PostgreSQL's "killed" index tuples) and later scans skip it without
// reading the row, but a bitmap scan — which the planner picks for a small
// LIMIT — neither skips nor marks them, so every claim re-reads every row
// sent since the last VACUUM: 10 ms per claim at 30,000 sent rows, where the
// plain scan takes 0.5 ms (docs/benchmarks.md).
//
// The transaction commits asynchronously (synchronous_commit off:
// COMMIT returns before its WAL record is flushed), so the relay does not
// wait for a disk flush per round. A database crash can lose the last
// rounds' marks; their rows are then pending again and republished under
// the same deduplication ids — the case of a relay dying before its
// commit, which the guarantee already covers (see the package doc).
func claim(ctx context.Context, conn *pgx.Conn, limit int) ([]row, error) {
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(roundSettings())
	b.Queue(claimSQL, limit)
	br := conn.SendBatch(ctx, b)
	for range 2 {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return nil, fmt.Errorf("outbox: begin: %w", err)
		}
	}
	rs, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	rows, err := pgx.CollectRows(rs, func(s pgx.CollectableRow) (row, error) {
		var rw row
		err := s.Scan(&rw.id, &rw.kind, &rw.body, &rw.options, &rw.jobs, &rw.createdAt, &rw.attempts)
		return rw, err
	})
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	return rows, nil
}

// decode builds the row's messages.
func (rw *row) decode() error {
	if rw.jobs == "" {
		m, err := decodeJob(rw.kind, rw.body, rw.options, rw.createdAt)
		if err != nil {
			return err
		}
		rw.msgs = []jobs.Message{m}
		return nil
	}
	var stored []storedJob
	if err := json.Unmarshal([]byte(rw.jobs), &stored); err != nil {
		return fmt.Errorf("stored jobs do not decode: %w", err)
	}
	if len(stored) == 0 {
		return errors.New("the row holds no job")
	}
	msgs := make([]jobs.Message, len(stored))
	for i, sj := range stored {
		m, err := decodeJob(sj.Kind, sj.Body, sj.Options, rw.createdAt)
		if err != nil {
			return fmt.Errorf("job %d: %w", i, err)
		}
		msgs[i] = m
	}
	rw.msgs = msgs
	return nil
}

// label names the row's job for logs and metrics: its kind, or its first
// job's for a multi-job row (the kind of the job at index job when known).
func (rw *row) label(job int) string {
	switch {
	case job >= 0 && job < len(rw.msgs):
		return rw.msgs[job].Kind
	case rw.kind != "":
		return rw.kind
	case len(rw.msgs) > 0:
		return rw.msgs[0].Kind
	}
	return ""
}

// jobCount is the number of jobs the row holds, as far as it decoded.
func (rw *row) jobCount() int { return max(len(rw.msgs), 1) }

// decodeJob builds one stored job's message. A delay becomes a not-before
// counted from the enqueuing transaction, so time spent in the outbox (an
// outage) does not stretch it; rounded up, so it is never shorter than
// asked.
func decodeJob(kind, body string, options []byte, createdAt time.Time) (jobs.Message, error) {
	m := jobs.Message{Kind: kind, Body: body}
	if err := json.Unmarshal(options, &m.Options); err != nil {
		return m, fmt.Errorf("stored options do not decode: %w", err)
	}
	if o := &m.Options; o.Delay > 0 {
		nb := createdAt.Add(o.Delay)
		if t := nb.Truncate(time.Second); t.Before(nb) {
			nb = t.Add(time.Second)
		}
		o.NotBefore, o.Delay = nb, 0
	}
	return m, m.Validate()
}

// publish sends rows, batched where it pays, and fills m and res.
func (r *Relay) publish(ctx context.Context, rows []row, m *marks, res *roundResult) {
	var single []row
	var batch []row
	for _, rw := range rows {
		if rw.attempts >= isolateAfter {
			single = append(single, rw)
		} else {
			batch = append(batch, rw)
		}
	}
	if len(batch) == 1 || r.cfg.BatchSize == 1 {
		single, batch = append(batch, single...), nil
	}
	if len(batch) > 0 {
		var msgs []jobs.Message
		for _, rw := range batch {
			msgs = append(msgs, rw.msgs...)
		}
		results, err := r.pub.PublishMessages(ctx, msgs)
		switch {
		case err == nil:
			for _, rw := range batch {
				r.sent(m, rw, results[:len(rw.msgs)])
				results = results[len(rw.msgs):]
			}
		case results != nil:
			// Accepted, but some items failed, without a status of their
			// own: publish those rows alone to learn why (their jobs QStash
			// took are deduplicated then).
			var retry []row
			for _, rw := range batch {
				own := results[:len(rw.msgs)]
				results = results[len(rw.msgs):]
				if allAccepted(own) {
					r.sent(m, rw, own)
				} else {
					retry = append(retry, rw)
				}
			}
			single = append(retry, single...)
		default:
			class, status, retryAfter := classify(err)
			r.metrics.publishError(class)
			if class != classRejected && class != classInvalid {
				for _, rw := range batch {
					m.attemptedIDs = append(m.attemptedIDs, rw.id)
					m.attemptReasons = append(m.attemptReasons, reason(status, err))
				}
				r.down(ctx, res, err, class, status, retryAfter, len(batch))
				return
			}
			// The whole call was refused (one bad item can do that): find
			// the culprits one by one, each getting its own answer.
			single = append(batch, single...)
		}
	}
	for i, rw := range single {
		results, job, err := r.publishAlone(ctx, rw)
		if err == nil {
			r.sent(m, rw, results)
			continue
		}
		class, status, retryAfter := classify(err)
		r.metrics.publishError(class)
		why := reason(status, err)
		if len(rw.msgs) > 1 {
			why = bound(fmt.Sprintf("job %d of %d (%s): %s", job, len(rw.msgs), jobLabel(rw.label(job)), why))
		}
		switch class {
		case classRejected, classInvalid:
			r.giveUp(ctx, m, rw, job, status, class, why)
		default:
			// Down, or this row is poison: it waits its own backoff, the
			// rest of the round is left for later, and the relay backs off.
			m.deferredIDs = append(m.deferredIDs, rw.id)
			m.deferReasons = append(m.deferReasons, why)
			m.deferDelays = append(m.deferDelays, max(r.backoff(rw.attempts+1), min(retryAfter, MaxRetryAfter)))
			r.down(ctx, res, err, class, status, retryAfter, len(single)-i)
			return
		}
	}
	if len(m.sentIDs) > 0 {
		r.available()
	}
}

func allAccepted(results []jobs.EnqueueResult) bool {
	for _, res := range results {
		if res.MessageID == "" {
			return false
		}
	}
	return true
}

// publishAlone publishes one row's jobs without other rows': a one-job row
// in one call, a multi-job row in one batch call, then job by job for what
// that call did not place (to get each refusal's own answer). On an error
// it returns the index of the job it is about.
func (r *Relay) publishAlone(ctx context.Context, rw row) ([]jobs.EnqueueResult, int, error) {
	if len(rw.msgs) == 1 {
		res, err := r.pub.PublishMessage(ctx, rw.msgs[0])
		return []jobs.EnqueueResult{res}, 0, err
	}
	results, err := r.pub.PublishMessages(ctx, rw.msgs)
	if err == nil {
		return results, 0, nil
	}
	if results == nil {
		class, _, _ := classify(err)
		if class != classRejected && class != classInvalid {
			return nil, 0, err
		}
		r.metrics.publishError(class)
		results = make([]jobs.EnqueueResult, len(rw.msgs))
	}
	for i := range results {
		if results[i].MessageID != "" {
			continue
		}
		res, err := r.pub.PublishMessage(ctx, rw.msgs[i])
		if err != nil {
			return nil, i, err
		}
		results[i] = res
	}
	return results, 0, nil
}

// sent records that QStash accepted every job of rw; results are its jobs'
// answers, in order. A multi-job row keeps its jobs' message ids joined by
// commas, and counts as deduplicated if any of its jobs was.
func (r *Relay) sent(m *marks, rw row, results []jobs.EnqueueResult) {
	now := r.cfg.Now()
	ids := make([]string, len(results))
	dedup := false
	for i, res := range results {
		ids[i] = res.MessageID
		dedup = dedup || res.Deduplicated
		m.sentJobs++
		if res.Deduplicated {
			m.dedupJobs++
		}
		r.metrics.published1(rw.msgs[i].Kind, res.Deduplicated, now.Sub(rw.createdAt))
	}
	m.sentIDs = append(m.sentIDs, rw.id)
	m.sentMsgIDs = append(m.sentMsgIDs, strings.Join(ids, ","))
	m.sentDedup = append(m.sentDedup, dedup)
}

// giveUp marks rw failed; job is the index of the job refused (-1: the row
// as a whole).
func (r *Relay) giveUp(ctx context.Context, m *marks, rw row, job, status int, class, why string) {
	m.failedIDs = append(m.failedIDs, rw.id)
	m.reasons = append(m.reasons, why)
	m.failedJobs += rw.jobCount()
	r.metrics.gaveUp1(rw.label(job))
	if class == classInvalid {
		r.metrics.publishError(classInvalid)
	}
	attrs := []slog.Attr{slog.String("row_id", rw.id), slog.String("job", jobLabel(rw.label(job)))}
	if rw.jobs != "" {
		attrs = append(attrs, slog.Int("jobs_in_row", len(rw.msgs)))
	}
	attrs = append(attrs, slog.String("class", class), slog.Int("status", status), slog.Int("attempts", rw.attempts+1), slog.String("reason", why))
	r.log.LogAttrs(ctx, slog.LevelError, "outbox: job given up; the row is kept as failed", attrs...)
}

// down records that QStash could not take jobs this round.
func (r *Relay) down(ctx context.Context, res *roundResult, err error, class string, status int, retryAfter time.Duration, rows int) {
	wait := r.unavailable(retryAfter)
	res.unavailable = &UnavailableError{RetryAfter: wait, Err: err}
	level := slog.LevelWarn
	if class == classConfig {
		level = slog.LevelError // a token or URL problem will not fix itself
	}
	r.log.LogAttrs(ctx, level, "outbox: qstash unavailable; rows stay pending", slog.String("class", class),
		slog.Int("status", status), slog.Int("rows", rows), slog.Duration("retry_in", wait), slog.String("error", err.Error()))
}

// classify sorts a publish error: class, QStash's status (0 for none) and
// its Retry-After.
func classify(err error) (class string, status int, retryAfter time.Duration) {
	var pe *jobs.PublishError
	if !errors.As(err, &pe) {
		if errors.Is(err, jobs.ErrInvalidOption) || errors.Is(err, jobs.ErrInvalidName) {
			return classInvalid, 0, 0
		}
		return classNetwork, 0, 0
	}
	switch s := pe.StatusCode; {
	case s == 0:
		return classNetwork, 0, 0
	case s == http.StatusTooManyRequests:
		return classThrottled, s, pe.RetryAfter
	case s >= 500:
		return classServer, s, pe.RetryAfter
	case s == http.StatusUnauthorized, s == http.StatusForbidden, s == http.StatusNotFound,
		s == http.StatusMethodNotAllowed, s == http.StatusRequestTimeout:
		// Never the row's fault with this client (destinations are URLs,
		// queues are created on use): a token, URL or proxy problem.
		return classConfig, s, pe.RetryAfter
	case s >= 400:
		return classRejected, s, 0
	}
	return classServer, pe.StatusCode, 0
}

// reason is the text stored with a row: the status and QStash's message,
// bounded. It holds no token (the client never puts it in errors).
func reason(status int, err error) string {
	s := err.Error()
	if status != 0 {
		s = fmt.Sprintf("qstash answered %d: %s", status, s)
	}
	return bound(s)
}

func bound(s string) string {
	if len(s) > maxReasonBytes {
		s = s[:maxReasonBytes]
	}
	return s
}

// apply writes the marks and commits, in one round trip.
func (r *Relay) apply(ctx context.Context, conn *pgx.Conn, m *marks) error {
	b := &pgx.Batch{}
	if len(m.sentIDs) > 0 {
		b.Queue(`UPDATE jobworker_outbox o
			SET state = 'sent', finished_at = now(), message_id = u.mid, deduplicated = u.dedup,
			    attempts = o.attempts + 1, last_error = NULL
			FROM unnest($1::text[], $2::text[], $3::bool[]) AS u(id, mid, dedup)
			WHERE o.id = u.id::uuid`, m.sentIDs, m.sentMsgIDs, m.sentDedup)
	}
	if len(m.failedIDs) > 0 {
		b.Queue(`UPDATE jobworker_outbox o
			SET state = 'failed', finished_at = now(), attempts = o.attempts + 1, last_error = u.reason
			FROM unnest($1::text[], $2::text[]) AS u(id, reason)
			WHERE o.id = u.id::uuid`, m.failedIDs, m.reasons)
	}
	if len(m.attemptedIDs) > 0 {
		b.Queue(`UPDATE jobworker_outbox o
			SET attempts = o.attempts + 1, last_error = u.reason
			FROM unnest($1::text[], $2::text[]) AS u(id, reason)
			WHERE o.id = u.id::uuid`, m.attemptedIDs, m.attemptReasons)
	}
	if len(m.deferredIDs) > 0 {
		ms := make([]int64, len(m.deferDelays))
		for i, d := range m.deferDelays {
			ms[i] = d.Milliseconds()
		}
		b.Queue(`UPDATE jobworker_outbox o
			SET attempts = o.attempts + 1, last_error = u.reason,
			    available_at = now() + u.ms * interval '1 millisecond'
			FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(id, reason, ms)
			WHERE o.id = u.id::uuid`, m.deferredIDs, m.deferReasons, ms)
	}
	b.Queue("COMMIT")
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("outbox: record outcome and commit: %w", err)
	}
	return nil
}
