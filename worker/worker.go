package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/idempotency"
	"github.com/digis/jobworker/internal/problem"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/webhooks"
)

// Redis is what the worker needs of a go-redis client; every client
// (*redis.Client, *redis.ClusterClient, *redis.Ring) satisfies it. Build it
// with ContextTimeoutEnabled so a stalled Redis frees the connection at the
// deadline.
type Redis = idempotency.Redis

// Config configures a Handler. Registry, Redis, PublicURL and the signing
// keys are required; every other field has a default.
type Config struct {
	// Registry holds the job handlers. Required.
	Registry *jobs.Registry
	// Redis remembers which messages ran. Required.
	Redis Redis
	// PublicURL is the base URL QStash calls this worker at
	// (WORKER_PUBLIC_URL), e.g. "https://worker.example.com": jobs are
	// delivered to PublicURL + "/jobs/<name>", and QStash signs that exact
	// URL, so it is configured, never guessed from Host headers. A path is
	// kept for proxies that strip one. Required.
	PublicURL string
	// CurrentSigningKey and NextSigningKey are QSTASH_CURRENT_SIGNING_KEY
	// and QSTASH_NEXT_SIGNING_KEY. Required unless Verifier is set.
	CurrentSigningKey, NextSigningKey string
	// Verifier replaces the verifier built from the keys (to share one, or
	// to set its clock or skew). Defaults to nil.
	Verifier *webhooks.QStashVerifier

	// KeyPrefix is prepended to every Redis key (several apps on one
	// Redis). Defaults to "".
	KeyPrefix string
	// DedupeTTL is how long a finished message id is remembered. It must
	// outlive QStash's retry horizon for the retries jobs are published with
	// (about 33 min with the default 3 retries, 31 h with 5). Defaults to
	// 48h.
	DedupeTTL time.Duration
	// LeaseTTL is how long a running delivery holds its message without
	// renewal, so a killed worker frees it for QStash's retry. Defaults to
	// 30s.
	LeaseTTL time.Duration
	// RedisTimeout bounds each dedupe round trip. Defaults to 250ms.
	RedisTimeout time.Duration
	// MaxBodyBytes caps a delivery's body; larger ones get 413 without being
	// hashed. Defaults to 1 MiB.
	MaxBodyBytes int64
	// FailureCallbackPath is the path (below PublicURL) QStash's failure
	// callbacks arrive at; publish jobs with
	// jobs.WithFailureCallback(PublicURL + FailureCallbackPath). Defaults to
	// "/qstash/failed".
	FailureCallbackPath string

	// Backoff is the Retry-After sent with a 503 (Redis unavailable, worker
	// draining) for the delivery's attempt (Upstash-Retried: 0 on the first
	// attempt). It overrides whatever retry delay the job was published
	// with, so an outage spends retries slowly: with QStash's default 3
	// retries the message survives an outage of about 30 minutes. Defaults
	// to QStashBackoff.
	Backoff func(retried int) time.Duration
	// InProgressRetryAfter is the least Retry-After sent (with 409) while
	// the same message runs elsewhere; the other holder's lease time and
	// Backoff are sent when longer. Defaults to 10s.
	InProgressRetryAfter time.Duration
	// Draining, when it reports true, makes the handler refuse deliveries
	// with 503 and Retry-After before any work, so QStash redelivers them
	// to a live instance (server.Server.Draining fits). Defaults to nil:
	// never draining.
	Draining func() bool

	// Logger receives one line per failed, retried, duplicate or replayed
	// delivery (job, message id, attempt, outcome; never the body). Served
	// by package server, every delivery's job, message id, attempt and
	// outcome go on the request's access line instead, and only failures
	// and refusals get a line here. Defaults to discarding.
	Logger *slog.Logger
	// Registerer receives jobworker_deliveries_total{job,outcome},
	// jobworker_delivery_duration_seconds{job},
	// jobworker_delivery_redeliveries_total{job} and
	// jobworker_dead_jobs_total{job}, and the verifier's and dedupe store's
	// metrics. Defaults to nil: none.
	Registerer prometheus.Registerer
}

// Defaults of Config.
const (
	DefaultDedupeTTL            = 48 * time.Hour
	DefaultLeaseTTL             = 30 * time.Second
	DefaultRedisTimeout         = 250 * time.Millisecond
	DefaultMaxBodyBytes         = webhooks.DefaultMaxBodyBytes
	DefaultFailureCallbackPath  = jobs.FailureCallbackPath
	DefaultInProgressRetryAfter = 10 * time.Second
)

// ErrInvalidConfig wraps every *ConfigError.
var ErrInvalidConfig = errors.New("worker: invalid config")

// ConfigError names the Config field that is wrong (never its value). It
// matches ErrInvalidConfig with errors.Is.
type ConfigError struct {
	Field  string // e.g. "PublicURL"
	Reason string
	Err    error // the underlying library error, if any
}

func (e *ConfigError) Error() string { return "worker: Config." + e.Field + ": " + e.Reason }

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// Unwrap returns the underlying library error.
func (e *ConfigError) Unwrap() error { return e.Err }

func (c Config) withDefaults() Config {
	if c.DedupeTTL == 0 {
		c.DedupeTTL = DefaultDedupeTTL
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.RedisTimeout == 0 {
		c.RedisTimeout = DefaultRedisTimeout
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.FailureCallbackPath == "" {
		c.FailureCallbackPath = DefaultFailureCallbackPath
	}
	if c.Backoff == nil {
		c.Backoff = QStashBackoff
	}
	if c.InProgressRetryAfter == 0 {
		c.InProgressRetryAfter = DefaultInProgressRetryAfter
	}
	if c.Draining == nil {
		c.Draining = func() bool { return false }
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first configuration error as a *ConfigError.
func (c Config) Validate() error {
	_, err := c.withDefaults().check()
	return err
}

// check validates a Config with defaults filled in and returns the parsed
// public base URL.
func (c Config) check() (base string, err error) {
	bad := func(field, reason string, err error) (string, error) {
		return "", &ConfigError{Field: field, Reason: reason, Err: err}
	}
	switch {
	case c.Registry == nil:
		return bad("Registry", "is required", nil)
	case c.Redis == nil:
		return bad("Redis", "is required", nil)
	case c.MaxBodyBytes < 0:
		return bad("MaxBodyBytes", "must not be negative", nil)
	case c.InProgressRetryAfter < 0:
		return bad("InProgressRetryAfter", "must not be negative", nil)
	case !strings.HasPrefix(c.FailureCallbackPath, "/") || strings.ContainsAny(c.FailureCallbackPath, "?#"):
		return bad("FailureCallbackPath", "must be a path starting with /", nil)
	}
	base, err = webhooks.ParsePublicURL(c.PublicURL)
	if err != nil {
		return bad("PublicURL", "must be an absolute http(s) URL without query, fragment or user info", err)
	}
	if c.Verifier == nil {
		if err := c.qstashConfig().Validate(); err != nil {
			var ce *webhooks.ConfigError
			if errors.As(err, &ce) {
				return bad(strings.TrimPrefix(ce.Field, "QStashConfig."), ce.Reason, err)
			}
			return bad("CurrentSigningKey", err.Error(), err)
		}
	}
	if err := c.storeConfig().Validate(); err != nil {
		var ce *idempotency.ConfigError
		if errors.As(err, &ce) {
			if field, ok := storeFields[ce.Field]; ok {
				return bad(field, ce.Reason, err)
			}
		}
		return bad("DedupeTTL", err.Error(), err)
	}
	return base, nil
}

// storeFields maps the dedupe store's fields to the Config fields that set
// them.
var storeFields = map[string]string{
	"StoreConfig.Prefix": "KeyPrefix", "StoreConfig.LeaseTTL": "LeaseTTL",
	"StoreConfig.ResultTTL": "DedupeTTL", "StoreConfig.Timeout": "RedisTimeout",
}

func (c Config) qstashConfig() webhooks.QStashConfig {
	return webhooks.QStashConfig{
		CurrentSigningKey: c.CurrentSigningKey, NextSigningKey: c.NextSigningKey,
		Logger: c.Logger, Registerer: c.Registerer,
	}
}

func (c Config) storeConfig() idempotency.StoreConfig {
	return idempotency.StoreConfig{
		Prefix: c.KeyPrefix, Namespace: "qstash",
		LeaseTTL: c.LeaseTTL, ResultTTL: c.DedupeTTL, Timeout: c.RedisTimeout,
		Logger: c.Logger, Registerer: c.Registerer,
	}
}

// Handler receives QStash deliveries: it verifies each request, dedupes it
// by message id, runs the job and answers with the status that makes QStash
// stop, retry or dead-letter (see the package doc). It is an http.Handler
// for any router; Mount adds it to Echo. Safe for concurrent use.
type Handler struct {
	cfg      Config
	base     string
	verifier *webhooks.QStashVerifier
	dedupe   *idempotency.Store
	m        *metricSet
	log      *slog.Logger
}

// New validates cfg and builds the handler.
func New(cfg Config) (*Handler, error) {
	cfg = cfg.withDefaults()
	base, err := cfg.check()
	if err != nil {
		return nil, err
	}
	verifier := cfg.Verifier
	if verifier == nil {
		if verifier, err = webhooks.NewQStashVerifier(cfg.qstashConfig()); err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
	}
	dedupe, err := idempotency.NewStore(cfg.Redis, cfg.storeConfig())
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Handler{cfg: cfg, base: base, verifier: verifier, dedupe: dedupe, m: m, log: cfg.Logger}, nil
}

// Close finishes what the dedupe store could not tell Redis during an
// outage (releases and done markers still pending) within ctx. Call it at
// shutdown after the server stopped serving and before Redis is closed.
func (h *Handler) Close(ctx context.Context) error {
	if n := h.dedupe.Close(ctx); n > 0 {
		return fmt.Errorf("worker: %d dedupe cleanups were still pending at shutdown", n)
	}
	return nil
}

// ServeHTTP routes POST <mount>/jobs/<name> to the job's handler and POST
// FailureCallbackPath to the failure-callback recorder; anything else is
// 404 or 405. The job name is read from the request path, so the handler
// can be mounted under any prefix (http.Handle("/jobs/", h), or a
// subtree); the signature check compares PublicURL + the request-target
// with the URL QStash signed.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	failure := strings.HasSuffix(path, h.cfg.FailureCallbackPath)
	name, isJob := jobName(path)
	if !failure && !isJob {
		problem.Send(w, http.StatusNotFound, "")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		problem.Send(w, http.StatusMethodNotAllowed, "")
		return
	}
	if failure {
		h.serveFailureCallback(w, r)
		return
	}
	h.serveJob(w, r, name)
}

// jobName reads <name> from a path ending in /jobs/<name>.
func jobName(path string) (string, bool) {
	i := strings.LastIndexByte(path, '/')
	if i < 0 || path[i+1:] == "" {
		return "", false
	}
	if !strings.HasSuffix(path[:i+1], jobs.PathPrefix) {
		return "", false
	}
	return path[i+1:], true
}
