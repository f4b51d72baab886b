// Package workerapp wires cmd/worker: the routes QStash and Stripe call, on
// top of the shared server. cmd/worker and cmd/dev both build the worker
// through Build, so the local stack runs exactly the production wiring.
package workerapp

import (
	"context"
	"fmt"

	"github.com/labstack/echo/v4"

	"github.com/digis/jobworker/idempotency"
	"github.com/digis/jobworker/internal/appjobs"
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
	// StripePath receives Stripe webhook events.
	StripePath = "/webhooks/stripe"
)

// Build creates the worker process with its routes. register adds the job
// handlers to the registry (the reference application's jobs, or a test's);
// it gets the process for its logger, Redis client and metrics registry.
func Build(cfg config.Worker, register func(*jobs.Registry, *server.Process) error) (*server.Process, error) {
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

func wire(p *server.Process, cfg config.Worker, register func(*jobs.Registry, *server.Process) error) error {
	reg, err := jobs.NewRegistry(jobs.RegistryConfig{Registerer: p.Registry})
	if err != nil {
		return err
	}
	if register != nil {
		if err := register(reg, p); err != nil {
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
	stripeHandler, err := stripeRoute(p, cfg)
	if err != nil {
		return err
	}
	verifyStripe, err := webhooks.VerifyStripeConfig{Verifier: stripeHandler.verifier, MaxBodyBytes: cfg.BodyLimit}.ToMiddleware()
	if err != nil {
		return err
	}
	// Draining comes first: a delivery refused during shutdown is retried
	// by QStash on a live instance, before any work or Redis call.
	drain := p.Server.RejectWhileDraining()
	p.Server.Echo.POST(JobsRoute, deliveries, drain, verify)
	p.Server.Echo.POST(FailureCallbackPath, failed, drain, verify)
	p.Server.Echo.POST(StripePath, stripeHandler.handle, drain, verifyStripe)
	return nil
}

type stripeWiring struct {
	verifier *webhooks.StripeVerifier
	handle   echo.HandlerFunc
}

// stripeRoute builds POST /webhooks/stripe: verify, dedupe on the event id,
// publish a stripe.event job (deduplicated by the event id), answer 200.
func stripeRoute(p *server.Process, cfg config.Worker) (stripeWiring, error) {
	sv, err := webhooks.NewStripeVerifier(webhooks.StripeConfig{
		Secrets: cfg.StripeWebhookSecrets, Logger: p.Log, Registerer: p.Registry,
	})
	if err != nil {
		return stripeWiring{}, err
	}
	client, err := jobs.NewClient(jobs.ClientConfig{
		QStashURL: cfg.QStashURL, Token: cfg.QStashToken, WorkerPublicURL: cfg.PublicURL,
		Logger: p.Log, Registerer: p.Registry,
	})
	if err != nil {
		return stripeWiring{}, err
	}
	dedupe, err := idempotency.NewStore(p.Redis, idempotency.StoreConfig{
		Prefix: cfg.KeyPrefix, Namespace: "stripe", ResultTTL: cfg.StripeDedupeTTL, Timeout: cfg.Redis.Timeout,
	})
	if err != nil {
		return stripeWiring{}, err
	}
	failureCallback := cfg.PublicURL + FailureCallbackPath
	h, err := webhooks.StripeEventsConfig{
		Store: dedupe, Logger: p.Log, Registerer: p.Registry,
		Forward: func(ctx context.Context, ev webhooks.StripeEvent) error {
			job, err := appjobs.StripeJob(ev)
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
		return stripeWiring{}, err
	}
	return stripeWiring{verifier: sv, handle: h}, nil
}
