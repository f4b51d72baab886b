package config

import "time"

// Worker is the configuration of cmd/worker.
type Worker struct {
	Common
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
}

// LoadWorker reads the worker configuration.
func LoadWorker(getenv Getenv) (Worker, error) {
	r := reader{getenv: getenv}
	cfg := Worker{Common: r.common(DefaultWorkerPort)}
	cfg.PublicURL = r.url("WORKER_PUBLIC_URL", "")
	cfg.QStashCurrentSigningKey = r.secret("QSTASH_CURRENT_SIGNING_KEY")
	cfg.QStashNextSigningKey = r.secret("QSTASH_NEXT_SIGNING_KEY")
	cfg.StripeWebhookSecrets = r.secretList("STRIPE_WEBHOOK_SECRET")
	cfg.QStashURL = r.url("QSTASH_URL", "https://qstash.upstash.io")
	cfg.QStashToken = r.secret("QSTASH_TOKEN")
	cfg.StripeDedupeTTL = r.duration("STRIPE_DEDUPE_TTL", 7*24*time.Hour)
	if cfg.StripeDedupeTTL <= 73*time.Hour && r.err == nil {
		r.fail("STRIPE_DEDUPE_TTL", "must be more than 73h: Stripe retries an event for up to 3 days")
	}
	cfg.DatabaseURL = r.databaseURL()
	cfg.JobDedupeTTL = r.duration("JOB_DEDUPE_TTL", 48*time.Hour)
	if cfg.JobDedupeTTL < 24*time.Hour && r.err == nil {
		r.fail("JOB_DEDUPE_TTL", "must be at least 24h: QStash may redeliver a message that long after it ran")
	}
	return cfg, r.err
}
