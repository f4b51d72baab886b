package outbox

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/collector"

	"github.com/digis/jobworker/jobs"
)

// Publish error classes, the values of the "class" label.
const (
	classNetwork   = "network"   // no answer from QStash: retried
	classThrottled = "throttled" // 429: retried after Retry-After
	classServer    = "server"    // 5xx: retried
	classConfig    = "config"    // 401, 403, 404, 405, 408: the relay's setup, not the row: retried, logged as errors
	classRejected  = "rejected"  // any other 4xx: the row is marked failed
	classInvalid   = "invalid"   // the stored row does not decode or validate: marked failed
)

// metrics is nil-safe: a nil value records nothing.
type metrics struct {
	pending     prometheus.Gauge
	failedRows  prometheus.Gauge
	oldestAge   prometheus.Gauge
	listening   prometheus.Gauge
	listens     prometheus.Counter
	published   *prometheus.CounterVec
	gaveUp      *prometheus.CounterVec
	errors      *prometheus.CounterVec
	storeErrors prometheus.Counter
	batchSize   prometheus.Histogram
	lag         prometheus.Histogram
	cleaned     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jobworker_outbox_pending",
			Help: "Outbox rows waiting to be published (refreshed every MetricsInterval).",
		}),
		failedRows: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jobworker_outbox_failed",
			Help: "Outbox rows QStash refused for good, kept until an operator deletes them.",
		}),
		oldestAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jobworker_outbox_oldest_pending_age_seconds",
			Help: "Age of the oldest pending outbox row; 0 when none is pending.",
		}),
		listening: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jobworker_outbox_listening",
			Help: "1 while the relay's LISTEN connection is up, else 0 (the periodic sweep still runs).",
		}),
		listens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobworker_outbox_listen_connects_total",
			Help: "LISTEN connections the relay established (more than one means reconnects).",
		}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_outbox_published_total",
			Help: "Outbox jobs QStash accepted, by job and result (ok, deduplicated).",
		}, []string{"job", "result"}),
		gaveUp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_outbox_gave_up_total",
			Help: "Outbox rows marked failed (refused by QStash or invalid), by the job refused.",
		}, []string{"job"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_outbox_publish_errors_total",
			Help: "Failed publish attempts, by class (network, throttled, server, config, rejected, invalid).",
		}, []string{"class"}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobworker_outbox_store_errors_total",
			Help: "Relay rounds that failed on the database.",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "jobworker_outbox_batch_size",
			Help:    "Rows claimed per relay round.",
			Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000},
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "jobworker_outbox_publish_lag_seconds",
			Help:    "From the enqueuing transaction's start (database clock) to QStash accepting the job (relay clock).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600},
		}),
		cleaned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobworker_outbox_cleaned_total",
			Help: "Sent outbox rows deleted after the retention.",
		}),
	}
	var errs []error
	reuse := func(c prometheus.Collector) prometheus.Collector {
		got, err := collector.Register(reg, c)
		errs = append(errs, err)
		return got
	}
	m.pending = reuse(m.pending).(prometheus.Gauge)
	m.failedRows = reuse(m.failedRows).(prometheus.Gauge)
	m.oldestAge = reuse(m.oldestAge).(prometheus.Gauge)
	m.listening = reuse(m.listening).(prometheus.Gauge)
	m.listens = reuse(m.listens).(prometheus.Counter)
	m.published = reuse(m.published).(*prometheus.CounterVec)
	m.gaveUp = reuse(m.gaveUp).(*prometheus.CounterVec)
	m.errors = reuse(m.errors).(*prometheus.CounterVec)
	m.storeErrors = reuse(m.storeErrors).(prometheus.Counter)
	m.batchSize = reuse(m.batchSize).(prometheus.Histogram)
	m.lag = reuse(m.lag).(prometheus.Histogram)
	m.cleaned = reuse(m.cleaned).(prometheus.Counter)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("outbox: register metrics: %w", err)
	}
	return m, nil
}

// jobLabel keeps a row's kind out of the labels unless it is a valid job
// name: a stored row is data, and labels must stay bounded.
func jobLabel(kind string) string {
	if jobs.ValidateName(kind) != nil {
		return "invalid"
	}
	return kind
}

func (m *metrics) stats(pending, failed int64, oldest time.Duration) {
	if m == nil {
		return
	}
	m.pending.Set(float64(pending))
	m.failedRows.Set(float64(failed))
	m.oldestAge.Set(oldest.Seconds())
}

func (m *metrics) setListening(up bool) {
	if m == nil {
		return
	}
	if up {
		m.listens.Inc()
		m.listening.Set(1)
	} else {
		m.listening.Set(0)
	}
}

func (m *metrics) published1(kind string, dedup bool, lag time.Duration) {
	if m == nil {
		return
	}
	result := "ok"
	if dedup {
		result = "deduplicated"
	}
	m.published.WithLabelValues(jobLabel(kind), result).Inc()
	m.lag.Observe(max(lag, 0).Seconds())
}

func (m *metrics) gaveUp1(kind string) {
	if m != nil {
		m.gaveUp.WithLabelValues(jobLabel(kind)).Inc()
	}
}

func (m *metrics) publishError(class string) {
	if m != nil {
		m.errors.WithLabelValues(class).Inc()
	}
}

func (m *metrics) storeError() {
	if m != nil {
		m.storeErrors.Inc()
	}
}

func (m *metrics) batch(n int) {
	if m != nil {
		m.batchSize.Observe(float64(n))
	}
}

func (m *metrics) cleaned1(n int64) {
	if m != nil {
		m.cleaned.Add(float64(n))
	}
}
