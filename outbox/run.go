package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/digis/jobworker/jobs"
)

// cleanupChunk bounds one DELETE of expired sent rows, so cleanup never
// holds many locks or one long statement.
const cleanupChunk = 5000

// listenerAppName marks the LISTEN connection in pg_stat_activity.
const listenerAppName = "jobworker-outbox-listener"

// run is one Start..Stop of a relay.
type run struct {
	stopping     chan struct{} // closed by Stop: finish the round in flight, start none
	cancel       context.CancelFunc
	cancelListen context.CancelFunc // the listener has no work to finish
	done         chan struct{}
}

// Start runs the relay in the background until Stop: it LISTENs for
// Enqueue's notifications, sweeps every SweepInterval, publishes what is
// due in rounds of up to BatchSize rows (Concurrency at once), backs off
// while QStash is unavailable, and deletes expired sent rows. Cancelling
// ctx stops it at once, like a Stop whose context is done. Start returns
// ErrStarted if the relay is already running.
func (r *Relay) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running != nil {
		return ErrStarted
	}
	workCtx, cancel := context.WithCancel(ctx)
	listenCtx, cancelListen := context.WithCancel(workCtx)
	ru := &run{stopping: make(chan struct{}), cancel: cancel, cancelListen: cancelListen, done: make(chan struct{})}
	r.running = ru
	var wg sync.WaitGroup
	wg.Go(func() { r.listen(listenCtx, ru) })
	for i := range r.cfg.Concurrency {
		wg.Go(func() { r.drain(workCtx, ru, i == 0) })
	}
	go func() { wg.Wait(); close(ru.done) }()
	return nil
}

// Stop stops a started relay gracefully: rounds in flight finish — their
// publish call and the recording of its outcome — and no new round starts.
// If ctx ends first, the rounds are cancelled (their rows stay pending and
// are published again later, under the same deduplication ids) and Stop
// returns ctx's error once everything has exited. Stop on a relay that is
// not running returns nil.
func (r *Relay) Stop(ctx context.Context) error {
	r.mu.Lock()
	ru := r.running
	r.running = nil
	r.mu.Unlock()
	if ru == nil {
		return nil
	}
	close(ru.stopping)
	ru.cancelListen()
	select {
	case <-ru.done:
		ru.cancel()
		return nil
	case <-ctx.Done():
		ru.cancel()
		<-ru.done
		return ctx.Err()
	}
}

// sleep waits d; false when the run is stopping or cancelled.
func sleep(ctx context.Context, ru *run, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ru.stopping:
	case <-ctx.Done():
	}
	return false
}

func (ru *run) stopped(ctx context.Context) bool {
	select {
	case <-ru.stopping:
		return true
	case <-ctx.Done():
		return true
	default:
		return false
	}
}

// drain runs rounds until nothing is due, then waits for a notification or
// the sweep. The leader also does the housekeeping.
func (r *Relay) drain(ctx context.Context, ru *run, leader bool) {
	sweep := time.NewTicker(r.cfg.SweepInterval)
	defer sweep.Stop()
	storeFails := 0
	for {
		wake := r.wake.C() // before looking: a NOTIFY from now on is not lost
		for !ru.stopped(ctx) {
			res, err := r.round(ctx, r.cfg.BatchSize)
			if leader {
				r.housekeep(ctx)
			}
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				storeFails++
				r.metrics.storeError()
				wait := r.backoff(storeFails)
				r.log.LogAttrs(ctx, slog.LevelWarn, "outbox: relay round failed on the database",
					slog.Duration("retry_in", wait), slog.String("error", err.Error()))
				if !sleep(ctx, ru, wait) {
					return
				}
				continue
			}
			storeFails = 0
			if res.unavailable != nil {
				if !sleep(ctx, ru, res.unavailable.RetryAfter) {
					return
				}
				continue
			}
			if res.claimed < r.cfg.BatchSize {
				break
			}
		}
		select {
		case <-ru.stopping:
			return
		case <-ctx.Done():
			return
		case <-wake:
		case <-sweep.C:
		}
	}
}

// listen keeps a LISTEN connection up, turning each notification into a
// wake-up, and reconnects with backoff when it is lost; the sweep covers
// the gap.
func (r *Relay) listen(ctx context.Context, ru *run) {
	cfg := r.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = listenerAppName
	fails := 0
	for {
		err := r.listenOnce(ctx, cfg, func() { fails = 0 })
		r.metrics.setListening(false)
		if ru.stopped(ctx) {
			return
		}
		fails++
		wait := r.backoff(fails)
		r.log.LogAttrs(ctx, slog.LevelWarn, "outbox: LISTEN connection lost; sweeping until it is back",
			slog.Duration("retry_in", wait), slog.Duration("sweep_interval", r.cfg.SweepInterval), slog.String("error", err.Error()))
		if !sleep(ctx, ru, wait) {
			return
		}
	}
}

func (r *Relay) listenOnce(ctx context.Context, cfg *pgx.ConnConfig, up func()) error {
	// Its own connection, not the pool's: a LISTENing session must not be
	// handed to other work, and it must not take a pool slot for ever.
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return err
	}
	up()
	r.metrics.setListening(true)
	r.wake.Notify() // rows committed while nobody listened
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		r.wake.Notify()
	}
}

// housekeep deletes expired sent rows and refreshes the gauges when due.
func (r *Relay) housekeep(ctx context.Context) {
	now := r.cfg.Now()
	r.mu.Lock()
	clean := now.Sub(r.lastCleanup) >= r.cfg.CleanupInterval
	if clean {
		r.lastCleanup = now
	}
	stats := r.metrics != nil && now.Sub(r.lastStats) >= r.cfg.MetricsInterval
	if stats {
		r.lastStats = now
	}
	r.mu.Unlock()
	if clean {
		if _, err := r.cleanup(ctx, now); err != nil && ctx.Err() == nil {
			r.metrics.storeError()
			r.log.LogAttrs(ctx, slog.LevelWarn, "outbox: cleanup failed", slog.String("error", err.Error()))
		}
	}
	if stats {
		if err := r.refreshStats(ctx); err != nil && ctx.Err() == nil {
			r.metrics.storeError()
			r.log.LogAttrs(ctx, slog.LevelWarn, "outbox: reading outbox depth failed", slog.String("error", err.Error()))
		}
	}
}

// cleanup deletes sent rows older than the retention, in chunks. Failed
// rows are never deleted here: they wait for an operator.
func (r *Relay) cleanup(ctx context.Context, now time.Time) (int64, error) {
	cutoff := now.Add(-r.cfg.Retention)
	var total int64
	for {
		tag, err := r.pool.Exec(ctx, `DELETE FROM jobworker_outbox WHERE id IN (
			SELECT id FROM jobworker_outbox WHERE state = 'sent' AND finished_at < $1 LIMIT $2)`, cutoff, cleanupChunk)
		if err != nil {
			return total, err
		}
		total += tag.RowsAffected()
		r.metrics.cleaned1(tag.RowsAffected())
		if tag.RowsAffected() < cleanupChunk {
			return total, nil
		}
	}
}

func (r *Relay) refreshStats(ctx context.Context) error {
	var pending, failed int64
	var oldest float64
	err := r.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM jobworker_outbox WHERE state = 'pending'),
		(SELECT count(*) FROM jobworker_outbox WHERE state = 'failed'),
		COALESCE((SELECT EXTRACT(EPOCH FROM now() - min(created_at)) FROM jobworker_outbox WHERE state = 'pending'), 0)::float8`).
		Scan(&pending, &failed, &oldest)
	if err != nil {
		return err
	}
	r.metrics.stats(pending, failed, time.Duration(oldest*float64(time.Second)))
	return nil
}

// Result is what a RunOnce call did.
type Result struct {
	// Published counts jobs QStash accepted, Deduplicated included (an
	// EnqueueBatch row counts its jobs).
	Published int `json:"published"`
	// Deduplicated counts jobs QStash answered as duplicates (published
	// before, e.g. by a relay that died before recording it).
	Deduplicated int `json:"deduplicated"`
	// Failed counts the jobs of the rows given up (refused by QStash or
	// invalid).
	Failed int `json:"failed"`
	// Rounds is the number of claim-publish-record rounds.
	Rounds int `json:"rounds"`
	// More is true when a bound (RunOnceMaxRows, RunOnceMaxDuration)
	// stopped the call while rows may still be due.
	More bool `json:"more"`
}

// RunOnce publishes what is due now and returns: for serverless
// deployments, where a QStash schedule calls Handler every minute or so. It
// runs rounds until nothing is due, or RunOnceMaxRows rows were claimed, or
// RunOnceMaxDuration has passed (a round in flight finishes), then deletes
// expired sent rows and refreshes the gauges. When QStash is unavailable it
// stops at once with an *UnavailableError (errors.Is ErrUnavailable); the
// rows stay pending for the next call. Safe to run concurrently with other
// RunOnce calls and started relays.
func (r *Relay) RunOnce(ctx context.Context) (Result, error) {
	var res Result
	deadline := r.cfg.Now().Add(r.cfg.RunOnceMaxDuration)
	claimed := 0
	for {
		if claimed >= r.cfg.RunOnceMaxRows || !r.cfg.Now().Before(deadline) {
			res.More = true
			break
		}
		limit := min(r.cfg.BatchSize, r.cfg.RunOnceMaxRows-claimed)
		rr, err := r.round(ctx, limit)
		if err != nil {
			r.metrics.storeError()
			return res, err
		}
		res.Rounds++
		claimed += rr.claimed
		res.Published += rr.published
		res.Deduplicated += rr.deduplicated
		res.Failed += rr.failed
		if rr.unavailable != nil {
			return res, rr.unavailable
		}
		if rr.claimed < limit {
			break
		}
	}
	now := r.cfg.Now()
	if _, err := r.cleanup(ctx, now); err != nil {
		r.metrics.storeError()
		return res, err
	}
	if r.metrics != nil {
		if err := r.refreshStats(ctx); err != nil {
			r.metrics.storeError()
			return res, err
		}
	}
	return res, nil
}

// Handler serves RunOnce over HTTP for a QStash schedule: POST runs it and
// answers 200 with the Result as JSON; 500 with Retry-After when QStash is
// unavailable, 500 on a database error (the body names the kind of error,
// never its text). Other methods get 405.
//
// Security: anyone who can call this route makes the relay publish — not
// forge jobs, but it costs database and QStash work. Mount it only behind
// QStash signature verification (package webhooks), like the job routes.
func (r *Relay) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		res, err := r.RunOnce(req.Context())
		body := struct {
			Result
			Error string `json:"error,omitempty"`
		}{Result: res}
		status := http.StatusOK
		if err != nil {
			var ue *UnavailableError
			if errors.As(err, &ue) {
				// 500 with a Retry-After makes the QStash schedule that
				// called this route retry it when QStash itself is back.
				body.Error = "qstash unavailable"
				status = http.StatusInternalServerError
				if ue.RetryAfter > 0 {
					w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(min(ue.RetryAfter, jobs.MaxRetryAfter).Seconds())), 10))
				}
			} else {
				body.Error = "database error"
				status = http.StatusInternalServerError
				r.log.LogAttrs(req.Context(), slog.LevelError, "outbox: relay run failed", slog.String("error", err.Error()))
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	})
}
