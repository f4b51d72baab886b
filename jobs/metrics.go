package jobs

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/collector"
)

// dispatchMetrics is nil-safe: a nil value records nothing.
type dispatchMetrics struct {
	handled  *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newDispatchMetrics(reg prometheus.Registerer) (*dispatchMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	handled, err := collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jobworker_jobs_handled_total",
		Help: "Job deliveries dispatched, by job and outcome (ok, retry, permanent, panic).",
	}, []string{"job", "outcome"}))
	if err != nil {
		return nil, err
	}
	duration, err := collector.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "jobworker_jobs_handle_duration_seconds",
		Help:    "Time spent in job handlers, decoding included, by job.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
	}, []string{"job"}))
	if err != nil {
		return nil, err
	}
	return &dispatchMetrics{handled: handled, duration: duration}, nil
}

func (m *dispatchMetrics) observe(job string, c class, panicked bool, took time.Duration) {
	if m == nil {
		return
	}
	outcome := c.String()
	if panicked {
		outcome = "panic"
	}
	m.handled.WithLabelValues(job, outcome).Inc()
	if took > 0 {
		m.duration.WithLabelValues(job).Observe(took.Seconds())
	}
}

// jobMetrics are one job's children for the common outcome (ok), resolved
// when the handler is registered: WithLabelValues hashes the labels and
// takes a lock on every call. The zero value records nothing.
type jobMetrics struct {
	handled  prometheus.Counter
	duration prometheus.Observer
}

func (m *dispatchMetrics) forJob(job string) jobMetrics {
	if m == nil {
		return jobMetrics{}
	}
	return jobMetrics{handled: m.handled.WithLabelValues(job, classOK.String()), duration: m.duration.WithLabelValues(job)}
}

func (j jobMetrics) observe(took time.Duration) {
	if j.handled == nil {
		return
	}
	j.handled.Inc()
	if took > 0 {
		j.duration.Observe(took.Seconds())
	}
}

// Enqueue results, the values of the "result" label.
const (
	resultOK           = "ok"
	resultDeduplicated = "deduplicated"
	resultError        = "error"
	resultInvalid      = "invalid"
)

type clientMetrics struct {
	enqueued *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newClientMetrics(reg prometheus.Registerer) (*clientMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	enqueued, err := collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jobworker_jobs_enqueued_total",
		Help: "Jobs handed to QStash, by job and result (ok, deduplicated, error, invalid).",
	}, []string{"job", "result"}))
	if err != nil {
		return nil, err
	}
	latency, err := collector.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "jobworker_jobs_publish_duration_seconds",
		Help:    "Latency of QStash publish calls, by call (publish, enqueue, batch) and result (ok, error).",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"call", "result"}))
	if err != nil {
		return nil, err
	}
	return &clientMetrics{enqueued: enqueued, latency: latency}, nil
}

func (m *clientMetrics) count(job, result string) {
	if m != nil {
		m.enqueued.WithLabelValues(job, result).Inc()
	}
}

func (m *clientMetrics) observe(call string, ok bool, took time.Duration) {
	if m == nil {
		return
	}
	result := resultOK
	if !ok {
		result = resultError
	}
	m.latency.WithLabelValues(call, result).Observe(took.Seconds())
}
