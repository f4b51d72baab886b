package workerapp

import (
	"errors"
	"time"

	"github.com/digis/jobworker/internal/env"
	"github.com/digis/jobworker/internal/opsconsole"
	"github.com/digis/jobworker/jobs/control"
	"github.com/digis/jobworker/webhooks"
)

// DefaultPort is where the worker listens when PORT is unset.
const DefaultPort = 3001

// DefaultMetricsPort is where the worker serves /metrics when METRICS_ADDR
// is unset.
const DefaultMetricsPort = 9301

// Config is the configuration of cmd/worker, read from the environment
// by LoadConfig.
type Config struct {
	env.Common
	// PublicURL is the base URL QStash and Stripe call this worker at
	// (WORKER_PUBLIC_URL). QStash signs the exact URL it delivers to, so it
	// must be configured, never guessed from Host headers. Required.
	PublicURL string
	// QStashCurrentSigningKey and QStashNextSigningKey verify deliveries
	// (QSTASH_CURRENT_SIGNING_KEY, QSTASH_NEXT_SIGNING_KEY). Both required:
	// an empty key would make a verifier accept forgeries.
	QStashCurrentSigningKey string
	QStashNextSigningKey    string
	// StripeWebhookSecrets verify Stripe events (STRIPE_WEBHOOK_SECRET,
	// comma-separated to allow rotation: new,old). Required.
	StripeWebhookSecrets []string
	// QStashURL and QStashToken publish the jobs the worker hands work to
	// (the stripe.event job): QSTASH_URL (defaults to
	// https://qstash.upstash.io) and QSTASH_TOKEN (required).
	QStashURL   string
	QStashToken string
	// StripeLivemode is the mode of the Stripe events taken (STRIPE_MODE:
	// live or test); events of the other mode are ignored. Defaults to
	// live, or test with JOBWORKER_ENV=development.
	StripeLivemode bool
	// StripeDedupeTTL is how long a Stripe event id is remembered
	// (STRIPE_DEDUPE_TTL): longer than Stripe's 3-day retry window.
	// Defaults to 7 days (168h).
	StripeDedupeTTL time.Duration
	// DatabaseURL is the PostgreSQL the job handlers write to
	// (DATABASE_URL, required). The value "memory" selects the in-memory
	// store (DatabaseURL is then empty), for the local stack only.
	DatabaseURL string
	// JobDedupeTTL is how long a finished message id is remembered
	// (JOB_DEDUPE_TTL). It must outlive QStash's retry horizon: about
	// 33 min with the default 3 retries, 31 h with 5. Defaults to 48h.
	JobDedupeTTL time.Duration
	// OutboxRelay runs the outbox relay in this process (OUTBOX_RELAY, on
	// or off), publishing the jobs committed to the outbox by any process
	// on the database. Turn it off where the process does not run between
	// requests (Cloud Run with CPU only during requests, Lambda) and let a
	// QStash schedule call RelayPath instead; the route is there either
	// way. Ignored with the in-memory store. Defaults to on.
	OutboxRelay bool
	// OpsToken turns the ops console on at /ops/ (OPS_TOKEN): the
	// operator's credential, at least 24 characters (opsconsole.MinTokenLength).
	// Defaults to unset: no console.
	OpsToken string
	// SchedulesSync syncs the periodic jobs to QStash schedules at start
	// (SCHEDULES_SYNC, on or off), as worker -sync-schedules does as a
	// release step. Defaults to off.
	SchedulesSync bool
	// SchedulesApp owns the synced schedules (SCHEDULES_APP): their ids
	// start with it and a sync only removes schedules it owns. Set one per
	// application sharing a QStash account. Defaults to "jobworker".
	SchedulesApp string
}

// LoadConfig reads the worker configuration. A bad or missing value is an
// *env.Error naming the variable.
func LoadConfig(getenv env.Getenv) (Config, error) {
	r := env.NewReader(getenv)
	cfg := Config{Common: r.Common(DefaultPort, DefaultMetricsPort)}
	cfg.PublicURL = r.URL("WORKER_PUBLIC_URL", "")
	cfg.QStashCurrentSigningKey = r.Secret("QSTASH_CURRENT_SIGNING_KEY")
	cfg.QStashNextSigningKey = r.Secret("QSTASH_NEXT_SIGNING_KEY")
	cfg.StripeWebhookSecrets = stripeSecrets(r, "STRIPE_WEBHOOK_SECRET")
	cfg.QStashURL = r.URL("QSTASH_URL", "https://qstash.upstash.io")
	cfg.QStashToken = r.Secret("QSTASH_TOKEN")
	mode := "live"
	if cfg.Development {
		mode = "test"
	}
	cfg.StripeLivemode = r.OneOf("STRIPE_MODE", mode, "live", "test") == "live"
	cfg.StripeDedupeTTL = r.Duration("STRIPE_DEDUPE_TTL", 7*24*time.Hour)
	if cfg.StripeDedupeTTL <= 73*time.Hour && r.Err() == nil {
		r.Fail("STRIPE_DEDUPE_TTL", "must be more than 73h: Stripe retries an event for up to 3 days")
	}
	cfg.DatabaseURL = r.DatabaseURL()
	cfg.OutboxRelay = r.OneOf("OUTBOX_RELAY", "on", "on", "off") == "on"
	cfg.SchedulesSync = r.OneOf("SCHEDULES_SYNC", "off", "on", "off") == "on"
	cfg.SchedulesApp = r.Str("SCHEDULES_APP", "jobworker")
	cfg.JobDedupeTTL = r.Duration("JOB_DEDUPE_TTL", 48*time.Hour)
	if cfg.JobDedupeTTL < 24*time.Hour && r.Err() == nil {
		r.Fail("JOB_DEDUPE_TTL", "must be at least 24h: QStash may redeliver a message that long after it ran")
	}
	if r.Getenv("OPS_TOKEN") != "" {
		cfg.OpsToken = r.Secret("OPS_TOKEN")
		if len(cfg.OpsToken) < opsconsole.MinTokenLength && r.Err() == nil {
			r.Fail("OPS_TOKEN", "must be at least %d characters (e.g. openssl rand -hex 24)", opsconsole.MinTokenLength)
		}
	}
	var ce *control.ConfigError
	if err := (control.Config{Token: "-", App: cfg.SchedulesApp}).Validate(); errors.As(err, &ce) && r.Err() == nil {
		r.Fail("SCHEDULES_APP", "%s", ce.Reason)
	}
	return cfg, r.Err()
}

// stripeSecrets reads the comma-separated signing secrets with the one
// parser the verifier's package has (webhooks.ParseSecrets), refusing
// white space around the whole value like every other secret.
func stripeSecrets(r *env.Reader, name string) []string {
	raw := r.Secret(name)
	if raw == "" {
		return nil
	}
	secrets, err := webhooks.ParseSecrets(raw)
	if err != nil {
		var ce *webhooks.ConfigError
		reason := "is not a comma-separated list of secrets"
		if errors.As(err, &ce) {
			reason = "the comma-separated list " + ce.Reason
		}
		r.Fail(name, "%s", reason)
	}
	for _, s := range secrets { // "whsec_new,whsec_local_development_only"
		r.RefuseDevSecret(name, s)
	}
	return secrets
}
