// Package workerapp wires cmd/worker: the public worker kit (package worker)
// for QStash deliveries, the Stripe webhook route and the outbox relay route,
// on the shared process. cmd/worker and cmd/dev both build the worker through
// Build, so the local stack runs exactly the production wiring.
//
// With a PostgreSQL store (Deps.Store is a *store.Postgres):
//
//   - POST /webhooks/stripe records each verified event's id (table
//     stripe_events, the dedupe) and its stripe.event job (the outbox) in one
//     transaction, and answers 200 once that committed; a redelivered event
//     finds its id and gets 200 without a second job. Stripe's answer
//     depends on PostgreSQL only: a QStash outage delays the job, not the
//     acknowledgement.
//   - POST /internal/outbox/relay runs the outbox relay once (outbox.Relay
//     Handler), behind the same QStash signature verification as job
//     deliveries: the target of a QStash schedule where no process runs a
//     relay between requests (Cloud Run, Lambda).
//   - the relay also runs in the process unless OUTBOX_RELAY=off.
//
// With the in-memory store of the local stack (or none), the Stripe route
// dedupes on the event id in Redis and publishes the job before answering,
// 503 when it cannot.
package workerapp

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/digis/jobworker/idempotency"
	"github.com/digis/jobworker/internal/appjobs"
	"github.com/digis/jobworker/internal/opsadapter"
	"github.com/digis/jobworker/internal/opsconsole"
	"github.com/digis/jobworker/internal/opsstats"
	"github.com/digis/jobworker/internal/process"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/jobs/control"
	"github.com/digis/jobworker/outbox"
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
	// RelayPath runs the outbox relay once per signed POST: point a QStash
	// schedule at $WORKER_PUBLIC_URL/internal/outbox/relay. Mounted with a
	// PostgreSQL store only.
	RelayPath = "/internal/outbox/relay"
	// OpsPath is the ops console, mounted when OPS_TOKEN is set.
	OpsPath = opsconsole.Path
)

// Deps are the parts Build does not create itself.
type Deps struct {
	// Store is the database the Stripe route and the relay use, and a
	// readiness check. With a *store.Postgres the Stripe route writes each
	// event with its job in one transaction and the outbox relay runs; with
	// the in-memory store, or nil (tests of the worker kit alone), the
	// Stripe route dedupes in Redis and publishes directly. The caller
	// closes it after Run returns.
	Store store.Store
	// Register adds the job handlers to the registry (the reference
	// application's jobs, or a test's); it gets the process for its logger,
	// Redis client, metrics registry and stop functions. Optional.
	Register func(*jobs.Registry, *process.Process) error
}

// Build creates the worker process with its routes.
func Build(cfg Config, deps Deps) (*process.Process, error) {
	p, err := process.New("worker", cfg.Common)
	if err != nil {
		return nil, err
	}
	if err := wire(p, cfg, deps); err != nil {
		p.Abort()
		return nil, err
	}
	return p, nil
}

func wire(p *process.Process, cfg Config, deps Deps) error {
	if deps.Store != nil {
		p.Server.AddReadinessCheck("database", deps.Store.Ping)
	}
	reg, err := jobs.NewRegistry(jobs.RegistryConfig{Registerer: p.Registry})
	if err != nil {
		return err
	}
	if deps.Register != nil {
		if err := deps.Register(reg, p); err != nil {
			return fmt.Errorf("registering jobs: %w", err)
		}
	}
	// One verifier for deliveries and the relay route: one set of keys,
	// one set of metrics.
	verifier, err := webhooks.NewQStashVerifier(webhooks.QStashConfig{
		CurrentSigningKey: cfg.QStashCurrentSigningKey, NextSigningKey: cfg.QStashNextSigningKey,
		Logger: p.Log, Registerer: p.Registry,
	})
	if err != nil {
		return err
	}
	deliveries, err := worker.New(worker.Config{
		Registry: reg, Redis: p.Redis, PublicURL: cfg.PublicURL, Verifier: verifier,
		KeyPrefix: cfg.KeyPrefix, DedupeTTL: cfg.JobDedupeTTL, RedisTimeout: cfg.Redis.Timeout,
		MaxBodyBytes: cfg.BodyLimit, Draining: p.Server.Draining,
		Logger: p.Log, Registerer: p.Registry,
	})
	if err != nil {
		return err
	}
	deliveries.Mount(p.Server.Echo)
	p.OnStop("deliveries", deliveries.Close)
	client, err := jobs.NewClient(jobs.ClientConfig{
		QStashURL: cfg.QStashURL, Token: cfg.QStashToken, WorkerPublicURL: cfg.PublicURL,
		Logger: p.Log, Registerer: p.Registry,
	})
	if err != nil {
		return err
	}
	var events stripeEvents
	if pg, ok := deps.Store.(*store.Postgres); ok {
		relay, err := relayRoute(p, cfg, pg, client, verifier)
		if err != nil {
			return err
		}
		var local *outbox.Relay
		if cfg.OutboxRelay {
			local = relay
		}
		events = outboxStripe(p, cfg, pg, p.OutboxCommitted(pg.Pool(), local))
	} else if events, err = directStripe(p, cfg, client); err != nil {
		return err
	}
	if err := stripeRoute(p, cfg, events); err != nil {
		return err
	}
	return opsRoute(p, cfg)
}

// opsRoute mounts the ops console at OpsPath when OPS_TOKEN is set.
func opsRoute(p *process.Process, cfg Config) error {
	if cfg.OpsToken == "" {
		return nil
	}
	ctl, err := control.New(control.Config{QStashURL: cfg.QStashURL, Token: cfg.QStashToken,
		WorkerPublicURL: cfg.PublicURL, App: cfg.SchedulesApp})
	if err != nil {
		return err
	}
	h, err := opsconsole.New(opsconsole.Config{
		Token: cfg.OpsToken, Stats: opsstats.NewReader(p.Redis, cfg.KeyPrefix),
		Jobs:   opsadapter.NewQStash(ctl),
		Keys:   opsadapter.NewKeys(p.Redis, cfg.KeyPrefix, max(cfg.Redis.Timeout, time.Second)),
		Logger: p.Log,
	})
	if err != nil {
		return err
	}
	p.Server.Echo.Any(OpsPath+"*", echo.WrapHandler(h))
	p.Log.Info("ops console enabled", "path", OpsPath)
	return nil
}

// relayRoute builds the outbox relay (started unless OUTBOX_RELAY=off) and
// mounts POST RelayPath, which runs it once per signed call.
func relayRoute(p *process.Process, cfg Config, pg *store.Postgres, client *jobs.Client, verifier *webhooks.QStashVerifier) (*outbox.Relay, error) {
	relay, err := p.Relay(outbox.Config{
		Pool: pg.Pool(), Publisher: client,
		// A call of the route must end before its request's deadline.
		RunOnceMaxDuration: min(outbox.DefaultRunOnceMaxDuration, cfg.RequestTimeout/2),
	}, cfg.OutboxRelay)
	if err != nil {
		return nil, err
	}
	verify, err := webhooks.VerifyQStashConfig{Verifier: verifier, PublicURL: cfg.PublicURL, MaxBodyBytes: cfg.BodyLimit}.ToMiddleware()
	if err != nil {
		return nil, err
	}
	// Draining first, like the delivery routes: the schedule calls again.
	p.Server.Echo.POST(RelayPath, echo.WrapHandler(relay.Handler()), p.Server.RejectWhileDraining(), verify)
	return relay, nil
}

// stripeReceiveTimeout bounds recording one Stripe event with its job,
// detached from the request (Stripe waits up to 30 s for an answer).
const stripeReceiveTimeout = 10 * time.Second

// outboxStripe records each event's id and its stripe.event job in one
// database transaction, the PostgreSQL path, then wakes the relays with
// committed.
func outboxStripe(p *process.Process, cfg Config, pg *store.Postgres, committed func()) stripeEvents {
	failureCallback := cfg.PublicURL + FailureCallbackPath
	return stripeEvents{
		Logger: p.Log, Registerer: p.Registry,
		Receive: func(ctx context.Context, ev webhooks.StripeEvent) (bool, error) {
			ctx, cancel := context.WithTimeout(ctx, stripeReceiveTimeout)
			defer cancel()
			job := stripeJob(ctx, p, ev)
			receipt := store.StripeEventReceipt{ID: ev.ID, Type: ev.Type, Retention: cfg.StripeDedupeTTL}
			dup, err := pg.ReceiveStripeEvent(ctx, receipt, func(ctx context.Context, tx pgx.Tx) error {
				_, err := outbox.Enqueue(ctx, outbox.WithoutNotify(tx), job, jobs.WithFailureCallback(failureCallback))
				return err
			})
			if err == nil && !dup {
				committed()
			}
			return dup, err
		},
	}
}

// directStripe dedupes each event in Redis and publishes its job before
// answering: the path of the in-memory store (the local stack).
func directStripe(p *process.Process, cfg Config, client *jobs.Client) (stripeEvents, error) {
	dedupe, err := idempotency.NewStore(p.Redis, idempotency.StoreConfig{
		Prefix: cfg.KeyPrefix, Namespace: "stripe", ResultTTL: cfg.StripeDedupeTTL, Timeout: cfg.Redis.Timeout,
		Logger: p.Log, Registerer: p.Registry,
	})
	if err != nil {
		return stripeEvents{}, err
	}
	p.OnStop("stripe dedupe", func(ctx context.Context) error {
		if n := dedupe.Close(ctx); n > 0 {
			return fmt.Errorf("%d cleanups still pending", n)
		}
		return nil
	})
	failureCallback := cfg.PublicURL + FailureCallbackPath
	return stripeEvents{
		Store: dedupe, Logger: p.Log, Registerer: p.Registry,
		Forward: func(ctx context.Context, ev webhooks.StripeEvent) error {
			_, err := client.Enqueue(ctx, stripeJob(ctx, p, ev), jobs.WithFailureCallback(failureCallback))
			return err
		},
	}, nil
}

// stripeJob reads the stripe.event job of a verified event. What could not
// be read is logged and left to the handler, which decides: Stripe retrying
// a payload it will always send the same way helps nobody.
func stripeJob(ctx context.Context, p *process.Process, ev webhooks.StripeEvent) appjobs.StripeEvent {
	job, err := appjobs.StripeJob(appjobs.VerifiedStripeEvent{
		ID: ev.ID, Type: ev.Type, APIVersion: ev.APIVersion, Livemode: ev.Livemode, Object: ev.Object,
	})
	if err != nil {
		p.Log.WarnContext(ctx, "stripe event object not as expected", "event_id", ev.ID, "type", ev.Type, "error", err.Error())
	}
	return job
}

// stripeRoute adds POST /webhooks/stripe: verify, hand the event on as
// events says, answer.
func stripeRoute(p *process.Process, cfg Config, events stripeEvents) error {
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
	events.Livemode = cfg.StripeLivemode
	h, err := events.Handler()
	if err != nil {
		return err
	}
	// Draining comes first: an event refused during shutdown is retried
	// by Stripe on a live instance, before any work or Redis call.
	p.Server.Echo.POST(StripePath, h, p.Server.RejectWhileDraining(), verify)
	return nil
}
