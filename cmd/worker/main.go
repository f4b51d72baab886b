// Command worker receives what QStash and Stripe deliver: it verifies each
// request's signature, dedupes retried deliveries in Redis, runs the job and
// answers with the status that makes the sender stop, retry or dead-letter.
// Configuration comes from the environment (see README).
package main

import (
	"context"
	"fmt"
	"os"

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
	p, err := workerapp.Build(cfg, func(reg *jobs.Registry, p *process.Process) error {
		st, closeStore, err := store.Open(context.Background(), store.Config{
			DatabaseURL: cfg.DatabaseURL, Options: store.Options{Logger: p.Log},
		})
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		p.OnStop("database", func(context.Context) error { closeStore(); return nil })
		p.Server.AddReadinessCheck("database", st.Ping)
		c, err := cache.New(p.Redis, cache.Config{Prefix: cfg.KeyPrefix, Logger: p.Log, Registerer: p.Registry})
		if err != nil {
			return err
		}
		p.OnStop("cache", c.Close)
		return appjobs.Register(reg, appjobs.Deps{Log: p.Log, Store: st, Cache: c, Registerer: p.Registry})
	})
	if err != nil {
		return err
	}
	p.Log.Info("starting", "port", cfg.Port, "public_url", cfg.PublicURL)
	return p.Run()
}
