package limits

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the limiter's Prometheus collectors. Label values are bucket and
// tier names from the configuration (a bounded set) and fixed reasons; never
// an identifier.
type metrics struct {
	decisions *prometheus.CounterVec   // bucket, tier, reason
	degraded  *prometheus.CounterVec   // bucket, tier, action (open|closed)
	cacheHits *prometheus.CounterVec   // bucket, tier
	redis     *prometheus.HistogramVec // result (ok|error)
	redisOK   prometheus.Observer
	redisErr  prometheus.Observer
}

// bucketMetrics are the children of one bucket, resolved once so the hot path
// does no label hashing.
type bucketMetrics struct {
	byReason  map[Reason]prometheus.Counter
	byAction  map[string]prometheus.Counter
	cacheHits prometheus.Counter
}

// degradedActions are the action label values of the degraded counter:
// what a decision Redis did not answer did.
var degradedActions = []string{
	"local-allowed",     // the outage limiter admitted
	"local-refused",     // the outage limiter refused (quota spent)
	"closed",            // the bucket fails closed
	"closed-local-full", // refused: no room in the outage limiter
	"open",              // the bucket fails open: admitted
}

func (b *bucketMetrics) degraded(action string) prometheus.Counter { return b.byAction[action] }

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_ratelimit_decisions_total",
			Help: "Rate-limit decisions by bucket, tier and reason (allowed, allowed-locally, denied, blocked-locally, degraded-local, degraded-closed, degraded-open, overloaded).",
		}, []string{"bucket", "tier", "reason"}),
		degraded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_ratelimit_degraded_total",
			Help: "Decisions Redis did not answer (error or deadline), by bucket, tier and action (local-allowed, local-refused, closed, closed-local-full, open).",
		}, []string{"bucket", "tier", "action"}),
		cacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_ratelimit_local_cache_hits_total",
			Help: "Requests refused from the local block cache with no Redis call.",
		}, []string{"bucket", "tier"}),
		redis: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "jobworker_ratelimit_redis_duration_seconds",
			Help:    "Latency of rate-limit round trips to Redis (a pipelined batch of decisions counts once).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}, []string{"result"}),
	}
	m.redisOK = m.redis.WithLabelValues("ok")
	m.redisErr = m.redis.WithLabelValues("error")
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.decisions, m.degraded, m.cacheHits, m.redis} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("limits: metrics already registered on this Registerer (one Limiter per registry)")
			}
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) forBucket(p Policy) *bucketMetrics {
	b := &bucketMetrics{byReason: map[Reason]prometheus.Counter{}, byAction: map[string]prometheus.Counter{}}
	for _, r := range reasons {
		b.byReason[r] = m.decisions.WithLabelValues(p.Bucket, p.Tier, string(r))
	}
	for _, a := range degradedActions {
		b.byAction[a] = m.degraded.WithLabelValues(p.Bucket, p.Tier, a)
	}
	b.cacheHits = m.cacheHits.WithLabelValues(p.Bucket, p.Tier)
	return b
}

// reasons are every Reason, the reason label values of the decisions counter.
var reasons = []Reason{
	ReasonAllowed, ReasonAllowedLocally, ReasonDenied, ReasonBlockedLocally,
	ReasonDegradedLocal, ReasonDegradedClosed, ReasonDegradedOpen, ReasonOverloaded,
}
