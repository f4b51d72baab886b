package webhooks

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/collector"
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
	if m.verifications, err = collector.Register(reg, m.verifications); err != nil {
		return nil, err
	}
	if m.keyUsed, err = collector.Register(reg, m.keyUsed); err != nil {
		return nil, err
	}
	if m.apiMismatch, err = collector.Register(reg, m.apiMismatch); err != nil {
		return nil, err
	}
	return m, nil
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
