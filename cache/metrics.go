package cache

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/collector"
)

// Outcome is how one GetOrCompute call was answered. It is the value of the
// outcome label of jobworker_cache_requests_total.
type Outcome string

// Outcomes.
const (
	// OutcomeHit: a fresh value was read from Redis.
	OutcomeHit Outcome = "hit"
	// OutcomeMissComputed: this call held the mini-lock, computed and stored.
	OutcomeMissComputed Outcome = "miss_computed"
	// OutcomeWaitedHit: the call waited for a computation (in this process or
	// another instance) and got its value.
	OutcomeWaitedHit Outcome = "waited_hit"
	// OutcomeStaleServed: a stale value was served, either inside the
	// stale-while-revalidate window or because the refresh failed or the
	// wait budget ran out (stale-if-error).
	OutcomeStaleServed Outcome = "stale_served"
	// OutcomeLockTimeout: the wait budget ran out with nothing stale to
	// serve, so the call computed itself without storing.
	OutcomeLockTimeout Outcome = "lock_timeout"
	// OutcomeDegraded: Redis failed or timed out; the value was computed
	// directly and not stored (fail open).
	OutcomeDegraded Outcome = "degraded"
	// OutcomeError: the computation failed and nothing stale was available.
	OutcomeError Outcome = "error"
	// OutcomeCanceled: the caller's context ended while it waited.
	OutcomeCanceled Outcome = "canceled"
)

var allOutcomes = []Outcome{
	OutcomeHit, OutcomeMissComputed, OutcomeWaitedHit, OutcomeStaleServed,
	OutcomeLockTimeout, OutcomeDegraded, OutcomeError, OutcomeCanceled,
}

type metrics struct {
	requests       *prometheus.CounterVec
	byOutcome      map[Outcome]prometheus.Counter
	computations   *prometheus.CounterVec
	computeSeconds prometheus.Histogram
	redisErrors    *prometheus.CounterVec
	writesSkipped  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_cache_requests_total",
			Help: "GetOrCompute calls by outcome.",
		}, []string{"outcome"}),
		computations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_cache_computations_total",
			Help: "Compute functions run, by result (ok, error).",
		}, []string{"result"}),
		computeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "jobworker_cache_compute_seconds",
			Help:    "Duration of compute functions.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_cache_redis_errors_total",
			Help: "Redis calls that failed or timed out, by operation.",
		}, []string{"op"}),
		writesSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_cache_writes_skipped_total",
			Help: "Computed values not stored, by reason (lock_lost, redis_error, encode_error, degraded, lock_timeout).",
		}, []string{"reason"}),
	}
	if reg != nil {
		var err error
		if m.requests, err = collector.Register(reg, m.requests); err != nil {
			return nil, err
		}
		if m.computations, err = collector.Register(reg, m.computations); err != nil {
			return nil, err
		}
		if m.computeSeconds, err = collector.Register(reg, m.computeSeconds); err != nil {
			return nil, err
		}
		if m.redisErrors, err = collector.Register(reg, m.redisErrors); err != nil {
			return nil, err
		}
		if m.writesSkipped, err = collector.Register(reg, m.writesSkipped); err != nil {
			return nil, err
		}
	}
	m.byOutcome = make(map[Outcome]prometheus.Counter, len(allOutcomes))
	for _, o := range allOutcomes {
		m.byOutcome[o] = m.requests.WithLabelValues(string(o))
	}
	return m, nil
}

func (m *metrics) outcome(o Outcome) { m.byOutcome[o].Inc() }
