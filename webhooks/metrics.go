package webhooks

import (
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are shared by the QStash and Stripe verifiers: both register the
// same collectors, and a second registration on the same Registerer reuses
// the first (so a worker can build several verifiers on one registry).
type metrics struct {
	verifications *prometheus.CounterVec // source, result
	keyUsed       *prometheus.CounterVec // source, key
	apiMismatch   prometheus.Counter     // Stripe only
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_webhook_verifications_total",
			Help: "Webhook signature verifications by source and result (ok or the failed check).",
		}, []string{"source", "result"}),
		keyUsed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_webhook_signing_key_used_total",
			Help: "Accepted webhooks by the key that verified them (qstash: current|next; stripe: the secret's index). Shows when a rotation is complete.",
		}, []string{"source", "key"}),
		apiMismatch: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobworker_stripe_api_version_mismatch_total",
			Help: "Verified Stripe events whose api_version differs from the version stripe-go pins (accepted, read leniently).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.verifications, err = register(reg, m.verifications); err != nil {
		return nil, err
	}
	if m.keyUsed, err = register(reg, m.keyUsed); err != nil {
		return nil, err
	}
	if m.apiMismatch, err = register(reg, m.apiMismatch); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// the same descriptor.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

// initResults creates the series at zero so rate() works from the first
// failure on.
func (m *metrics) initResults(source string, checks ...string) {
	m.verifications.WithLabelValues(source, "ok")
	for _, c := range checks {
		m.verifications.WithLabelValues(source, c)
	}
}

func discardIfNil(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
