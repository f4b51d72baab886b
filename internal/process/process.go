// Package process sets up what every jobworker binary shares before adding
// its routes: the logger, the metrics registry, the Redis client and the
// server, with Redis registered among the first stop functions so it
// closes after everything that uses it (only the logs' flush runs later),
// and the flush of the process's counters to the fleet-wide numbers
// (package opsstats).
//
// The logger writes to stderr through a buffered writer (package
// logwriter): lines go out every 100 ms or 64 KiB, by one goroutine, and a
// stalled stderr drops lines past 4 MiB instead of stalling requests,
// counting them (jobworker_log_lines_dropped_total, and a warning with the
// count once stderr takes lines again). Its flush is the very last stop
// function, after the server drained and every part stopped; what is logged
// after it is written straight through.
package process

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/env"
	"github.com/digis/jobworker/internal/logwriter"
	"github.com/digis/jobworker/internal/opsstats"
	"github.com/digis/jobworker/internal/redisconn"
	"github.com/digis/jobworker/outbox"
	"github.com/digis/jobworker/server"
)

// Process is a binary's shared parts.
type Process struct {
	Log      *slog.Logger
	Registry *prometheus.Registry
	Redis    redis.UniversalClient
	Server   *server.Server
}

// New wires the shared parts for the binary called name.
func New(name string, c env.Common) (*Process, error) {
	var log *slog.Logger
	logs := logwriter.New(os.Stderr, logwriter.Config{OnDrop: func(lines uint64) {
		log.Warn("log lines dropped: stderr did not take them fast enough", "lines", lines)
	}})
	log = server.NewLogger(logs, c.LogFormat, c.LogLevel).With("service", name)
	rdb, err := redisconn.Open(c.Redis)
	if err != nil {
		_ = logs.Close()
		return nil, fmt.Errorf("redis: %w", err)
	}
	reg := server.NewRegistry()
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "jobworker_log_lines_dropped_total",
		Help: "Log lines dropped because stderr did not take them as fast as they came (see internal/logwriter).",
	}, func() float64 { return float64(logs.Dropped()) }))
	srv, err := server.New(server.Config{
		Name:            name,
		Addr:            ":" + strconv.Itoa(c.Port),
		BodyLimit:       c.BodyLimit,
		RequestTimeout:  c.RequestTimeout,
		ShutdownTimeout: c.ShutdownTimeout,
		DrainDelay:      c.DrainDelay,
		Ready:           func(ctx context.Context) error { return redisconn.Ping(ctx, rdb) },
		Logger:          log,
		Registry:        reg,
		MetricsAddr:     c.MetricsAddr,
		MetricsToken:    c.MetricsToken,
	})
	if err != nil {
		_ = rdb.Close()
		_ = logs.Close()
		return nil, err
	}
	// First registered, last to run: every line of the shutdown is in
	// the buffer by then.
	srv.OnStop("logs", func(ctx context.Context) error { return closeLogs(ctx, logs) })
	// Next, so it runs just before: every part that talks to Redis has
	// stopped by then.
	srv.OnStop("redis", func(context.Context) error { return rdb.Close() })
	p := &Process{Log: log, Registry: reg, Redis: rdb, Server: srv}
	if c.OpsStatsInterval > 0 {
		f, err := opsstats.NewFlusher(opsstats.Config{
			Redis: rdb, Gatherer: reg, Prefix: c.KeyPrefix, Interval: c.OpsStatsInterval, Logger: log,
		})
		if err != nil {
			_ = srv.Abort()
			return nil, err
		}
		f.Start()
		// Registered right after Redis, so it runs just before Redis
		// closes: the last flush carries every count of the process.
		srv.OnStop("ops stats", f.Stop)
	}
	return p, nil
}

// closeLogs flushes the buffered log lines and stops the writer, waiting
// for a stalled stderr no longer than the shutdown's remaining time.
func closeLogs(ctx context.Context, logs *logwriter.Writer) error {
	done := make(chan error, 1)
	go func() { done <- logs.Close() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("stderr did not take the last log lines: %w", ctx.Err())
	}
}

// OnStop is Server.OnStop: fn runs at shutdown, before the parts registered
// earlier (Redis last of all).
func (p *Process) OnStop(name string, fn func(context.Context) error) { p.Server.OnStop(name, fn) }

// RelayMaxBackoff caps the wait of a process's outbox relay between two
// attempts while QStash is unavailable, so the follow-ups go out at most
// this long after QStash is back (the package's default of a minute suits a
// library; one failed call per relay every 10 s costs QStash nothing).
const RelayMaxBackoff = 10 * time.Second

// Relay builds the process's outbox relay from cfg (Pool and Publisher set
// by the caller), logging to the process's logger, with its metrics on the
// process's registry and MaxBackoff RelayMaxBackoff unless cfg says
// otherwise. With start it runs in the background from now on and stops
// gracefully at shutdown, once the server has drained and before the parts
// registered earlier: the caller closes cfg.Pool after Run returns. Without
// start it is only built, for a route that runs it (Handler).
func (p *Process) Relay(cfg outbox.Config, start bool) (*outbox.Relay, error) {
	if cfg.Logger == nil {
		cfg.Logger = p.Log
	}
	if cfg.Registerer == nil {
		cfg.Registerer = p.Registry
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = RelayMaxBackoff
	}
	r, err := outbox.New(cfg)
	if err != nil || !start {
		return r, err
	}
	// Not a request's context: Stop ends it, after the in-flight requests
	// whose transactions it publishes.
	if err := r.Start(context.Background()); err != nil {
		return nil, err
	}
	p.OnStop("outbox relay", r.Stop)
	p.Log.Info("outbox relay started")
	return r, nil
}

// OutboxCommitted returns what the process calls after each transaction of
// its own that committed outbox rows written WithoutNotify (the routes'
// follow-ups; see internal/store FollowUps). With local, this process's
// started relay, it wakes that relay at once: no database round trip. With
// local nil (the relay runs elsewhere: OUTBOX_RELAY=off), it sends one
// NOTIFY on pool, outside any transaction and in the background, to wake
// the relays listening elsewhere; commits while a NOTIFY is in flight share
// the next one, and the last one due is sent at shutdown. It never blocks.
// A lost wake-up (a crash, a failed NOTIFY) delays the rows by a relay's
// sweep interval, nothing more.
func (p *Process) OutboxCommitted(pool *pgxpool.Pool, local *outbox.Relay) func() {
	if local != nil {
		return local.Wake
	}
	kick := make(chan struct{}, 1)
	stop := make(chan struct{})
	done := make(chan struct{})
	notify := func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := outbox.Notify(ctx, pool); err != nil {
			p.Log.Warn("outbox: notifying the relays failed; they find the jobs on their sweep", "error", err.Error())
		}
	}
	go func() {
		defer close(done)
		for {
			select {
			case <-kick:
				notify(context.Background())
			case <-stop:
				select {
				case <-kick:
					notify(context.Background())
				default:
				}
				return
			}
		}
	}()
	p.OnStop("outbox notifier", func(ctx context.Context) error {
		close(stop)
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	return func() {
		select {
		case kick <- struct{}{}:
		default: // one is due already
		}
	}
}

// Run serves until SIGINT/SIGTERM, then shuts down and runs the stop
// functions.
func (p *Process) Run() error { return p.RunContext(server.SignalContext()) }

// RunContext serves until ctx is done, then shuts down and runs the stop
// functions.
func (p *Process) RunContext(ctx context.Context) error { return p.Server.Run(ctx) }

// Abort releases what was built (the stop functions, Redis last) when
// wiring fails before Run.
func (p *Process) Abort() { _ = p.Server.Abort() }
