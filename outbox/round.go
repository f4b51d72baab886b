package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
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
	kind      string
	body      string
	options   []byte
	createdAt time.Time
	attempts  int
	msg       jobs.Message
}

// roundResult is what one round did.
type roundResult struct {
	claimed      int
	published    int // accepted by QStash, deduplicated included
	deduplicated int
	failed       int // given up
	// unavailable is set when QStash could not take jobs: the relay should
	// wait its RetryAfter before the next round.
	unavailable *UnavailableError
}

// marks are the row updates one round writes, in one round trip.
type marks struct {
	sentIDs, sentMsgIDs []string
	sentDedup           []bool
	failedIDs, reasons  []string
	// attempted: tried while QStash was unavailable; stay due.
	attemptedIDs, attemptReasons []string
	// deferred: tried alone and refused for now; due again after a backoff.
	deferredIDs, deferReasons []string
	deferDelays               []time.Duration
}

const claimSQL = `
SELECT id::text, kind, body, options::text, created_at, attempts
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
func (r *Relay) round(ctx context.Context, limit int) (res roundResult, err error) {
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("outbox: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	rows, err := claim(ctx, tx, limit)
	if err != nil {
		return res, err
	}
	res.claimed = len(rows)
	if len(rows) == 0 {
		return res, tx.Commit(ctx)
	}
	r.metrics.batch(len(rows))
	var m marks
	valid := rows[:0:0]
	for _, rw := range rows {
		if err := rw.decode(); err != nil {
			r.giveUp(ctx, &m, rw, 0, classInvalid, err.Error())
			continue
		}
		valid = append(valid, rw)
	}
	r.publish(ctx, valid, &m, &res)
	if err := r.apply(ctx, tx, &m); err != nil {
		return res, err
	}
	if err := tx.Commit(ctx); err != nil {
		// QStash has the jobs, the rows stay pending: they are published
		// again under the same deduplication ids (see the package doc).
		return res, fmt.Errorf("outbox: commit: %w", err)
	}
	res.published = len(m.sentIDs)
	res.failed = len(m.failedIDs)
	for _, d := range m.sentDedup {
		if d {
			res.deduplicated++
		}
	}
	return res, nil
}

func claim(ctx context.Context, tx pgx.Tx, limit int) ([]row, error) {
	rs, err := tx.Query(ctx, claimSQL, limit)
	if err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	rows, err := pgx.CollectRows(rs, func(s pgx.CollectableRow) (row, error) {
		var rw row
		err := s.Scan(&rw.id, &rw.kind, &rw.body, &rw.options, &rw.createdAt, &rw.attempts)
		return rw, err
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: claim: %w", err)
	}
	return rows, nil
}

// decode builds the row's message. A delay becomes a not-before counted
// from the enqueuing transaction, so time spent in the outbox (an outage)
// does not stretch it; rounded up, so it is never shorter than asked.
func (rw *row) decode() error {
	rw.msg = jobs.Message{Kind: rw.kind, Body: rw.body}
	if err := json.Unmarshal(rw.options, &rw.msg.Options); err != nil {
		return fmt.Errorf("stored options do not decode: %w", err)
	}
	if o := &rw.msg.Options; o.Delay > 0 {
		nb := rw.createdAt.Add(o.Delay)
		if t := nb.Truncate(time.Second); t.Before(nb) {
			nb = t.Add(time.Second)
		}
		o.NotBefore, o.Delay = nb, 0
	}
	return rw.msg.Validate()
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
		msgs := make([]jobs.Message, len(batch))
		for i, rw := range batch {
			msgs[i] = rw.msg
		}
		results, err := r.pub.PublishMessages(ctx, msgs)
		switch {
		case err == nil:
			for i, rw := range batch {
				r.sent(m, rw, results[i])
			}
		case results != nil:
			// Accepted, but some items failed, without a status of their
			// own: publish those alone to learn why.
			var retry []row
			for i, rw := range batch {
				if results[i].MessageID != "" {
					r.sent(m, rw, results[i])
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
		result, err := r.pub.PublishMessage(ctx, rw.msg)
		if err == nil {
			r.sent(m, rw, result)
			continue
		}
		class, status, retryAfter := classify(err)
		r.metrics.publishError(class)
		switch class {
		case classRejected, classInvalid:
			r.giveUp(ctx, m, rw, status, class, reason(status, err))
		default:
			// Down, or this row is poison: it waits its own backoff, the
			// rest of the round is left for later, and the relay backs off.
			m.deferredIDs = append(m.deferredIDs, rw.id)
			m.deferReasons = append(m.deferReasons, reason(status, err))
			m.deferDelays = append(m.deferDelays, max(r.backoff(rw.attempts+1), min(retryAfter, MaxRetryAfter)))
			r.down(ctx, res, err, class, status, retryAfter, len(single)-i)
			return
		}
	}
	if len(m.sentIDs) > 0 {
		r.available()
	}
}

func (r *Relay) sent(m *marks, rw row, res jobs.EnqueueResult) {
	m.sentIDs = append(m.sentIDs, rw.id)
	m.sentMsgIDs = append(m.sentMsgIDs, res.MessageID)
	m.sentDedup = append(m.sentDedup, res.Deduplicated)
	r.metrics.published1(rw.kind, res.Deduplicated, r.cfg.Now().Sub(rw.createdAt))
}

func (r *Relay) giveUp(ctx context.Context, m *marks, rw row, status int, class, why string) {
	m.failedIDs = append(m.failedIDs, rw.id)
	m.reasons = append(m.reasons, why)
	r.metrics.gaveUp1(rw.kind)
	if class == classInvalid {
		r.metrics.publishError(classInvalid)
	}
	r.log.LogAttrs(ctx, slog.LevelError, "outbox: job given up; the row is kept as failed",
		slog.String("row_id", rw.id), slog.String("job", jobLabel(rw.kind)), slog.String("class", class),
		slog.Int("status", status), slog.Int("attempts", rw.attempts+1), slog.String("reason", why))
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
	if len(s) > maxReasonBytes {
		s = s[:maxReasonBytes]
	}
	return s
}

// apply writes the marks in one round trip.
func (r *Relay) apply(ctx context.Context, tx pgx.Tx, m *marks) error {
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
	if b.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("outbox: record outcome: %w", err)
	}
	return nil
}
