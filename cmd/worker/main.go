// Command worker receives what QStash and Stripe deliver: it verifies each
// request's signature, dedupes retried deliveries in Redis, runs the job and
// answers with the status that makes the sender stop, retry or dead-letter.
// It also runs the outbox relay (unless OUTBOX_RELAY=off) and serves its
// route for a QStash schedule. Configuration comes from the environment (see
// README).
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/digis/jobworker/cache"
	"github.com/digis/jobworker/internal/appjobs"
	"github.com/digis/jobworker/internal/process"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/internal/workerapp"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/server"
)

func main() {
	if server.IsProbe(os.Args) {
		os.Exit(server.Probe(workerapp.DefaultPort))
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := workerapp.LoadConfig(os.Getenv)
	if err != nil {
		return err
	}
	log := server.NewLogger(os.Stderr, cfg.LogFormat, cfg.LogLevel).With("service", "worker")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	st, closeStore, err := store.Open(ctx, store.Config{DatabaseURL: cfg.DatabaseURL, Options: store.Options{Logger: log}})
	cancel()
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	// Closed after Run returned: the relay and the jobs have stopped.
	defer closeStore()
	p, err := workerapp.Build(cfg, workerapp.Deps{Store: st, Register: func(reg *jobs.Registry, p *process.Process) error {
		c, err := cache.New(p.Redis, cache.Config{Prefix: cfg.KeyPrefix, Logger: p.Log, Registerer: p.Registry})
		if err != nil {
			return err
		}
		p.OnStop("cache", c.Close)
		return appjobs.Register(reg, appjobs.Deps{Log: p.Log, Store: st, Cache: c, Registerer: p.Registry})
	}})
	if err != nil {
		return err
	}
	p.Log.Info("starting", "port", cfg.Port, "metrics", cfg.MetricsWhere(), "public_url", cfg.PublicURL,
		"database", map[bool]string{true: "postgres", false: "in-memory"}[cfg.DatabaseURL != ""],
		"outbox_relay", relayMode(cfg.DatabaseURL, cfg.OutboxRelay))
	return p.Run()
}

// relayMode says where the outbox relay runs, for the start-up line.
func relayMode(databaseURL string, inProcess bool) string {
	switch {
	case databaseURL == "":
		return "none (in-memory store)"
	case inProcess:
		return "in process, and route " + workerapp.RelayPath
	}
	return "route " + workerapp.RelayPath + " only (OUTBOX_RELAY=off)"
}
