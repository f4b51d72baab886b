// Package workerapp wires cmd/worker: the public worker kit (package worker)
// for QStash deliveries, and the Stripe webhook route, on the shared
// process. cmd/worker and cmd/dev both build the worker through Build, so
// the local stack runs exactly the production wiring.
package workerapp

import (
	"context"
	"fmt"

	"github.com/digis/jobworker/idempotency"
	"github.com/digis/jobworker/internal/appjobs"
	"github.com/digis/jobworker/internal/process"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/webhooks"
	"github.com/digis/jobworker/worker"
)

// Routes the worker serves below WORKER_PUBLIC_URL.
const (
	// JobsRoute receives job deliveries: $WORKER_PUBLIC_URL/jobs/{name}.
	JobsRoute = jobs.PathPrefix + ":name"
	// FailureCallbackPath receives QStash failure callbacks for dead jobs.
	FailureCallbackPath = worker.DefaultFailureCallbackPath
	// StripePath receives Stripe webhook events.
	StripePath = "/webhooks/stripe"
)

// Build creates the worker process with its routes. register adds the job
// handlers to the registry (the reference application's jobs, or a test's);
// it gets the process for its logger, Redis client, metrics registry and
// stop functions.
func Build(cfg Config, register func(*jobs.Registry, *process.Process) error) (*process.Process, error) {
	p, err := process.New("worker", cfg.Common)
	if err != nil {
		return nil, err
	}
	if err := wire(p, cfg, register); err != nil {
		p.Abort()
		return nil, err
	}
	return p, nil
}

func wire(p *process.Process, cfg Config, register func(*jobs.Registry, *process.Process) error) error {
	reg, err := jobs.NewRegistry(jobs.RegistryConfig{Registerer: p.Registry})
	if err != nil {
		return err
	}
	if register != nil {
		if err := register(reg, p); err != nil {
			return fmt.Errorf("registering jobs: %w", err)
		}
	}
	deliveries, err := worker.New(worker.Config{
		Registry: reg, Redis: p.Redis, PublicURL: cfg.PublicURL,
		CurrentSigningKey: cfg.QStashCurrentSigningKey, NextSigningKey: cfg.QStashNextSigningKey,
		KeyPrefix: cfg.KeyPrefix, DedupeTTL: cfg.JobDedupeTTL, RedisTimeout: cfg.Redis.Timeout,
		MaxBodyBytes: cfg.BodyLimit, Draining: p.Server.Draining,
		Logger: p.Log, Registerer: p.Registry,
	})
	if err != nil {
		return err
	}
	deliveries.Mount(p.Server.Echo)
	p.OnStop("deliveries", deliveries.Close)
	return stripeRoute(p, cfg)
}

// stripeRoute adds POST /webhooks/stripe: verify, dedupe on the event id,
// publish a stripe.event job (deduplicated by the event id), answer 200.
func stripeRoute(p *process.Process, cfg Config) error {
	sv, err := webhooks.NewStripeVerifier(webhooks.StripeConfig{
		Secrets: cfg.StripeWebhookSecrets, Logger: p.Log, Registerer: p.Registry,
	})
	if err != nil {
		return err
	}
	verify, err := webhooks.VerifyStripeConfig{Verifier: sv, MaxBodyBytes: cfg.BodyLimit}.ToMiddleware()
	if err != nil {
		return err
	}
	client, err := jobs.NewClient(jobs.ClientConfig{
		QStashURL: cfg.QStashURL, Token: cfg.QStashToken, WorkerPublicURL: cfg.PublicURL,
		Logger: p.Log, Registerer: p.Registry,
	})
	if err != nil {
		return err
	}
	dedupe, err := idempotency.NewStore(p.Redis, idempotency.StoreConfig{
		Prefix: cfg.KeyPrefix, Namespace: "stripe", ResultTTL: cfg.StripeDedupeTTL, Timeout: cfg.Redis.Timeout,
		Logger: p.Log, Registerer: p.Registry,
	})
	if err != nil {
		return err
	}
	p.OnStop("stripe dedupe", func(ctx context.Context) error {
		if n := dedupe.Close(ctx); n > 0 {
			return fmt.Errorf("%d cleanups still pending", n)
		}
		return nil
	})
	failureCallback := cfg.PublicURL + FailureCallbackPath
	h, err := stripeEvents{
		Store: dedupe, Logger: p.Log, Registerer: p.Registry,
		Forward: func(ctx context.Context, ev webhooks.StripeEvent) error {
			job, err := appjobs.StripeJob(appjobs.VerifiedStripeEvent{
				ID: ev.ID, Type: ev.Type, APIVersion: ev.APIVersion, Livemode: ev.Livemode, Object: ev.Object,
			})
			if err != nil {
				// The handler sees what could be read and decides; Stripe
				// retrying a payload it will always send the same way helps nobody.
				p.Log.WarnContext(ctx, "stripe event object not as expected", "event_id", ev.ID, "type", ev.Type, "error", err.Error())
			}
			_, err = client.Enqueue(ctx, job, jobs.WithFailureCallback(failureCallback))
			return err
		},
	}.Handler()
	if err != nil {
		return err
	}
	// Draining comes first: an event refused during shutdown is retried
	// by Stripe on a live instance, before any work or Redis call.
	p.Server.Echo.POST(StripePath, h, p.Server.RejectWhileDraining(), verify)
	return nil
}
