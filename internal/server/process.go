package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/config"
	"github.com/digis/jobworker/internal/redisconn"
)

// Process is what every binary sets up from its common configuration before
// adding its own routes: logger, metrics registry, Redis client and server.
type Process struct {
	Log      *slog.Logger
	Registry *prometheus.Registry
	Redis    redis.UniversalClient
	Server   *Server
}

// NewProcess wires the shared parts for the binary called name.
func NewProcess(name string, c config.Common) (*Process, error) {
	log := NewLogger(os.Stderr, c.LogFormat, c.LogLevel).With("service", name)
	rdb, err := redisconn.Open(c.Redis)
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	reg := NewRegistry()
	srv, err := New(Config{
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
	return &Process{Log: log, Registry: reg, Redis: rdb, Server: srv}, nil
}

// Run serves until SIGINT/SIGTERM, then shuts down and closes Redis.
func (p *Process) Run() error { return p.RunContext(SignalContext()) }

// RunContext serves until ctx is done, then shuts down and closes Redis.
func (p *Process) RunContext(ctx context.Context) error {
	defer p.Redis.Close()
	return p.Server.Run(ctx)
}
