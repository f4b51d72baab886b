package webhooks

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/idempotency"
	"github.com/digis/jobworker/internal/problem"
	"github.com/digis/jobworker/jobs"
)

// HeaderMessageID is the id QStash keeps across every retry of a message.
const HeaderMessageID = "Upstash-Message-Id"

// JobsConfig configures the handler that runs QStash job deliveries:
//
//	verify (VerifyQStash, before it) → dedupe on Upstash-Message-Id → run → answer
//
// Every answer is decided in one place (see answer) so that it steers QStash
// correctly:
//
//	handler succeeded, or the message already did    → 200 (never 409: QStash would retry a finished job into the DLQ)
//	same message running elsewhere                   → 409 + Retry-After (QStash retries later)
//	handler error (lease released)                   → 500, + Retry-After if the handler asked (jobs.RetryAfter)
//	panic in the handler (lease released)            → 500, stack in the log
//	permanent (bad payload, unknown job, jobs.Permanent) → 489 + Upstash-NonRetryable-Error: true (DLQ at once)
//	Redis unavailable                                → 503 + Retry-After; nothing runs
type JobsConfig struct {
	// Registry holds the job handlers. Required.
	Registry *jobs.Registry
	// Store dedupes deliveries by message id. Required. Its ResultTTL must
	// outlive QStash's retry horizon for the retries configured (about
	// 33 min with the default 3 retries, 31 h with 5).
	Store *idempotency.Store
	// InProgressRetryAfter is the least Retry-After sent while the same
	// message runs elsewhere; the other holder's remaining lease time is
	// sent when longer, so QStash's retries are not spent before a dead
	// holder's lease lapses. Defaults to 10s.
	InProgressRetryAfter time.Duration
	// UnavailableRetryAfter is the Retry-After sent when Redis is
	// unreachable. Defaults to 5s.
	UnavailableRetryAfter time.Duration
	// Logger receives one line per failed, retried or duplicate delivery.
	// Defaults to discarding.
	Logger *slog.Logger
	// Registerer receives jobworker_deliveries_total{job,outcome},
	// jobworker_delivery_duration_seconds{job} and
	// jobworker_delivery_redeliveries_total{job}. Defaults to nil: none.
	Registerer prometheus.Registerer
}

// Delivery outcomes, the values of the outcome label.
const (
	outcomeDone        = "done"
	outcomeDuplicate   = "duplicate"
	outcomeInProgress  = "in_progress"
	outcomeRetry       = "retry"
	outcomePanic       = "panic"
	outcomePermanent   = "permanent"
	outcomeUnknownJob  = "unknown_job"
	outcomeUnavailable = "unavailable"
	outcomeUnverified  = "unverified"
)

type jobsHandler struct {
	cfg      JobsConfig
	log      *slog.Logger
	total    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	redeliv  *prometheus.CounterVec
	// perJob caches the children of the common path per job label
	// (registered names and "_unknown", so bounded): WithLabelValues
	// hashes the labels and takes a lock on every call.
	perJob sync.Map // label → *jobMetrics
}

type jobMetrics struct {
	done, duplicate prometheus.Counter
	duration        prometheus.Observer
	redeliv         prometheus.Counter
}

func (h *jobsHandler) metricsFor(label string) *jobMetrics {
	if m, ok := h.perJob.Load(label); ok {
		return m.(*jobMetrics)
	}
	m, _ := h.perJob.LoadOrStore(label, &jobMetrics{
		done:      h.total.WithLabelValues(label, outcomeDone),
		duplicate: h.total.WithLabelValues(label, outcomeDuplicate),
		duration:  h.duration.WithLabelValues(label),
		redeliv:   h.redeliv.WithLabelValues(label),
	})
	return m.(*jobMetrics)
}

func (m *jobMetrics) count(h *jobsHandler, label, outcome string) {
	switch outcome {
	case outcomeDone:
		m.done.Inc()
	case outcomeDuplicate:
		m.duplicate.Inc()
	default:
		h.total.WithLabelValues(label, outcome).Inc()
	}
}

// Handler validates the configuration and returns the POST /jobs/:name
// handler. Mount it behind VerifyQStash; a request that did not pass it is
// refused (401), so a wiring mistake fails closed.
func (cfg JobsConfig) Handler() (echo.HandlerFunc, error) {
	if cfg.Registry == nil || cfg.Store == nil {
		return nil, errors.New("webhooks: JobsConfig needs Registry and Store")
	}
	if cfg.InProgressRetryAfter == 0 {
		cfg.InProgressRetryAfter = 10 * time.Second
	}
	if cfg.UnavailableRetryAfter == 0 {
		cfg.UnavailableRetryAfter = 5 * time.Second
	}
	if cfg.InProgressRetryAfter < 0 || cfg.UnavailableRetryAfter < 0 {
		return nil, errors.New("webhooks: JobsConfig retry-after durations must not be negative")
	}
	h := &jobsHandler{
		cfg: cfg,
		log: discardIfNil(cfg.Logger),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_deliveries_total",
			Help: "QStash job deliveries by job and outcome (done, duplicate, in_progress, retry, panic, permanent, unknown_job, unavailable, unverified).",
		}, []string{"job", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "jobworker_delivery_duration_seconds",
			Help:    "Time from a verified delivery to its answer, dedupe included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"job"}),
		redeliv: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_delivery_redeliveries_total",
			Help: "Deliveries QStash marked as retries (Upstash-Retried > 0), by job.",
		}, []string{"job"}),
	}
	if reg := cfg.Registerer; reg != nil {
		var err error
		if h.total, err = register(reg, h.total); err != nil {
			return nil, err
		}
		if h.duration, err = register(reg, h.duration); err != nil {
			return nil, err
		}
		if h.redeliv, err = register(reg, h.redeliv); err != nil {
			return nil, err
		}
	}
	return h.serve, nil
}

// result is what happened to one delivery; answer turns it into HTTP.
type result struct {
	outcome    string
	err        error         // the handler's error for retry/panic/permanent
	retryAfter time.Duration // in_progress: when the other holder's lease ends at the latest
}

func (h *jobsHandler) serve(c echo.Context) error {
	start := time.Now()
	name := c.Param("name")
	label := name
	_, known := h.cfg.Registry.Timeout(name)
	if !known {
		label = "_unknown" // bounded label values
	}
	res, delivery := h.run(c, name, known)
	m := h.metricsFor(label)
	m.count(h, label, res.outcome)
	m.duration.Observe(time.Since(start).Seconds())
	if delivery.Retried > 0 {
		m.redeliv.Inc()
	}
	h.logResult(c, name, delivery, res)
	return h.answer(c, res)
}

func (h *jobsHandler) run(c echo.Context, name string, known bool) (result, jobs.Delivery) {
	req := c.Request()
	d := jobs.DeliveryFromHeader(req.Header)
	if _, ok := QStashClaimsFrom(c); !ok {
		return result{outcome: outcomeUnverified}, d
	}
	if !known {
		return result{outcome: outcomeUnknownJob, err: jobs.Permanent(jobs.ErrUnknownJob)}, d
	}
	if d.MessageID == "" || len(d.MessageID) > 256 {
		// Every QStash delivery carries one; without it nothing can dedupe.
		return result{outcome: outcomePermanent, err: jobs.Permanent(errors.New("missing or oversized Upstash-Message-Id"))}, d
	}
	body, err := io.ReadAll(req.Body) // already read and capped by VerifyQStash
	if err != nil {
		return result{outcome: outcomeRetry, err: err}, d
	}

	// The job runs to completion even if QStash hangs up (its timeout) or
	// the server begins shutting down: finishing and recording it is what
	// stops the retry from running it again. The job's own timeout bounds it.
	ctx := context.WithoutCancel(req.Context())
	acq, err := h.cfg.Store.Acquire(ctx, d.MessageID, "")
	switch {
	case err != nil:
		// ErrUnavailable, or a fingerprint mismatch that cannot happen with
		// an empty fingerprint: either way, run nothing and let QStash retry.
		return result{outcome: outcomeUnavailable, err: err}, d
	case acq.Outcome == idempotency.Done:
		return result{outcome: outcomeDuplicate}, d
	case acq.Outcome == idempotency.InProgress:
		// Not before the holder's lease could have lapsed: if it died, the
		// retry finds the key free; if it lives, it renews and we answer again.
		return result{outcome: outcomeInProgress, retryAfter: max(h.cfg.InProgressRetryAfter, acq.TTL)}, d
	}

	lease := acq.Lease
	runCtx, stop := lease.KeepAlive(ctx)
	runErr := h.cfg.Registry.Dispatch(runCtx, name, d, body)
	lost := stop()
	if runErr != nil {
		// Free the key so QStash's retry (or a DLQ retry after a permanent
		// failure) runs the job again.
		if err := lease.Release(ctx); err != nil && !errors.Is(err, idempotency.ErrLeaseLost) {
			h.log.Warn("releasing delivery lease failed; the retry waits for the lease to expire",
				"job", name, "message_id", d.MessageID, "error", err.Error())
		}
		var pe *jobs.PanicError
		switch {
		case errors.As(runErr, &pe):
			return result{outcome: outcomePanic, err: runErr}, d
		case jobs.IsPermanent(runErr):
			return result{outcome: outcomePermanent, err: runErr}, d
		default:
			return result{outcome: outcomeRetry, err: runErr}, d
		}
	}
	if err := lease.Complete(ctx, nil); err != nil {
		// The work is done; answering 200 stops QStash's retries, so a lost
		// done marker only matters for a duplicate delivery, which the
		// handler's own unique constraints must then absorb.
		h.log.Error("job succeeded but its done marker was not stored",
			"job", name, "message_id", d.MessageID, "error", err.Error(), "lease_lost", lost != nil)
	}
	return result{outcome: outcomeDone}, d
}

// answer is the one place a delivery result becomes an HTTP answer.
func (h *jobsHandler) answer(c echo.Context, r result) error {
	hdr := c.Response().Header()
	switch r.outcome {
	case outcomeDone:
		return c.JSONBlob(http.StatusOK, answerDone)
	case outcomeDuplicate:
		return c.JSONBlob(http.StatusOK, answerDuplicate)
	case outcomeUnverified:
		return problem.Respond(c, http.StatusUnauthorized, "")
	case outcomeInProgress:
		hdr.Set("Retry-After", seconds(r.retryAfter))
		return problem.Respond(c, http.StatusConflict, "this message is being processed by another worker")
	case outcomeUnavailable:
		hdr.Set("Retry-After", seconds(h.cfg.UnavailableRetryAfter))
		return problem.Respond(c, http.StatusServiceUnavailable, "temporarily unavailable")
	}
	status, extra := jobs.Outcome(r.err)
	for k, vs := range extra {
		for _, v := range vs {
			hdr.Add(k, v)
		}
	}
	detail := "job failed; it will be retried"
	switch r.outcome {
	case outcomeUnknownJob:
		detail = "unknown job"
	case outcomePermanent:
		detail = "job failed permanently"
		if errors.Is(r.err, jobs.ErrBadPayload) {
			detail = "bad payload"
		}
	}
	return problem.Respond(c, status, detail)
}

// The 200 bodies, encoded once.
var (
	answerDone      = []byte(`{"status":"done"}`)
	answerDuplicate = []byte(`{"status":"duplicate"}`)
)

func (h *jobsHandler) logResult(c echo.Context, name string, d jobs.Delivery, r result) {
	ctx := c.Request().Context()
	if r.outcome == outcomeDone && !h.log.Enabled(ctx, slog.LevelDebug) {
		return // the common case: no line, so build no attributes either
	}
	attrs := []any{"job", name, "message_id", d.MessageID, "retried", d.Retried, "outcome", r.outcome}
	if r.err != nil {
		attrs = append(attrs, "error", r.err.Error())
	}
	switch r.outcome {
	case outcomeDone:
		h.log.DebugContext(ctx, "job done", attrs...)
	case outcomeDuplicate, outcomeInProgress:
		h.log.InfoContext(ctx, "duplicate delivery", attrs...)
	case outcomePanic:
		var pe *jobs.PanicError
		if errors.As(r.err, &pe) {
			attrs = append(attrs, "stack", string(pe.Stack))
		}
		h.log.ErrorContext(ctx, "job panicked", attrs...)
	case outcomeUnverified:
		h.log.ErrorContext(ctx, "delivery reached the jobs handler without QStash verification; mount it behind VerifyQStash", attrs...)
	default:
		h.log.WarnContext(ctx, "job failed", attrs...)
	}
}

// seconds renders a Retry-After value: whole seconds, rounded up, at least 1.
func seconds(d time.Duration) string {
	s := int64(math.Ceil(d.Seconds()))
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(s, 10)
}
