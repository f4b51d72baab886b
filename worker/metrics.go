package worker

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/collector"
)

// unknownLabel is the job label of deliveries for unregistered names: label
// values stay bounded by the registry.
const unknownLabel = "_unknown"

type metricSet struct {
	total    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	redeliv  *prometheus.CounterVec
	dead     *prometheus.CounterVec
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

func newMetrics(reg prometheus.Registerer) (*metricSet, error) {
	m := &metricSet{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_deliveries_total",
			Help: "QStash job deliveries by job and outcome (done, duplicate, in_progress, retry, panic, permanent, unknown_job, mismatch, unavailable, draining, unverified, too_large, replayed).",
		}, []string{"job", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "jobworker_delivery_duration_seconds",
			Help:    "Time from a delivery's arrival to its answer, verification and dedupe included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"job"}),
		redeliv: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_delivery_redeliveries_total",
			Help: "Deliveries QStash marked as retries (Upstash-Retried > 0), by job.",
		}, []string{"job"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_dead_jobs_total",
			Help: "Jobs QStash gave up on (failure callbacks, once per DLQ entry), by job.",
		}, []string{"job"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.total, err = collector.Register(reg, m.total); err != nil {
		return nil, err
	}
	if m.duration, err = collector.Register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.redeliv, err = collector.Register(reg, m.redeliv); err != nil {
		return nil, err
	}
	if m.dead, err = collector.Register(reg, m.dead); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metricSet) forJob(label string) *jobMetrics {
	if j, ok := m.perJob.Load(label); ok {
		return j.(*jobMetrics)
	}
	j, _ := m.perJob.LoadOrStore(label, &jobMetrics{
		done:      m.total.WithLabelValues(label, outcomeDone),
		duplicate: m.total.WithLabelValues(label, outcomeDuplicate),
		duration:  m.duration.WithLabelValues(label),
		redeliv:   m.redeliv.WithLabelValues(label),
	})
	return j.(*jobMetrics)
}

func (j *jobMetrics) count(m *metricSet, label, outcome string) {
	switch outcome {
	case outcomeDone:
		j.done.Inc()
	case outcomeDuplicate:
		j.duplicate.Inc()
	default:
		m.total.WithLabelValues(label, outcome).Inc()
	}
}
