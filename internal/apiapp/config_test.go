package apiapp_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/apiapp"
	"github.com/digis/jobworker/internal/env"
	"github.com/digis/jobworker/limits"
)

const apiSecret = "an-hs256-secret-that-is-at-least-32-bytes"

// apiEnv is a valid API environment plus over.
func apiEnv(over map[string]string) env.Getenv {
	base := map[string]string{
		"REDIS_URL":            "redis://127.0.0.1:6379",
		"WORKER_PUBLIC_URL":    "https://worker.example.com",
		"QSTASH_TOKEN":         "tok",
		"AUTH_JWT_SECRET":      apiSecret,
		"RATE_LIMIT_IP_SOURCE": "direct",
		"DATABASE_URL":         "memory",
	}
	for k, v := range over {
		base[k] = v
	}
	return func(k string) string { return base[k] }
}

func TestAPIDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := apiapp.LoadConfig(apiEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Port != 3000 || cfg.QStashURL != "https://qstash.upstash.io" || cfg.WorkerPublicURL != "https://worker.example.com" {
		t.Fatalf("api defaults: %+v", cfg)
	}
	if cfg.DatabaseURL != "" || cfg.DatabaseMigrate || !cfg.OutboxRelay || string(cfg.Auth.HS256Secret) != apiSecret ||
		cfg.TipMaxAmount != 100_000 || cfg.IdempotencyResultTTL != 24*time.Hour ||
		cfg.CacheRedisTimeout != 100*time.Millisecond || cfg.CacheStatusTTL != 10*time.Second {
		t.Fatalf("defaults: %+v", cfg)
	}
	rl := cfg.RateLimit
	if rl.IPExtractor == nil || rl.IPExtractor.Source() != limits.IPSourceDirect || len(rl.Overrides) != 0 ||
		len(rl.Failure) != 0 || rl.RedisTimeout != limits.DefaultTimeout || len(rl.Leases) != 0 {
		t.Fatalf("rate-limit defaults: %+v", rl)
	}
	// No RATE_LIMIT_HASH_KEY: the key is derived from QSTASH_TOKEN, which
	// every api instance shares, and is never the token itself.
	if !rl.HashKeyDerived || len(rl.HashKey) != 32 || bytes.Contains(rl.HashKey, []byte("tok")) {
		t.Fatalf("derived hash key: %x (derived %v)", rl.HashKey, rl.HashKeyDerived)
	}
	if err := (limits.Config{Client: redis.NewClient(&redis.Options{}), HashKey: rl.HashKey}).Validate(); err != nil {
		t.Fatalf("the derived key does not suit the limiter: %v", err)
	}
}

func TestAPIHashKeyDerivation(t *testing.T) {
	t.Parallel()
	key := func(env map[string]string) apiapp.RateLimit {
		t.Helper()
		cfg, err := apiapp.LoadConfig(apiEnv(env))
		if err != nil {
			t.Fatal(err)
		}
		return cfg.RateLimit
	}
	a, again := key(map[string]string{"QSTASH_TOKEN": "token-a"}), key(map[string]string{"QSTASH_TOKEN": "token-a"})
	b := key(map[string]string{"QSTASH_TOKEN": "token-b"})
	// Instances sharing the token agree; rotating it changes the key (every
	// window starts afresh once).
	if !bytes.Equal(a.HashKey, again.HashKey) || bytes.Equal(a.HashKey, b.HashKey) {
		t.Fatalf("same token %x / %x, other token %x", a.HashKey, again.HashKey, b.HashKey)
	}
	// A domain-separated HMAC, not the token, nor its plain hash.
	plain := sha256.Sum256([]byte("token-a"))
	if bytes.Equal(a.HashKey, plain[:]) || bytes.Equal(a.HashKey, []byte("token-a")) {
		t.Fatal("the derived key is the token or its plain SHA-256")
	}
	explicit := key(map[string]string{"QSTASH_TOKEN": "token-a", "RATE_LIMIT_HASH_KEY": "0123456789abcdef"})
	if explicit.HashKeyDerived || string(explicit.HashKey) != "0123456789abcdef" {
		t.Fatalf("RATE_LIMIT_HASH_KEY not used: %+v", explicit)
	}
}

func TestAPIOverrides(t *testing.T) {
	t.Parallel()
	cfg, err := apiapp.LoadConfig(apiEnv(map[string]string{
		"DATABASE_URL": "postgres://db/app", "DATABASE_MIGRATE": "true", "TIP_MAX_AMOUNT": "5000",
		"RATE_LIMIT_IP_SOURCE": "xff", "RATE_LIMIT_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1",
		"RATE_LIMIT_OVERRIDES": "tips:quick=5/1m,streams:start=3/10s", "RATE_LIMIT_FAIL_CLOSED": "moderate",
		"RATE_LIMIT_FAILURE":       "strict=local,streams:status=open",
		"RATE_LIMIT_REDIS_TIMEOUT": "80ms", "RATE_LIMIT_HASH_KEY": "0123456789abcdef",
		"RATE_LIMIT_LEASES":      "generous=12,streams:status=0",
		"IDEMPOTENCY_RESULT_TTL": "7d", "CACHE_REDIS_TIMEOUT": "40ms", "CACHE_STATUS_TTL": "5s",
		"OUTBOX_RELAY": "off",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DatabaseURL != "postgres://db/app" || !cfg.DatabaseMigrate || cfg.OutboxRelay || cfg.TipMaxAmount != 5000 ||
		cfg.IdempotencyResultTTL != 7*24*time.Hour || cfg.CacheRedisTimeout != 40*time.Millisecond || cfg.CacheStatusTTL != 5*time.Second {
		t.Fatalf("%+v", cfg)
	}
	rl := cfg.RateLimit
	if rl.IPExtractor.Source() != limits.IPSourceXFF || rl.Overrides["tips:quick"] != limits.PerMinute(5) ||
		rl.Overrides["streams:start"] != (limits.Quota{Limit: 3, Period: 10 * time.Second}) ||
		len(rl.Failure) != 3 || rl.Failure[limits.TierModerate] != limits.FailureClosed || rl.Failure[limits.TierStrict] != limits.FailureLocal ||
		rl.Failure["streams:status"] != limits.FailureOpen || rl.HashKeyDerived || rl.RedisTimeout != 80*time.Millisecond || string(rl.HashKey) != "0123456789abcdef" ||
		len(rl.Leases) != 2 || rl.Leases[limits.TierGenerous] != 12 {
		t.Fatalf("%+v", rl)
	}
}

func TestAPIJWKS(t *testing.T) {
	t.Parallel()
	cfg, err := apiapp.LoadConfig(apiEnv(map[string]string{"AUTH_JWT_SECRET": "", "AUTH_JWKS_URL": "https://idp.example.com/jwks.json"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Auth.JWKSURL != "https://idp.example.com/jwks.json" || cfg.Auth.HS256Secret != nil {
		t.Fatalf("%+v", cfg.Auth)
	}
}

func TestAPIBadValuesNameTheVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		given   map[string]string
		wantVar string
	}{
		{"no auth", map[string]string{"AUTH_JWT_SECRET": ""}, "AUTH_JWT_SECRET"},
		{"short secret", map[string]string{"AUTH_JWT_SECRET": "hunter2"}, "AUTH_JWT_SECRET"},
		{"both auth modes", map[string]string{"AUTH_JWKS_URL": "https://idp.example.com/jwks.json"}, "AUTH_JWT_SECRET"},
		{"jwks over http", map[string]string{"AUTH_JWT_SECRET": "", "AUTH_JWKS_URL": "http://idp.example.com/jwks"}, "AUTH_JWKS_URL"},
		{"no ip source", map[string]string{"RATE_LIMIT_IP_SOURCE": ""}, "RATE_LIMIT_IP_SOURCE"},
		{"relay neither on nor off", map[string]string{"OUTBOX_RELAY": "no"}, "OUTBOX_RELAY"},
		{"unknown ip source", map[string]string{"RATE_LIMIT_IP_SOURCE": "guess"}, "RATE_LIMIT_IP_SOURCE"},
		{"xff without proxies", map[string]string{"RATE_LIMIT_IP_SOURCE": "xff"}, "RATE_LIMIT_TRUSTED_PROXIES"},
		{"bad proxy", map[string]string{"RATE_LIMIT_IP_SOURCE": "xff", "RATE_LIMIT_TRUSTED_PROXIES": "10.0.0.0/99"}, "RATE_LIMIT_TRUSTED_PROXIES"},
		{"proxies for direct", map[string]string{"RATE_LIMIT_TRUSTED_PROXIES": "10.0.0.1"}, "RATE_LIMIT_TRUSTED_PROXIES"},
		{"bad override", map[string]string{"RATE_LIMIT_OVERRIDES": "tips:quick=lots"}, "RATE_LIMIT_OVERRIDES"},
		{"unknown bucket", map[string]string{"RATE_LIMIT_OVERRIDES": "tips:slow=5/1m"}, "RATE_LIMIT_OVERRIDES"},
		{"bad lease", map[string]string{"RATE_LIMIT_LEASES": "generous=some"}, "RATE_LIMIT_LEASES"},
		{"lease for unknown name", map[string]string{"RATE_LIMIT_LEASES": "gold=5"}, "RATE_LIMIT_LEASES"},
		{"lease above a tier's limit", map[string]string{"RATE_LIMIT_LEASES": "strict=11"}, "RATE_LIMIT_LEASES"},
		{"lease above an override", map[string]string{"RATE_LIMIT_LEASES": "streams:status=20",
			"RATE_LIMIT_OVERRIDES": "streams:status=10/1m"}, "RATE_LIMIT_LEASES"},
		{"lease for a tier's bucket above its override", map[string]string{"RATE_LIMIT_LEASES": "moderate=6",
			"RATE_LIMIT_OVERRIDES": "streams:start=5/1m"}, "RATE_LIMIT_LEASES"},
		{"bad failure mode", map[string]string{"RATE_LIMIT_FAILURE": "strict=maybe"}, "RATE_LIMIT_FAILURE"},
		{"failure for unknown name", map[string]string{"RATE_LIMIT_FAILURE": "gold=open"}, "RATE_LIMIT_FAILURE"},
		{"fail closed for unknown name", map[string]string{"RATE_LIMIT_FAIL_CLOSED": "strikt"}, "RATE_LIMIT_FAIL_CLOSED"},
		{"fail closed with a brace", map[string]string{"RATE_LIMIT_FAIL_CLOSED": "a{b}"}, "RATE_LIMIT_FAIL_CLOSED"},
		{"fail closed contradicting failure", map[string]string{"RATE_LIMIT_FAIL_CLOSED": "strict",
			"RATE_LIMIT_FAILURE": "strict=open"}, "RATE_LIMIT_FAIL_CLOSED"},
		{"bad limiter timeout", map[string]string{"RATE_LIMIT_REDIS_TIMEOUT": "soon"}, "RATE_LIMIT_REDIS_TIMEOUT"},
		{"short hash key", map[string]string{"RATE_LIMIT_HASH_KEY": "abc"}, "RATE_LIMIT_HASH_KEY"},
		{"bad migrate flag", map[string]string{"DATABASE_MIGRATE": "yes please"}, "DATABASE_MIGRATE"},
		{"zero tip max", map[string]string{"TIP_MAX_AMOUNT": "0"}, "TIP_MAX_AMOUNT"},
		{"text tip max", map[string]string{"TIP_MAX_AMOUNT": "ten"}, "TIP_MAX_AMOUNT"},
		{"bad idempotency ttl", map[string]string{"IDEMPOTENCY_RESULT_TTL": "-1h"}, "IDEMPOTENCY_RESULT_TTL"},
		{"bad cache timeout", map[string]string{"CACHE_REDIS_TIMEOUT": "0s"}, "CACHE_REDIS_TIMEOUT"},
		{"long status ttl", map[string]string{"CACHE_STATUS_TTL": "1h"}, "CACHE_STATUS_TTL"},
		{"missing token", map[string]string{"QSTASH_TOKEN": ""}, "QSTASH_TOKEN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := apiapp.LoadConfig(apiEnv(tt.given))
			var ce *env.Error
			if !errors.As(err, &ce) || ce.Var != tt.wantVar {
				t.Fatalf("err = %v, want a config error naming %s", err, tt.wantVar)
			}
			if !strings.HasPrefix(err.Error(), "config: "+tt.wantVar+": ") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("message %q is not one line naming the variable", err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the secret leaked into %q", err)
			}
		})
	}
}

// TestDevSecretsNeedTheDevelopmentSwitch: the local stack's JWT secret and
// qstash-dev's token start the API only with JOBWORKER_ENV=development; a
// misspelt switch is an error of its own.
func TestDevSecretsNeedTheDevelopmentSwitch(t *testing.T) {
	t.Parallel()
	dev := map[string]string{"AUTH_JWT_SECRET": env.DevJWTSecret, "QSTASH_TOKEN": "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="}
	for _, tc := range []struct {
		given   map[string]string
		wantVar string // "" for a config that loads
	}{
		{given: map[string]string{"AUTH_JWT_SECRET": env.DevJWTSecret}, wantVar: "AUTH_JWT_SECRET"},
		{given: map[string]string{"QSTASH_TOKEN": dev["QSTASH_TOKEN"]}, wantVar: "QSTASH_TOKEN"},
		{given: map[string]string{"AUTH_JWT_SECRET": env.DevJWTSecret, "JOBWORKER_ENV": "production"}, wantVar: "AUTH_JWT_SECRET"},
		{given: map[string]string{"JOBWORKER_ENV": "dev"}, wantVar: "JOBWORKER_ENV"},
		{given: map[string]string{"AUTH_JWT_SECRET": env.DevJWTSecret, "QSTASH_TOKEN": dev["QSTASH_TOKEN"], "JOBWORKER_ENV": "development"}},
		{given: map[string]string{"JOBWORKER_ENV": "production"}},
	} {
		cfg, err := apiapp.LoadConfig(apiEnv(tc.given))
		var ee *env.Error
		switch {
		case tc.wantVar == "" && err != nil:
			t.Errorf("%v: %v", tc.given, err)
		case tc.wantVar == "" && cfg.Development != (tc.given["JOBWORKER_ENV"] == "development"):
			t.Errorf("%v: Development = %v", tc.given, cfg.Development)
		case tc.wantVar != "" && (!errors.As(err, &ee) || ee.Var != tc.wantVar):
			t.Errorf("%v: error %v, want one naming %s", tc.given, err, tc.wantVar)
		case err != nil && (strings.Contains(err.Error(), env.DevJWTSecret) || strings.Contains(err.Error(), dev["QSTASH_TOKEN"])):
			t.Errorf("%v: the error echoes the secret: %v", tc.given, err)
		}
	}
}
