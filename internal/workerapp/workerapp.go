// Package workerapp wires cmd/worker: the routes QStash and Stripe call, on
// top of the shared server. cmd/worker and cmd/dev both build the worker
// through Build, so the local stack runs exactly the production wiring.
package workerapp

import (
	"fmt"
	"log/slog"

	"github.com/digis/jobworker/idempotency"
	"github.com/digis/jobworker/internal/config"
	"github.com/digis/jobworker/internal/server"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/webhooks"
)

// Routes the worker serves below WORKER_PUBLIC_URL.
const (
	// JobsRoute receives job deliveries: $WORKER_PUBLIC_URL/jobs/{name}.
	JobsRoute = jobs.PathPrefix + ":name"
	// FailureCallbackPath receives QStash failure callbacks for dead jobs.
	FailureCallbackPath = "/qstash/failed"
)

// Build creates the worker process with its routes. register adds the job
// handlers to the registry (the reference application's jobs, or a test's).
func Build(cfg config.Worker, register func(*jobs.Registry, *slog.Logger) error) (*server.Process, error) {
	p, err := server.NewProcess("worker", cfg.Common)
	if err != nil {
		return nil, err
	}
	if err := wire(p, cfg, register); err != nil {
		_ = p.Redis.Close()
		return nil, err
	}
	return p, nil
}

func wire(p *server.Process, cfg config.Worker, register func(*jobs.Registry, *slog.Logger) error) error {
	reg, err := jobs.NewRegistry(jobs.RegistryConfig{Registerer: p.Registry})
	if err != nil {
		return err
	}
	if register != nil {
		if err := register(reg, p.Log); err != nil {
			return fmt.Errorf("registering jobs: %w", err)
		}
	}
	dedupe, err := idempotency.NewStore(p.Redis, idempotency.StoreConfig{
		Prefix:    cfg.KeyPrefix,
		Namespace: "qstash",
		ResultTTL: cfg.JobDedupeTTL,
		Timeout:   cfg.Redis.Timeout,
	})
	if err != nil {
		return err
	}
	qv, err := webhooks.NewQStashVerifier(webhooks.QStashConfig{
		CurrentSigningKey: cfg.QStashCurrentSigningKey,
		NextSigningKey:    cfg.QStashNextSigningKey,
		Logger:            p.Log,
		Registerer:        p.Registry,
	})
	if err != nil {
		return err
	}
	verify, err := webhooks.VerifyQStashConfig{
		Verifier:     qv,
		PublicURL:    cfg.PublicURL,
		MaxBodyBytes: cfg.BodyLimit,
	}.ToMiddleware()
	if err != nil {
		return err
	}
	deliveries, err := webhooks.JobsConfig{
		Registry: reg, Store: dedupe, Logger: p.Log, Registerer: p.Registry,
	}.Handler()
	if err != nil {
		return err
	}
	failed, err := webhooks.FailureCallbackConfig{
		Registry: reg, Logger: p.Log, Registerer: p.Registry,
	}.Handler()
	if err != nil {
		return err
	}
	// Draining comes first: a delivery refused during shutdown is retried
	// by QStash on a live instance, before any work or Redis call.
	drain := p.Server.RejectWhileDraining()
	p.Server.Echo.POST(JobsRoute, deliveries, drain, verify)
	p.Server.Echo.POST(FailureCallbackPath, failed, drain, verify)
	return nil
}
