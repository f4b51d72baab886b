package apiapp

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"strings"
	"time"

	"github.com/digis/jobworker/cache"
	"github.com/digis/jobworker/idempotency"
	"github.com/digis/jobworker/internal/auth"
	"github.com/digis/jobworker/internal/env"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/limits"
)

// DefaultPort is where the API listens when PORT is unset.
const DefaultPort = 3000

// Config is the configuration of cmd/api, read from the environment by
// LoadConfig.
type Config struct {
	env.Common
	// QStashURL is the QStash base URL (QSTASH_URL). Defaults to
	// https://qstash.upstash.io.
	QStashURL string
	// QStashToken authenticates publishes (QSTASH_TOKEN). Required.
	QStashToken string
	// WorkerPublicURL is where QStash delivers jobs (WORKER_PUBLIC_URL).
	// Required.
	WorkerPublicURL string

	// DatabaseURL is the PostgreSQL the routes read and write
	// (DATABASE_URL, required). The value "memory" selects the in-memory
	// store (DatabaseURL is then empty), for the local stack only (logged
	// as a warning at start-up).
	DatabaseURL string
	// DatabaseMigrate applies the embedded migrations at start-up
	// (DATABASE_MIGRATE=true). Concurrent starts are safe (advisory lock).
	// Defaults to false: run `api -migrate` as a release step instead.
	DatabaseMigrate bool
	// OutboxRelay runs the outbox relay in this process (OUTBOX_RELAY, on
	// or off): it publishes the follow-up jobs the routes commit to the
	// outbox. Turn it off where the process does not run between requests
	// (Cloud Run with CPU only during requests, Lambda) and let a QStash
	// schedule call the worker's relay route instead. Ignored with the
	// in-memory store. Defaults to on.
	OutboxRelay bool

	// Auth verifies bearer tokens: exactly one of AUTH_JWT_SECRET (HS256,
	// at least 32 bytes) and AUTH_JWKS_URL, plus optional AUTH_ISSUER and
	// AUTH_AUDIENCE. Required.
	Auth auth.Config

	// TipMaxAmount caps one tip in tokens (TIP_MAX_AMOUNT). Defaults to
	// 100000.
	TipMaxAmount int64

	// RateLimit configures the limiter and the client-IP extractor.
	RateLimit RateLimit

	// IdempotencyResultTTL is how long an Idempotency-Key answer is kept and
	// replayed (IDEMPOTENCY_RESULT_TTL, a duration or "7d"). Defaults to 24h.
	IdempotencyResultTTL time.Duration

	// CacheRedisTimeout is the deadline of one cache round trip; past it the
	// cache computes from the database directly (CACHE_REDIS_TIMEOUT).
	// Defaults to 100ms.
	CacheRedisTimeout time.Duration
	// CacheStatusTTL is how long the public part of a stream status stays
	// cached (CACHE_STATUS_TTL). Defaults to 10s; at most 1m, since a start
	// or stop invalidates it but a missed invalidation lasts this long.
	CacheStatusTTL time.Duration
}

// RateLimit is the rate-limiting part of the API configuration.
type RateLimit struct {
	// IPExtractor finds client addresses for the deployment mode
	// (RATE_LIMIT_IP_SOURCE: direct, xff, x-real-ip, cloudflare or vercel;
	// RATE_LIMIT_TRUSTED_PROXIES: comma-separated CIDRs, required by every
	// mode but direct). Required: there is no safe default.
	IPExtractor *limits.IPExtractor
	// Overrides replaces single buckets' quotas (RATE_LIMIT_OVERRIDES,
	// "bucket=limit/period,…"). Defaults to none.
	Overrides map[string]limits.Quota
	// Failure says what tiers or buckets do while Redis cannot answer:
	// RATE_LIMIT_FAILURE ("name=local|closed|open,…") and the shorthand
	// RATE_LIMIT_FAIL_CLOSED ("name,…" = closed), see
	// limits.Config.Failure. Defaults to the library's: strict fails
	// closed, every other tier falls back to a bounded per-instance limiter.
	Failure map[string]limits.FailureMode
	// Leases lets an instance take requests of busy identifiers ahead, per
	// tier or bucket (RATE_LIMIT_LEASES, "name=requests,…", see
	// limits.Config.Leases). Defaults to none: every admission asks Redis.
	Leases map[string]int
	// RedisTimeout is the deadline of one limiter round trip, from when it
	// is sent (RATE_LIMIT_REDIS_TIMEOUT); past it the bucket's failure mode
	// decides. Defaults to 50ms.
	RedisTimeout time.Duration
	// HashKey keys the identifier hash in rate-limit keys, so keys cannot
	// be reversed to IPs by hashing guesses: RATE_LIMIT_HASH_KEY (at least
	// 16 bytes) when set, else derived from QSTASH_TOKEN, which every api
	// instance already shares (HMAC-SHA-256 under a label of its own, so
	// the token itself is never the key). Always set.
	HashKey []byte
	// HashKeyDerived reports that HashKey was derived from QSTASH_TOKEN:
	// rotating the token then starts every rate-limit window afresh once.
	HashKeyDerived bool
}

// hashKeyLabel separates the rate-limit key derived from QSTASH_TOKEN from
// any other use of the token.
const hashKeyLabel = "jobworker rate-limit identifier hash key v1"

// deriveHashKey is HMAC-SHA-256(token, label): a key only holders of the
// token can compute, that reveals nothing about it.
func deriveHashKey(token string) []byte {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte(hashKeyLabel))
	return m.Sum(nil)
}

// LoadConfig reads the API configuration. A bad or missing value is an
// *env.Error naming the variable.
func LoadConfig(getenv env.Getenv) (Config, error) {
	r := env.NewReader(getenv)
	cfg := Config{Common: r.Common(DefaultPort)}
	cfg.QStashURL = r.URL("QSTASH_URL", "https://qstash.upstash.io")
	cfg.QStashToken = r.Secret("QSTASH_TOKEN")
	cfg.WorkerPublicURL = r.URL("WORKER_PUBLIC_URL", "")
	cfg.DatabaseURL = r.DatabaseURL()
	cfg.DatabaseMigrate = r.Bool("DATABASE_MIGRATE")
	cfg.OutboxRelay = r.OneOf("OUTBOX_RELAY", "on", "on", "off") == "on"
	cfg.Auth = readAuth(r)
	cfg.TipMaxAmount = readTipMax(r, "TIP_MAX_AMOUNT")
	cfg.RateLimit = readRateLimit(r, cfg.QStashToken)
	cfg.IdempotencyResultTTL = readTTL(r, "IDEMPOTENCY_RESULT_TTL", idempotency.DefaultResultTTL)
	cfg.CacheRedisTimeout = r.Duration("CACHE_REDIS_TIMEOUT", 100*time.Millisecond)
	cfg.CacheStatusTTL = r.Duration("CACHE_STATUS_TTL", 10*time.Second)
	if cfg.CacheStatusTTL > time.Minute {
		r.Fail("CACHE_STATUS_TTL", "must be at most 1m (stream status is real-time data)")
	}
	if r.Err() == nil {
		var ce *cache.ConfigError
		if err := (cache.Config{RedisTimeout: cfg.CacheRedisTimeout}).Validate(); errors.As(err, &ce) {
			r.Fail("CACHE_REDIS_TIMEOUT", "%s", ce.Reason)
		}
	}
	return cfg, r.Err()
}

// readAuth reads the AUTH_* variables through auth.LoadConfig, whose
// errors name the variable (and never hold the secret).
func readAuth(r *env.Reader) auth.Config {
	cfg, err := auth.LoadConfig(r.Getenv)
	var ee *auth.EnvError
	switch {
	case err == nil:
		r.RefuseDevSecret(auth.EnvSecret, string(cfg.HS256Secret))
		return cfg
	case errors.As(err, &ee):
		r.Fail(ee.Var, "%s", oneLine(ee.Reason))
	default:
		r.Fail(auth.EnvSecret, "%s", oneLine(err.Error()))
	}
	return auth.Config{}
}

func readTipMax(r *env.Reader, name string) int64 {
	n, err := store.ParseMaxTipAmount(r.Getenv(name))
	if err != nil {
		r.Fail(name, "must be a whole number of tokens between 1 and %d", store.MaxCreditAmount)
		return store.DefaultMaxTipAmount
	}
	return n
}

func readTTL(r *env.Reader, name string, def time.Duration) time.Duration {
	v := strings.TrimSpace(r.Getenv(name))
	if v == "" {
		return def
	}
	d, err := idempotency.ParseTTL(v)
	if err != nil {
		r.Fail(name, "%q is not a positive duration like 24h or 7d", v)
		return def
	}
	return d
}

// Rate-limit variables, by the limits.ConfigError field they set.
var rateLimitVars = map[string]string{
	limits.FieldIPSource:       "RATE_LIMIT_IP_SOURCE",
	limits.FieldTrustedProxies: "RATE_LIMIT_TRUSTED_PROXIES",
	"Overrides":                "RATE_LIMIT_OVERRIDES",
	"Leases":                   "RATE_LIMIT_LEASES",
	"Failure":                  "RATE_LIMIT_FAILURE",
	limits.FieldFailClosed:     "RATE_LIMIT_FAIL_CLOSED",
	"Timeout":                  "RATE_LIMIT_REDIS_TIMEOUT",
	"HashKey":                  "RATE_LIMIT_HASH_KEY",
}

// limitsErr reports a limits configuration error under the variable that
// set the field at fault (fallback when the error names no known field).
func limitsErr(r *env.Reader, err error, fallback string) {
	var ce *limits.ConfigError
	if !errors.As(err, &ce) {
		r.Fail(fallback, "%s", oneLine(err.Error()))
		return
	}
	name, ok := rateLimitVars[ce.Field]
	if !ok {
		name = fallback
	}
	r.Fail(name, "%s", oneLine(ce.Reason))
}

func readRateLimit(r *env.Reader, qstashToken string) RateLimit {
	var rl RateLimit
	mode := strings.TrimSpace(r.Getenv("RATE_LIMIT_IP_SOURCE"))
	if mode == "" {
		r.Fail("RATE_LIMIT_IP_SOURCE", "required: say how client IPs reach this process (direct, xff, x-real-ip, cloudflare or vercel)")
	} else {
		x, err := limits.ParseIPSource(mode, r.Getenv("RATE_LIMIT_TRUSTED_PROXIES"))
		if err != nil {
			limitsErr(r, err, "RATE_LIMIT_IP_SOURCE")
		}
		rl.IPExtractor = x
	}
	ov, err := limits.ParseOverrides(r.Getenv("RATE_LIMIT_OVERRIDES"))
	if err != nil {
		limitsErr(r, err, "RATE_LIMIT_OVERRIDES")
	}
	rl.Overrides = ov
	failure, fromClosed := readFailure(r)
	rl.Failure = failure
	leases, err := limits.ParseLeases(r.Getenv("RATE_LIMIT_LEASES"))
	if err != nil {
		limitsErr(r, err, "RATE_LIMIT_LEASES")
	}
	rl.Leases = leases
	rl.RedisTimeout = r.Duration("RATE_LIMIT_REDIS_TIMEOUT", limits.DefaultTimeout)
	if v := r.Getenv("RATE_LIMIT_HASH_KEY"); v != "" {
		rl.HashKey = []byte(r.Secret("RATE_LIMIT_HASH_KEY"))
		if len(rl.HashKey) < limits.MinHashKeyLen {
			r.Fail("RATE_LIMIT_HASH_KEY", "must be at least %d bytes when set", limits.MinHashKeyLen)
		}
	} else if qstashToken != "" {
		rl.HashKey, rl.HashKeyDerived = deriveHashKey(qstashToken), true
	}
	// The limiter checks bucket names, quotas, failure modes and leases
	// against its policy; check here too so a typo stops start-up with the
	// variable's name rather than later in the wiring.
	if r.Err() == nil {
		_, err := limits.Config{Buckets: apiBuckets(), Overrides: rl.Overrides, Failure: rl.Failure, Leases: rl.Leases}.Policies()
		var ce *limits.ConfigError
		if errors.As(err, &ce) && ce.Field == "Failure" && fromClosed[ce.Name] {
			r.Fail("RATE_LIMIT_FAIL_CLOSED", "%s", oneLine(ce.Reason))
		} else if err != nil {
			limitsErr(r, err, "RATE_LIMIT_OVERRIDES")
		}
	}
	return rl
}

// failure merges RATE_LIMIT_FAILURE and its shorthand
// RATE_LIMIT_FAIL_CLOSED; fromClosed holds the names only the latter set.
func readFailure(r *env.Reader) (modes map[string]limits.FailureMode, fromClosed map[string]bool) {
	modes, err := limits.ParseFailure(r.Getenv("RATE_LIMIT_FAILURE"))
	if err != nil {
		limitsErr(r, err, "RATE_LIMIT_FAILURE")
		return nil, nil
	}
	closed, err := limits.ParseFailClosed(r.Getenv("RATE_LIMIT_FAIL_CLOSED"))
	if err != nil {
		limitsErr(r, err, "RATE_LIMIT_FAIL_CLOSED")
		return nil, nil
	}
	fromClosed = map[string]bool{}
	for _, n := range closed {
		if m, ok := modes[n]; ok && m != limits.FailureClosed {
			r.Fail("RATE_LIMIT_FAIL_CLOSED", "%q is also set to %s by RATE_LIMIT_FAILURE", n, m)
			return nil, nil
		} else if !ok {
			fromClosed[n] = true
		}
		modes[n] = limits.FailureClosed
	}
	return modes, fromClosed
}

// apiBuckets is the API's bucket → tier mapping, the one the limiter and
// the configuration check both use: the limits package's defaults plus the
// stream controls in the moderate tier.
func apiBuckets() map[string]string {
	buckets := limits.DefaultBuckets()
	buckets[BucketStart] = limits.TierModerate
	buckets[BucketStop] = limits.TierModerate
	buckets[BucketForgedToken] = limits.TierStrict
	return buckets
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// LimiterConfig is the API's limiter configuration without its client, read
// from the same variables (REDIS_KEY_PREFIX, RATE_LIMIT_OVERRIDES,
// RATE_LIMIT_FAILURE, RATE_LIMIT_FAIL_CLOSED, RATE_LIMIT_LEASES,
// RATE_LIMIT_REDIS_TIMEOUT, RATE_LIMIT_HASH_KEY or the QSTASH_TOKEN it is
// derived from), so an operator tool addresses exactly the windows the API
// keeps. The client-IP source is not needed and not read.
func LimiterConfig(getenv env.Getenv) (limits.Config, error) {
	r := env.NewReader(func(name string) string {
		if name == "RATE_LIMIT_IP_SOURCE" {
			return "direct" // unused here; readRateLimit requires one
		}
		return getenv(name)
	})
	prefix := r.Str("REDIS_KEY_PREFIX", "")
	token := strings.TrimSpace(getenv("QSTASH_TOKEN"))
	rl := readRateLimit(r, token)
	if r.Err() == nil && len(rl.HashKey) == 0 {
		r.Fail("RATE_LIMIT_HASH_KEY", "required (or QSTASH_TOKEN, which the API derives it from)")
	}
	if err := r.Err(); err != nil {
		return limits.Config{}, err
	}
	return limits.Config{
		Prefix: prefix, Buckets: apiBuckets(), Overrides: rl.Overrides, Failure: rl.Failure,
		Leases: rl.Leases, Timeout: rl.RedisTimeout, HashKey: rl.HashKey,
	}, nil
}
