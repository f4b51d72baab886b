package config

// API is the configuration of cmd/api.
type API struct {
	Common
	// QStashURL is the QStash base URL (QSTASH_URL). Defaults to
	// https://qstash.upstash.io.
	QStashURL string
	// QStashToken authenticates publishes (QSTASH_TOKEN). Required.
	QStashToken string
	// WorkerPublicURL is where QStash delivers jobs (WORKER_PUBLIC_URL).
	// Required.
	WorkerPublicURL string
}

// LoadAPI reads the API configuration.
func LoadAPI(getenv Getenv) (API, error) {
	r := reader{getenv: getenv}
	cfg := API{Common: r.common(DefaultAPIPort)}
	cfg.QStashURL = r.url("QSTASH_URL", "https://qstash.upstash.io")
	cfg.QStashToken = r.secret("QSTASH_TOKEN")
	cfg.WorkerPublicURL = r.url("WORKER_PUBLIC_URL", "")
	return cfg, r.err
}
