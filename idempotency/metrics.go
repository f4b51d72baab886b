package idempotency

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
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
	if m.requests, err = register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.storeErrors, err = register(reg, m.storeErrors); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or reuses an identical collector already there (two
// routes with their own middleware share one registry).
func register(reg prometheus.Registerer, c *prometheus.CounterVec) (*prometheus.CounterVec, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
			return existing, nil
		}
	}
	return c, err
}
