package workerapp

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/idempotency"
	"github.com/digis/jobworker/internal/collector"
	"github.com/digis/jobworker/internal/problem"
	"github.com/digis/jobworker/webhooks"
)

// stripeEvents configures the handler behind VerifyStripe that
// acknowledges Stripe events fast: it hands the event on — records it with
// its job in one database transaction (Receive), or dedupes on the event id
// in Redis and publishes the job (Store and Forward) — before answering
// 200. The work itself runs later as a job with QStash's retries behind
// it; Stripe only waits for the hand-off.
//
// Answers, decided in one place (see answerStripe):
//
//	handed on, or an event already handed on  → 200
//	livemode other than Livemode               → 200 {"received":true,"ignored":"livemode"}, nothing handed on
//	the same event being handed on elsewhere  → 409 (Stripe retries later; Redis path only)
//	Forward failed (lease released)           → 503: never acknowledge work that was not handed on
//	database or Redis unavailable             → 503; nothing is handed on
//
// Bodies are problem+json without detail an attacker could use.
type stripeEvents struct {
	// Receive records the verified event and its job in one database
	// transaction, and reports a duplicate when the event id was recorded
	// before (nothing is written then). A concurrent redelivery waits for
	// the first and is a duplicate once it committed, so there is no 409.
	// When set, Store and Forward are not used.
	Receive func(ctx context.Context, ev webhooks.StripeEvent) (duplicate bool, err error)
	// Store dedupes on the event id. Required without Receive. Its
	// ResultTTL must outlive Stripe's retry window of 3 days.
	Store *idempotency.Store
	// Forward hands the verified event on, e.g. publishes a job whose
	// deduplication id is the event id. Required without Receive. An error
	// makes Stripe deliver the event again.
	Forward func(ctx context.Context, ev webhooks.StripeEvent) error
	// Logger receives a line per failed or duplicate event (event id and
	// type only). Defaults to discarding.
	Logger *slog.Logger
	// Registerer receives jobworker_stripe_webhooks_total{outcome}.
	// Defaults to nil.
	Registerer prometheus.Registerer
	// Livemode is the mode of the Stripe account's events this deployment
	// takes (STRIPE_MODE). An event of the other mode is signed with a
	// secret of ours but meant elsewhere (a test endpoint pointed at
	// production, a leaked test-mode secret): it is never handed on, and
	// is acknowledged with 200 because every retry would be refused the
	// same way (Stripe retries any other answer for 3 days). A warning and
	// outcome="wrong_mode" show the misconfiguration. Defaults to false
	// (test mode).
	Livemode bool
}

// Stripe hand-off outcomes, the values of the outcome label.
const (
	stripeForwarded     = "forwarded"
	stripeDuplicate     = "duplicate"
	stripeInProgress    = "in_progress"
	stripeForwardFailed = "forward_failed"
	stripeUnavailable   = "unavailable"
	stripeUnverified    = "unverified"
	stripeWrongMode     = "wrong_mode"
)

// stripeMinResultTTL is Stripe's retry window (3 days) plus a margin.
const stripeMinResultTTL = 72*time.Hour + time.Hour

// Handler validates the configuration and returns the POST /webhooks/stripe
// handler. Mount it behind VerifyStripe; an unverified request is refused.
func (cfg stripeEvents) Handler() (echo.HandlerFunc, error) {
	switch {
	case cfg.Receive != nil:
	case cfg.Store == nil || cfg.Forward == nil:
		return nil, errors.New("workerapp: stripeEvents needs Receive, or Store and Forward")
	case cfg.Store.Config().ResultTTL < stripeMinResultTTL:
		return nil, errors.New("workerapp: the Stripe dedupe store's ResultTTL must exceed Stripe's 3-day retry window")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	total := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jobworker_stripe_webhooks_total",
		Help: "Verified Stripe webhooks by outcome (forwarded: its job published or committed to the outbox; duplicate, in_progress, forward_failed, unavailable, unverified, wrong_mode: livemode other than STRIPE_MODE, ignored).",
	}, []string{"outcome"})
	if cfg.Registerer != nil {
		var err error
		if total, err = collector.Register(cfg.Registerer, total); err != nil {
			return nil, err
		}
	}
	return func(c echo.Context) error {
		ev, ok := webhooks.StripeEventFrom(c)
		outcome := stripeUnverified
		switch {
		case ok && ev.Livemode != cfg.Livemode:
			outcome = stripeWrongMode
			log.WarnContext(c.Request().Context(), "stripe event of the other mode ignored: check STRIPE_MODE and the endpoint's secrets",
				"event_id", ev.ID, "type", ev.Type, "livemode", ev.Livemode)
		case ok:
			outcome = cfg.handOff(context.WithoutCancel(c.Request().Context()), ev, log)
		}
		total.WithLabelValues(outcome).Inc()
		return answerStripe(c, outcome)
	}, nil
}

// handOff dedupes and forwards one event. It runs detached from the request
// so a Stripe disconnect cannot leave a half-recorded hand-off.
func (cfg stripeEvents) handOff(ctx context.Context, ev webhooks.StripeEvent, log *slog.Logger) string {
	if cfg.Receive != nil {
		return cfg.receive(ctx, ev, log)
	}
	res, err := cfg.Store.Acquire(ctx, ev.ID, "")
	switch {
	case err != nil:
		log.WarnContext(ctx, "stripe event not deduped: store unavailable", "event_id", ev.ID, "type", ev.Type, "error", err.Error())
		return stripeUnavailable
	case res.Outcome == idempotency.Done:
		log.InfoContext(ctx, "duplicate stripe event", "event_id", ev.ID, "type", ev.Type)
		return stripeDuplicate
	case res.Outcome == idempotency.InProgress:
		return stripeInProgress
	}
	lease := res.Lease
	fctx, stop := lease.KeepAlive(ctx) // the hand-off may outlive the claim window
	err = cfg.Forward(fctx, ev)
	_ = stop()
	if err != nil {
		log.ErrorContext(ctx, "stripe event not handed on; Stripe will retry", "event_id", ev.ID, "type", ev.Type, "error", err.Error())
		if rerr := lease.Release(ctx); rerr != nil && !errors.Is(rerr, idempotency.ErrLeaseLost) {
			log.WarnContext(ctx, "releasing stripe event lease failed", "event_id", ev.ID, "error", rerr.Error())
		}
		return stripeForwardFailed
	}
	if err := lease.Complete(ctx, nil); err != nil {
		// Handed on already: a redelivery would be published again, and the
		// job's deduplication id (the event id) and the ledger's unique
		// constraint absorb it.
		log.WarnContext(ctx, "stripe event handed on but not marked done", "event_id", ev.ID, "error", err.Error())
	}
	return stripeForwarded
}

// receive records one event with its job, or finds it recorded.
func (cfg stripeEvents) receive(ctx context.Context, ev webhooks.StripeEvent, log *slog.Logger) string {
	dup, err := cfg.Receive(ctx, ev)
	switch {
	case err != nil:
		log.ErrorContext(ctx, "stripe event not recorded; Stripe will retry", "event_id", ev.ID, "type", ev.Type, "error", err.Error())
		return stripeUnavailable
	case dup:
		log.InfoContext(ctx, "duplicate stripe event", "event_id", ev.ID, "type", ev.Type)
		return stripeDuplicate
	}
	return stripeForwarded
}

// answerStripe is the one place a hand-off outcome becomes an HTTP answer.
func answerStripe(c echo.Context, outcome string) error {
	switch outcome {
	case stripeForwarded, stripeDuplicate:
		return c.JSON(http.StatusOK, map[string]bool{"received": true})
	case stripeWrongMode:
		return c.JSON(http.StatusOK, map[string]any{"received": true, "ignored": "livemode"})
	case stripeInProgress:
		return problem.Respond(c, http.StatusConflict, "")
	case stripeUnverified:
		return problem.Respond(c, http.StatusBadRequest, "")
	default: // forward_failed, unavailable
		c.Response().Header().Set("Retry-After", "10")
		return problem.Respond(c, http.StatusServiceUnavailable, "")
	}
}
