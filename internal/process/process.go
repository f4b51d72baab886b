// Package process sets up what every jobworker binary shares before adding
// its routes: the logger, the metrics registry, the Redis client and the
// server, with Redis registered as the first stop function so it closes
// last, after everything that uses it.
package process

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/env"
	"github.com/digis/jobworker/internal/redisconn"
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
	log := server.NewLogger(os.Stderr, c.LogFormat, c.LogLevel).With("service", name)
	rdb, err := redisconn.Open(c.Redis)
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	reg := server.NewRegistry()
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
	})
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	// First registered, last to run: every part that talks to Redis has
	// stopped by then.
	srv.OnStop("redis", func(context.Context) error { return rdb.Close() })
	return &Process{Log: log, Registry: reg, Redis: rdb, Server: srv}, nil
}

// OnStop is Server.OnStop: fn runs at shutdown, before the parts registered
// earlier (Redis last of all).
func (p *Process) OnStop(name string, fn func(context.Context) error) { p.Server.OnStop(name, fn) }

// Run serves until SIGINT/SIGTERM, then shuts down and runs the stop
// functions.
func (p *Process) Run() error { return p.RunContext(server.SignalContext()) }

// RunContext serves until ctx is done, then shuts down and runs the stop
// functions.
func (p *Process) RunContext(ctx context.Context) error { return p.Server.Run(ctx) }

// Abort releases what was built (the stop functions, Redis last) when
// wiring fails before Run.
func (p *Process) Abort() { _ = p.Server.Abort() }
