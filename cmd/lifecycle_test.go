// Package cmd_test runs the real api and worker binaries against a real
// redis-server: start-up, health, readiness across a Redis outage, metrics,
// configuration errors and SIGTERM.
package cmd_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/env"
	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/proctest"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/qstashdev"
)

type binary struct {
	name, pkg string
	env       func(redisURL string) []string
}

const apiJWTSecret = "lifecycle-test-secret-0123456789abcdef"

var binaries = []binary{
	{"api", "github.com/digis/jobworker/cmd/api", func(redisURL string) []string {
		return []string{
			"REDIS_URL=" + redisURL, "QSTASH_URL=http://127.0.0.1:1", "QSTASH_TOKEN=test-token",
			"WORKER_PUBLIC_URL=http://127.0.0.1:2", "LOG_FORMAT=text",
			"AUTH_JWT_SECRET=" + apiJWTSecret, "RATE_LIMIT_IP_SOURCE=direct", "DATABASE_URL=memory",
		}
	}},
	{"worker", "github.com/digis/jobworker/cmd/worker", func(redisURL string) []string {
		return []string{
			"REDIS_URL=" + redisURL, "WORKER_PUBLIC_URL=http://127.0.0.1:2",
			"QSTASH_CURRENT_SIGNING_KEY=sig_current", "QSTASH_NEXT_SIGNING_KEY=sig_next",
			"STRIPE_WEBHOOK_SECRET=whsec_test", "LOG_FORMAT=text",
			"QSTASH_URL=http://127.0.0.1:1", "QSTASH_TOKEN=test-token", "DATABASE_URL=memory",
		}
	}},
}

func TestBinariesLifecycle(t *testing.T) {
	t.Parallel()
	for _, b := range binaries {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			bin := proctest.Build(t, b.pkg)
			rs := redistest.Start(t)
			p := proctest.Start(t, bin, nil, append(b.env(rs.URL()), "REDIS_TIMEOUT=100ms")...)
			p.WaitHealthy(t)
			p.WaitStatus(t, "/readyz", 200, 5*time.Second)
			if code, out := proctest.Run(t, 10*time.Second, bin, []string{"-healthcheck"}, "PORT="+strconv.Itoa(p.Port)); code != 0 {
				t.Fatalf("-healthcheck on a ready server: exit %d %s", code, out)
			}

			res, err := http.Get(p.MetricsURL + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || !strings.Contains(string(body), `jobworker_http_requests_total{code="200",method="GET",route="/readyz",server="`+b.name+`"}`) {
				t.Fatalf("metrics: %d\n%s", res.StatusCode, body)
			}

			// Redis goes away: not ready, still alive. It comes back: ready.
			rs.Stop()
			p.WaitStatus(t, "/readyz", 503, 5*time.Second)
			p.WaitStatus(t, "/healthz", 200, time.Second)
			if code, _ := proctest.Run(t, 10*time.Second, bin, []string{"-healthcheck"}, "PORT="+strconv.Itoa(p.Port)); code != 1 {
				t.Fatalf("-healthcheck with Redis down: exit %d, want 1", code)
			}
			rs.Restart()
			p.WaitStatus(t, "/readyz", 200, 10*time.Second)

			if err := p.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := p.Wait(t, 10*time.Second); code != 0 {
				t.Fatalf("exit code %d after SIGTERM\n%s", code, p.Output())
			}
			out := p.Output()
			if !strings.Contains(out, "stopped") {
				t.Fatalf("no clean shutdown logged:\n%s", out)
			}
			for _, secret := range []string{"test-token", "sig_current", "sig_next", "whsec_test", apiJWTSecret} {
				if strings.Contains(out, secret) {
					t.Fatalf("secret %q in logs:\n%s", secret, out)
				}
			}
		})
	}
}

func TestBadConfigExits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		bin      binary
		override string
		wantVar  string
	}{
		{binaries[0], "REDIS_URL=", "REDIS_URL"},
		{binaries[0], "QSTASH_TOKEN=", "QSTASH_TOKEN"},
		{binaries[0], "PORT=http", "PORT"},
		{binaries[0], "AUTH_JWT_SECRET=short", "AUTH_JWT_SECRET"},
		{binaries[0], "RATE_LIMIT_IP_SOURCE=", "RATE_LIMIT_IP_SOURCE"},
		{binaries[0], "RATE_LIMIT_IP_SOURCE=xff", "RATE_LIMIT_TRUSTED_PROXIES"},
		{binaries[1], "QSTASH_CURRENT_SIGNING_KEY=   ", "QSTASH_CURRENT_SIGNING_KEY"},
		{binaries[1], "QSTASH_NEXT_SIGNING_KEY=", "QSTASH_NEXT_SIGNING_KEY"},
		{binaries[1], "STRIPE_WEBHOOK_SECRET= ", "STRIPE_WEBHOOK_SECRET"},
		{binaries[1], "REDIS_URL=memcached://x:1", "REDIS_URL"},
		{binaries[1], "WORKER_PUBLIC_URL=worker.local", "WORKER_PUBLIC_URL"},
		{binaries[1], "QSTASH_TOKEN=", "QSTASH_TOKEN"},
		{binaries[1], "DATABASE_URL=", "DATABASE_URL"},
		{binaries[0], "DATABASE_URL=", "DATABASE_URL"},
		{binaries[1], "STRIPE_DEDUPE_TTL=24h", "STRIPE_DEDUPE_TTL"},
		{binaries[1], "JOB_DEDUPE_TTL=1h", "JOB_DEDUPE_TTL"},
		{binaries[0], "METRICS_ADDR=:3000", "METRICS_ADDR"}, // the API's serving port
		{binaries[1], "METRICS_ADDR=9301", "METRICS_ADDR"},
		{binaries[1], "METRICS_TOKEN=short", "METRICS_TOKEN"},
	}
	for _, tt := range tests {
		t.Run(tt.bin.name+"/"+tt.wantVar, func(t *testing.T) {
			t.Parallel()
			bin := proctest.Build(t, tt.bin.pkg)
			env := append(tt.bin.env("redis://127.0.0.1:1"), tt.override)
			code, out := proctest.Run(t, 30*time.Second, bin, nil, env...)
			if code == 0 {
				t.Fatalf("exit 0 with %s:\n%s", tt.override, out)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tt.wantVar) {
				t.Fatalf("want one line naming %s, got:\n%s", tt.wantVar, out)
			}
		})
	}
}

// TestPublishedDevSecretsRefused: the production binaries refuse every
// development secret published in this repository (the local stack's JWT
// secrets, qstash-dev's token and signing keys, the local Stripe secret)
// with one line naming the variable and never the value, unless
// JOBWORKER_ENV=development says this is a development machine.
func TestPublishedDevSecretsRefused(t *testing.T) {
	t.Parallel()
	tests := []struct {
		bin          binary
		name, secret string
		value        string // the variable's value; secret when empty
	}{
		{bin: binaries[0], name: "AUTH_JWT_SECRET", secret: env.DevJWTSecret},
		{bin: binaries[0], name: "AUTH_JWT_SECRET", secret: "local-development-only-jwt-secret-not-for-production"},
		{bin: binaries[0], name: "QSTASH_TOKEN", secret: qstashdev.DevToken},
		{bin: binaries[1], name: "QSTASH_TOKEN", secret: qstashdev.DevToken},
		{bin: binaries[1], name: "QSTASH_CURRENT_SIGNING_KEY", secret: qstashdev.DevCurrentSigningKey},
		{bin: binaries[1], name: "QSTASH_NEXT_SIGNING_KEY", secret: qstashdev.DevNextSigningKey},
		{bin: binaries[1], name: "STRIPE_WEBHOOK_SECRET", secret: "whsec_local_development_only"},
		{bin: binaries[1], name: "STRIPE_WEBHOOK_SECRET", secret: "whsec_local_development_only", value: "whsec_new,whsec_local_development_only"},
	}
	for _, tt := range tests {
		t.Run(tt.bin.name+"/"+tt.name, func(t *testing.T) {
			t.Parallel()
			bin := proctest.Build(t, tt.bin.pkg)
			value := tt.value
			if value == "" {
				value = tt.secret
			}
			for _, mode := range []string{"", "JOBWORKER_ENV=production"} {
				e := append(tt.bin.env("redis://127.0.0.1:1"), tt.name+"="+value)
				if mode != "" {
					e = append(e, mode)
				}
				code, out := proctest.Run(t, 30*time.Second, bin, nil, e...)
				lines := strings.Split(strings.TrimSpace(out), "\n")
				if code == 0 || len(lines) != 1 || !strings.Contains(lines[0], tt.name) || !strings.Contains(lines[0], "development secret") {
					t.Fatalf("%s %s: exit %d, want one line naming %s:\n%s", mode, tt.name, code, tt.name, out)
				}
				if strings.Contains(out, tt.secret) {
					t.Fatalf("the error echoes the secret: %s", out)
				}
			}
		})
	}
}

// TestReadyOnlyAfterMigration: both binaries started on a PostgreSQL
// database their release has not migrated yet stay alive but unready and say
// why; once the release step (`api -migrate`) has run they become ready
// without a restart.
func TestReadyOnlyAfterMigration(t *testing.T) {
	t.Parallel()
	db := pgtest.Create(t)
	rs := redistest.Start(t)
	apiBin := proctest.Build(t, binaries[0].pkg)
	var procs []*proctest.Proc
	for _, b := range binaries {
		bin := proctest.Build(t, b.pkg)
		p := proctest.Start(t, bin, nil, append(b.env(rs.URL()), "DATABASE_URL="+db.URL)...)
		p.WaitHealthy(t)
		p.WaitStatus(t, "/readyz", 503, 5*time.Second)
		procs = append(procs, p)
	}
	if code, out := proctest.Run(t, time.Minute, apiBin, []string{"-migrate"}, "DATABASE_URL="+db.URL); code != 0 {
		t.Fatalf("api -migrate: exit %d\n%s", code, out)
	}
	for i, p := range procs {
		p.WaitStatus(t, "/readyz", 200, 10*time.Second)
		// Log lines are buffered for up to 100 ms: wait for it.
		testwait.For(t, 10*time.Second, binaries[i].name+" saying why it was unready", func() bool {
			return strings.Contains(p.Output(), "schema is behind")
		})
	}
}
