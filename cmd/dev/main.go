// Command dev runs the whole jobworker stack in one process, with no
// accounts and no external services: a local QStash (qstashdev), the worker,
// the API, an in-memory store with demo data and, unless REDIS_URL is set, an
// embedded Redis-compatible server. It prints the URLs, development tokens
// and curl lines to try, and the ops console's URL and token (OPS_TOKEN, or
// a new random one per run), and stops everything on Ctrl-C.
//
//	go run ./cmd/dev                       # everything in memory
//	REDIS_URL=redis://127.0.0.1:6379 go run ./cmd/dev
//	DATABASE_URL=postgres://... go run ./cmd/dev   # PostgreSQL, migrated at start
//
// The API and the worker are built exactly as cmd/api and cmd/worker build
// them (apiapp.Build, workerapp.Build); only their configuration is made
// here instead of read from the environment. With PostgreSQL the follow-up
// jobs go through the outbox (relays in both); with the in-memory store they
// are published right after each change, the development-only path.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/digis/jobworker/cache"
	"github.com/digis/jobworker/internal/apiapp"
	"github.com/digis/jobworker/internal/appjobs"
	"github.com/digis/jobworker/internal/auth"
	"github.com/digis/jobworker/internal/env"
	"github.com/digis/jobworker/internal/process"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/internal/workerapp"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/server"
)

// devJWTSecret signs the development tokens. It is public by design: the
// local stack is not a place for real users, and the production binaries
// refuse it (env.RefuseDevSecret).
const devJWTSecret = env.DevJWTSecret

type options struct {
	apiAddr, workerAddr, qstashAddr string
	apiMetrics, workerMetrics       string
	timeScale                       float64
}

func main() {
	var o options
	flag.StringVar(&o.apiAddr, "api", "127.0.0.1:3000", "API listen address")
	flag.StringVar(&o.workerAddr, "worker", "127.0.0.1:3001", "worker listen address")
	flag.StringVar(&o.qstashAddr, "qstash", qstashdev.DefaultAddr, "local QStash listen address")
	flag.StringVar(&o.apiMetrics, "api-metrics", "127.0.0.1:9300", "API /metrics listen address")
	flag.StringVar(&o.workerMetrics, "worker-metrics", "127.0.0.1:9301", "worker /metrics listen address")
	flag.Float64Var(&o.timeScale, "time-scale", 1, "multiplier for QStash's waits between retries (0.01: 100x faster)")
	flag.Parse()
	if err := run(server.SignalContext(), o, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "dev:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, getenv func(string) string, out io.Writer) error {
	log := server.NewLogger(os.Stderr, "text", slog.LevelInfo)

	redisURL := getenv("REDIS_URL")
	if redisURL == "" {
		mr := miniredis.NewMiniRedis()
		if err := mr.StartAddr("127.0.0.1:0"); err != nil {
			return fmt.Errorf("embedded redis: %w", err)
		}
		defer mr.Close()
		redisURL = "redis://" + mr.Addr()
		log.Warn("REDIS_URL is unset: using an embedded Redis-compatible server (miniredis); its data lives in this process only", "addr", mr.Addr())
	}

	st, closeStore, err := store.Open(ctx, store.Config{DatabaseURL: getenv("DATABASE_URL"), Migrate: true, Options: store.Options{Logger: log}})
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer closeStore()
	stream, demo, err := store.SeedDemo(ctx, st, store.Demo{})
	if err != nil {
		return fmt.Errorf("seeding demo data: %w", err)
	}

	qs, err := qstashdev.New(qstashdev.Config{TimeScale: o.timeScale, Logger: log.With("service", "qstash-dev")})
	if err != nil {
		return err
	}
	qsLn, err := net.Listen("tcp", o.qstashAddr)
	if err != nil {
		return fmt.Errorf("qstash-dev: %w", err)
	}
	qstashURL := "http://" + qsLn.Addr().String()
	current, next := qs.SigningKeys()

	workerURL := "http://" + o.workerAddr
	opsToken := getenv("OPS_TOKEN")
	if opsToken == "" {
		// A new one per run: the console is on, and nobody else on the
		// machine can guess the way in.
		var b [24]byte
		_, _ = rand.Read(b[:])
		opsToken = hex.EncodeToString(b[:])
	}
	common := map[string]string{
		"REDIS_URL": redisURL, "REDIS_KEY_PREFIX": getenv("REDIS_KEY_PREFIX"),
		"LOG_FORMAT": "text", "LOG_LEVEL": getenv("LOG_LEVEL"),
		"QSTASH_URL": qstashURL, "QSTASH_TOKEN": qstashdev.DevToken, "WORKER_PUBLIC_URL": workerURL,
		"SHUTDOWN_TIMEOUT": "10s", "OPS_STATS_INTERVAL": getenv("OPS_STATS_INTERVAL"),
		// The development switch: the values here are the published ones.
		env.DevelopmentVar: "development",
		// The store is opened above and shared; the binaries' configs only
		// need to know it is deliberately not a database of theirs.
		"DATABASE_URL": env.MemoryStore,
	}
	workerCfg, err := workerapp.LoadConfig(envOf(common, map[string]string{
		"PORT":                       port(o.workerAddr),
		"METRICS_ADDR":               o.workerMetrics,
		"QSTASH_CURRENT_SIGNING_KEY": current, "QSTASH_NEXT_SIGNING_KEY": next,
		"STRIPE_WEBHOOK_SECRET": "whsec_local_development_only",
		"OPS_TOKEN":             opsToken,
	}))
	if err != nil {
		return err
	}
	apiCfg, err := apiapp.LoadConfig(envOf(common, map[string]string{
		"PORT": port(o.apiAddr), "METRICS_ADDR": o.apiMetrics,
		"AUTH_JWT_SECRET": devJWTSecret, "RATE_LIMIT_IP_SOURCE": "direct",
	}))
	if err != nil {
		return err
	}

	worker, err := workerapp.Build(workerCfg, workerapp.Deps{Store: st, Register: func(reg *jobs.Registry, p *process.Process) error {
		c, err := cache.New(p.Redis, cache.Config{Prefix: workerCfg.KeyPrefix, Logger: p.Log, Registerer: p.Registry})
		if err != nil {
			return err
		}
		p.OnStop("cache", c.Close)
		return appjobs.Register(reg, appjobs.Deps{Log: p.Log, Store: st, Cache: c, Registerer: p.Registry})
	}})
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	api, err := apiapp.Build(apiCfg, apiapp.Deps{Store: st})
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}

	fanToken, err := auth.DevToken([]byte(devJWTSecret), demo.FanID, 24*time.Hour)
	if err != nil {
		return err
	}
	creatorToken, err := auth.DevToken([]byte(devJWTSecret), demo.CreatorID, 24*time.Hour)
	if err != nil {
		return err
	}

	// Everything stops together: the first to fail, or Ctrl-C, ends all.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	start := func(name string, serve func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
			cancel()
		}()
	}
	start("qstash-dev", func() error { return qs.Serve(qsLn) })
	start("worker", func() error { return worker.RunContext(ctx) })
	start("api", func() error { return api.RunContext(ctx) })
	go func() {
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		_ = qs.Shutdown(sctx)
	}()

	fmt.Fprintf(out, `
jobworker local stack is up (Ctrl-C stops it)

  API          http://%[1]s     metrics http://%[11]s/metrics
  worker       %[2]s     metrics http://%[12]s/metrics
  QStash (dev) %[3]s   token %[4]s
  ops console  %[2]s/ops/   token %[13]s

Development tokens (HS256, 24 h); paste these two lines into your shell:
  export FAN=%[6]s      # %[5]s, balance seeded
  export CREATOR=%[8]s  # %[7]s, owns the live stream

Try:
  # enqueue a demo job through QStash; the worker logs its delivery (job=demo.hello outcome=done)
  curl -X POST '%[3]s/v2/publish/%[2]s/jobs/demo.hello' -H 'Authorization: Bearer %[4]s' \
       -H 'Content-Type: application/json' -d '{"name":"world"}'

  # stream status (cached 10 s, rate-limited)
  curl 'http://%[1]s/api/streams/status?username=%[9]s'

  # a quick tip, idempotent: send it twice with the same key
  curl -X POST 'http://%[1]s/api/tips/quick' -H "Authorization: Bearer $FAN" \
       -H 'Idempotency-Key: tip-1' -H 'Content-Type: application/json' -d '{"amount":5,"streamId":%[10]d}'

`, o.apiAddr, workerURL, qstashURL, qstashdev.DevToken, demo.FanID, fanToken, demo.CreatorID, creatorToken, stream.Username, stream.ID,
		o.apiMetrics, o.workerMetrics, opsToken)

	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	log.Info("local stack stopped")
	return errors.Join(all...)
}

// envOf layers maps into a Getenv, later maps winning.
func envOf(layers ...map[string]string) env.Getenv {
	merged := map[string]string{}
	for _, l := range layers {
		for k, v := range l {
			merged[k] = v
		}
	}
	return func(k string) string { return merged[k] }
}

func port(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if _, err := strconv.Atoi(p); err != nil {
		return ""
	}
	return strings.TrimSpace(p)
}
