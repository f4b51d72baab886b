// Command api is jobworker's public HTTP API: it serves people and apps,
// rate-limits them, makes money routes idempotent and hands anything slow to
// QStash as a job. Configuration comes from the environment (see README).
//
//	api               serve (DATABASE_MIGRATE=true applies migrations first)
//	api -migrate      apply the database migrations and exit (a release step)
//	api -healthcheck  probe /readyz of a running api (container health checks)
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/digis/jobworker/internal/apiapp"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/server"
)

func main() {
	if server.IsProbe(os.Args) {
		os.Exit(server.Probe(apiapp.DefaultPort))
	}
	migrateOnly := len(os.Args) == 2 && (os.Args[1] == "-migrate" || os.Args[1] == "--migrate")
	if len(os.Args) > 1 && !migrateOnly {
		fmt.Fprintln(os.Stderr, "usage: api [-migrate | -healthcheck]")
		os.Exit(2)
	}
	var err error
	if migrateOnly {
		err = migrate()
	} else {
		err = run()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(1)
	}
}

// followUps says how the follow-up jobs leave, for the start-up line.
func followUps(databaseURL string, relay bool) string {
	switch {
	case databaseURL == "":
		return "published after the change (in-memory store, local stack only)"
	case relay:
		return "outbox, relay in process"
	}
	return "outbox, relay elsewhere (OUTBOX_RELAY=off)"
}

// migrate applies the embedded migrations (the outbox's included) to
// DATABASE_URL and exits. It needs
// only DATABASE_URL, so a release job can run it without the API's secrets.
func migrate() error {
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		return errors.New("config: DATABASE_URL: required by -migrate")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_, closeDB, err := store.Open(ctx, store.Config{DatabaseURL: url, Migrate: true})
	if err != nil {
		return err
	}
	closeDB()
	fmt.Fprintln(os.Stderr, "api: migrations applied")
	return nil
}

func run() error {
	cfg, err := apiapp.LoadConfig(os.Getenv)
	if err != nil {
		return err
	}
	log := server.NewLogger(os.Stderr, cfg.LogFormat, cfg.LogLevel).With("service", "api")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	st, closeStore, err := store.Open(ctx, store.Config{
		DatabaseURL: cfg.DatabaseURL,
		Migrate:     cfg.DatabaseMigrate,
		Options:     store.Options{MaxTipAmount: cfg.TipMaxAmount, Logger: log},
	})
	cancel()
	if err != nil {
		return err
	}
	defer closeStore()
	p, err := apiapp.Build(cfg, apiapp.Deps{Store: st})
	if err != nil {
		return err
	}
	p.Log.Info("starting", "port", cfg.Port, "metrics", cfg.MetricsWhere(), "qstash_url", cfg.QStashURL, "worker_public_url", cfg.WorkerPublicURL,
		"database", map[bool]string{true: "postgres", false: "in-memory"}[cfg.DatabaseURL != ""],
		"follow_ups", followUps(cfg.DatabaseURL, cfg.OutboxRelay),
		"ip_source", string(cfg.RateLimit.IPExtractor.Source()))
	return p.Run()
}
