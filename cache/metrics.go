package cache

import (
	"strings"
	"sync"
	"sync/atomic"

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
	requests *prometheus.CounterVec
	// perFamily caches the outcome children of each key family (bounded by
	// maxFamilies): WithLabelValues hashes and locks on every call.
	perFamily      sync.Map // family → map[Outcome]prometheus.Counter
	families       atomic.Int32
	computations   *prometheus.CounterVec
	computeSeconds prometheus.Histogram
	redisErrors    *prometheus.CounterVec
	writesSkipped  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_cache_requests_total",
			Help: "GetOrCompute calls by key family (the key's first ':'-separated segment) and outcome.",
		}, []string{"family", "outcome"}),
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
	return m, nil
}

func (m *metrics) outcome(family string, o Outcome) { m.forFamily(family)[o].Inc() }

func (m *metrics) forFamily(family string) map[Outcome]prometheus.Counter {
	if f, ok := m.perFamily.Load(family); ok {
		return f.(map[Outcome]prometheus.Counter)
	}
	if family != otherFamily && m.families.Load() >= maxFamilies {
		return m.forFamily(otherFamily)
	}
	m.families.Add(1)
	byOutcome := make(map[Outcome]prometheus.Counter, len(allOutcomes))
	for _, o := range allOutcomes {
		byOutcome[o] = m.requests.WithLabelValues(family, string(o))
	}
	f, _ := m.perFamily.LoadOrStore(family, byOutcome)
	return f.(map[Outcome]prometheus.Counter)
}

// maxFamilies bounds the family label's values; keys of further families
// count as otherFamily.
const (
	maxFamilies = 32
	otherFamily = "_other"
)

// keyFamily is the metric family of a caller's key: its first ':'-separated
// segment ("status:{alice}" is "status") when that is a short lower-case
// word, else "_other", so no id or handle becomes a label value.
func keyFamily(key string) string {
	seg, _, ok := strings.Cut(key, ":")
	if !ok || seg == "" || len(seg) > 24 {
		return otherFamily
	}
	for _, r := range seg {
		if (r < 'a' || r > 'z') && r != '-' && r != '_' && r != '.' {
			return otherFamily
		}
	}
	return seg
}
