package workerapp_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/env"
	"github.com/digis/jobworker/internal/workerapp"
)

// workerEnv builds a Getenv from pairs, on top of a valid worker environment.
func workerEnv(over map[string]string) env.Getenv {
	base := map[string]string{
		"REDIS_URL":                  "redis://127.0.0.1:6379",
		"WORKER_PUBLIC_URL":          "https://worker.example.com/",
		"QSTASH_TOKEN":               "tok",
		"DATABASE_URL":               "memory",
		"QSTASH_CURRENT_SIGNING_KEY": "sig_current",
		"QSTASH_NEXT_SIGNING_KEY":    "sig_next",
		"STRIPE_WEBHOOK_SECRET":      "whsec_new,whsec_old",
	}
	for k, v := range over {
		base[k] = v
	}
	return func(k string) string { return base[k] }
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	w, err := workerapp.LoadConfig(workerEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if w.Port != 3001 || w.PublicURL != "https://worker.example.com" || w.QStashURL != "https://qstash.upstash.io" ||
		len(w.StripeWebhookSecrets) != 2 || w.StripeWebhookSecrets[1] != "whsec_old" ||
		w.JobDedupeTTL != 48*time.Hour || w.StripeDedupeTTL != 7*24*time.Hour || !w.OutboxRelay || !w.StripeLivemode {
		t.Fatalf("worker: %+v", w)
	}
	// STRIPE_MODE: live, unless on a development machine.
	for _, tc := range []struct {
		given map[string]string
		live  bool
	}{
		{map[string]string{"STRIPE_MODE": "test"}, false},
		{map[string]string{"STRIPE_MODE": "LIVE"}, true},
		{map[string]string{"JOBWORKER_ENV": "development"}, false},
		{map[string]string{"JOBWORKER_ENV": "development", "STRIPE_MODE": "live"}, true},
	} {
		if w, err := workerapp.LoadConfig(workerEnv(tc.given)); err != nil || w.StripeLivemode != tc.live {
			t.Errorf("%v: livemode %v (%v), want %v", tc.given, w.StripeLivemode, err, tc.live)
		}
	}
	if w.BodyLimit != 1<<20 || w.ShutdownTimeout != 25*time.Second || w.LogLevel != slog.LevelInfo || w.LogFormat != "json" {
		t.Fatalf("common defaults: %+v", w.Common)
	}
}

func TestConfigOverrides(t *testing.T) {
	t.Parallel()
	w, err := workerapp.LoadConfig(workerEnv(map[string]string{
		"PORT": "8081", "REDIS_TIMEOUT": "50ms", "BODY_LIMIT": "2MiB", "LOG_LEVEL": "debug",
		"LOG_FORMAT": "text", "REDIS_KEY_PREFIX": "app1:", "SHUTDOWN_DRAIN_DELAY": "3s",
		"REDIS_URL": "rediss+cluster://u:p@h1:6379?addr=h2:6379", "OUTBOX_RELAY": "OFF",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if w.OutboxRelay {
		t.Fatal("OUTBOX_RELAY=OFF left the relay on")
	}
	if w.Port != 8081 || w.Redis.Timeout != 50*time.Millisecond || w.BodyLimit != 2<<20 ||
		w.LogLevel != slog.LevelDebug || w.LogFormat != "text" || w.KeyPrefix != "app1:" || w.DrainDelay != 3*time.Second {
		t.Fatalf("%+v", w)
	}
}

func TestConfigBadValuesNameTheVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		given   map[string]string
		wantVar string
	}{
		{"missing redis", map[string]string{"REDIS_URL": ""}, "REDIS_URL"},
		{"bad redis scheme", map[string]string{"REDIS_URL": "http://x:1"}, "REDIS_URL"},
		{"redis without port", map[string]string{"REDIS_URL": "redis+cluster://h1?addr=h2"}, "REDIS_URL"},
		{"port text", map[string]string{"PORT": "eighty"}, "PORT"},
		{"port range", map[string]string{"PORT": "70000"}, "PORT"},
		{"empty current key", map[string]string{"QSTASH_CURRENT_SIGNING_KEY": ""}, "QSTASH_CURRENT_SIGNING_KEY"},
		{"blank next key", map[string]string{"QSTASH_NEXT_SIGNING_KEY": "  \t"}, "QSTASH_NEXT_SIGNING_KEY"},
		{"padded key", map[string]string{"QSTASH_NEXT_SIGNING_KEY": " sig "}, "QSTASH_NEXT_SIGNING_KEY"},
		{"blank stripe", map[string]string{"STRIPE_WEBHOOK_SECRET": " "}, "STRIPE_WEBHOOK_SECRET"},
		{"empty stripe entry", map[string]string{"STRIPE_WEBHOOK_SECRET": "whsec_a,,whsec_b"}, "STRIPE_WEBHOOK_SECRET"},
		{"public url relative", map[string]string{"WORKER_PUBLIC_URL": "/jobs"}, "WORKER_PUBLIC_URL"},
		{"public url query", map[string]string{"WORKER_PUBLIC_URL": "https://w.example.com?x=1"}, "WORKER_PUBLIC_URL"},
		{"job dedupe too short", map[string]string{"JOB_DEDUPE_TTL": "1h"}, "JOB_DEDUPE_TTL"},
		{"stripe dedupe too short", map[string]string{"STRIPE_DEDUPE_TTL": "72h"}, "STRIPE_DEDUPE_TTL"},
		{"stripe mode", map[string]string{"STRIPE_MODE": "sandbox"}, "STRIPE_MODE"},
		{"no database", map[string]string{"DATABASE_URL": ""}, "DATABASE_URL"},
		{"duration", map[string]string{"REDIS_TIMEOUT": "fast"}, "REDIS_TIMEOUT"},
		{"zero duration", map[string]string{"SHUTDOWN_TIMEOUT": "0s"}, "SHUTDOWN_TIMEOUT"},
		{"size", map[string]string{"BODY_LIMIT": "1MB"}, "BODY_LIMIT"},
		{"level", map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{"format", map[string]string{"LOG_FORMAT": "xml"}, "LOG_FORMAT"},
		{"relay", map[string]string{"OUTBOX_RELAY": "false"}, "OUTBOX_RELAY"},
		{"ops token too short", map[string]string{"OPS_TOKEN": "hunter2"}, "OPS_TOKEN"},
		{"ops token with spaces", map[string]string{"OPS_TOKEN": " 0123456789abcdef0123456789abcdef"}, "OPS_TOKEN"},
		{"ops stats interval", map[string]string{"OPS_STATS_INTERVAL": "often"}, "OPS_STATS_INTERVAL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := workerapp.LoadConfig(workerEnv(tt.given))
			var ce *env.Error
			if !errors.As(err, &ce) || ce.Var != tt.wantVar {
				t.Fatalf("err = %v, want a config error naming %s", err, tt.wantVar)
			}
			if !strings.HasPrefix(err.Error(), "config: "+tt.wantVar+": ") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("message %q is not one line naming the variable", err)
			}
			if v := tt.given["OPS_TOKEN"]; v != "" && strings.Contains(err.Error(), strings.TrimSpace(v)) {
				t.Fatalf("message %q echoes the token", err)
			}
		})
	}
}

func TestConfigSecretsNeverInErrors(t *testing.T) {
	t.Parallel()
	_, err := workerapp.LoadConfig(workerEnv(map[string]string{"REDIS_URL": "redis://user:hunter2secret@host:notaport"}))
	if err == nil {
		t.Fatal("bad URL accepted")
	}
	if strings.Contains(err.Error(), "hunter2secret") {
		t.Fatalf("password leaked into %q", err)
	}
}
