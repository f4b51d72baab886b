// Command worker receives what QStash and Stripe deliver: it verifies each
// request's signature, dedupes retried deliveries in Redis, runs the job and
// answers with the status that makes the sender stop, retry or dead-letter.
// It also runs the outbox relay (unless OUTBOX_RELAY=off) and serves its
// route for a QStash schedule. Configuration comes from the environment (see
// README).
//
//	worker                   serve
//	worker -sync-schedules   sync the periodic jobs to QStash schedules and exit (a release step)
//	worker -healthcheck      probe a running worker (container health check)
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/digis/jobworker/cache"
	"github.com/digis/jobworker/internal/appjobs"
	"github.com/digis/jobworker/internal/process"
	"github.com/digis/jobworker/internal/schedules"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/internal/workerapp"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/jobs/control"
	"github.com/digis/jobworker/server"
)

func main() {
	if server.IsProbe(os.Args) {
		os.Exit(server.Probe(workerapp.DefaultPort))
	}
	syncOnly := len(os.Args) == 2 && (os.Args[1] == "-sync-schedules" || os.Args[1] == "--sync-schedules")
	if len(os.Args) > 1 && !syncOnly {
		fmt.Fprintln(os.Stderr, "usage: worker [-sync-schedules | -healthcheck]")
		os.Exit(2)
	}
	var err error
	if syncOnly {
		err = syncSchedules()
	} else {
		err = run()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

// syncSchedules makes QStash's schedules match the periodic jobs and exits.
// It needs only QSTASH_URL, QSTASH_TOKEN, WORKER_PUBLIC_URL and
// SCHEDULES_APP, so a release job can run it without the worker's other
// secrets.
func syncSchedules() error {
	cfg, err := schedules.LoadConfig(os.Getenv)
	if err != nil {
		return err
	}
	c, err := control.New(cfg.Control)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	plan, err := schedules.Sync(ctx, c, false)
	if perr := schedules.Print(os.Stderr, plan, false); perr != nil && err == nil {
		err = perr
	}
	return err
}

// syncAtStart is SCHEDULES_SYNC=on: a bad declaration stops the start, an
// unreachable QStash only warns (the schedules QStash has keep running).
func syncAtStart(p *process.Process, cfg workerapp.Config) error {
	c, err := control.New(control.Config{QStashURL: cfg.QStashURL, Token: cfg.QStashToken,
		WorkerPublicURL: cfg.PublicURL, App: cfg.SchedulesApp})
	if err != nil {
		return fmt.Errorf("schedules: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	plan, err := schedules.Sync(ctx, c, false)
	switch {
	case errors.Is(err, control.ErrInvalidArgument):
		return fmt.Errorf("schedules: %w", err)
	case err != nil:
		p.Log.Warn("schedule sync failed; QStash keeps the schedules it has", "error", err.Error())
		return nil
	}
	n := 0
	for _, ch := range plan.Changes {
		if ch.Action != control.ActionKeep {
			n++
		}
	}
	p.Log.Info("schedules synced", "changes", n, "schedules", len(plan.Changes), "foreign", plan.Foreign)
	return nil
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
	if cfg.SchedulesSync {
		if err := syncAtStart(p, cfg); err != nil {
			p.Abort() // the stop functions, the logs' flush among them
			return err
		}
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
