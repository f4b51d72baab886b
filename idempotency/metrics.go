package idempotency

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/collector"
)

// Middleware outcomes, the values of the "outcome" label of
// jobworker_idempotency_requests_total.
const (
	outcomeFirst       = "first"       // handler ran, response stored
	outcomeReplayed    = "replayed"    // stored response replayed
	outcomeConflict    = "conflict"    // 409: another request holds the key
	outcomeMismatch    = "mismatch"    // 422: key reused with another request
	outcomeAmbiguous   = "ambiguous"   // handler ran, outcome unknown (5xx, panic), stored
	outcomeUnavailable = "unavailable" // 503: Redis unreachable, nothing ran
	outcomeReleased    = "released"    // handler ran, nothing stored, key freed
	outcomeInvalid     = "invalid"     // 400/401/413 before any claim
)

type metrics struct {
	requests    *prometheus.CounterVec
	storeErrors *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_idempotency_requests_total",
			Help: "Requests seen by the Idempotency-Key middleware, by outcome.",
		}, []string{"outcome"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_idempotency_store_errors_total",
			Help: "Failures to record (op=complete) or release (op=release) a key after the handler ran.",
		}, []string{"op"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.requests, err = collector.Register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.storeErrors, err = collector.Register(reg, m.storeErrors); err != nil {
		return nil, err
	}
	return m, nil
}
