package appjobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/webhooks"
)

// Stripe event types this application acts on.
const (
	StripePaymentSucceeded = "payment_intent.succeeded"
	StripeChargeRefunded   = "charge.refunded"
)

// Metadata keys the checkout puts on a PaymentIntent that buys tokens.
const (
	MetadataUserID = "user_id"
	MetadataTokens = "tokens"
)

// StripeEvent is the stripe.event job: the fields of a verified Stripe
// event this application uses, and nothing else. Customer details, card
// data and the rest of the payload never leave the webhook: they would
// otherwise sit in QStash's queue and DLQ.
type StripeEvent struct {
	EventID    string `json:"event_id"`
	Type       string `json:"type"`
	APIVersion string `json:"api_version,omitempty"`
	Livemode   bool   `json:"livemode"`
	// PaymentIntent is the PaymentIntent id (payment_intent.succeeded) or
	// the refunded charge's PaymentIntent (charge.refunded).
	PaymentIntent string `json:"payment_intent,omitempty"`
	// UserID and Tokens come from the PaymentIntent's metadata, as sent
	// (validated by the handler, where a bad value can go to the DLQ).
	UserID string `json:"user_id,omitempty"`
	Tokens string `json:"tokens,omitempty"`
	// FullyRefunded is charge.refunded's "refunded" flag.
	FullyRefunded bool `json:"fully_refunded,omitempty"`
}

// Kind is the job's stable name.
func (StripeEvent) Kind() string { return "stripe.event" }

// EnqueueDefaults makes QStash drop a second publish of the same event
// within its deduplication window, and retry the work generously: a
// credit must not be lost to a short database outage.
func (e StripeEvent) EnqueueDefaults() []jobs.EnqueueOption {
	return []jobs.EnqueueOption{jobs.WithDeduplicationID("stripe:" + e.EventID), jobs.WithRetries(5)}
}

// StripeJob reads the fields the stripe.event job needs from a verified
// event. API-version differences are tolerated by reading only these.
func StripeJob(ev webhooks.StripeEvent) (StripeEvent, error) {
	job := StripeEvent{EventID: ev.ID, Type: ev.Type, APIVersion: ev.APIVersion, Livemode: ev.Livemode}
	switch ev.Type {
	case StripePaymentSucceeded:
		var pi struct {
			ID       string            `json:"id"`
			Metadata map[string]string `json:"metadata"`
		}
		if err := json.Unmarshal(ev.Object, &pi); err != nil {
			return job, fmt.Errorf("payment_intent object: %w", err)
		}
		job.PaymentIntent, job.UserID, job.Tokens = pi.ID, pi.Metadata[MetadataUserID], pi.Metadata[MetadataTokens]
	case StripeChargeRefunded:
		var ch struct {
			PaymentIntent json.RawMessage `json:"payment_intent"`
			Refunded      bool            `json:"refunded"`
		}
		if err := json.Unmarshal(ev.Object, &ch); err != nil {
			return job, fmt.Errorf("charge object: %w", err)
		}
		job.PaymentIntent, job.FullyRefunded = expandableID(ch.PaymentIntent), ch.Refunded
	}
	return job, nil
}

// expandableID reads a Stripe field that is an id string or, when expanded,
// an object with an id.
func expandableID(raw json.RawMessage) string {
	var id string
	if json.Unmarshal(raw, &id) == nil {
		return id
	}
	var obj struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(raw, &obj)
	return obj.ID
}

// stripeTypes bounds the type label of jobworker_stripe_events_total.
var stripeTypes = map[string]bool{StripePaymentSucceeded: true, StripeChargeRefunded: true}

func registerStripe(reg *jobs.Registry, d Deps) error {
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jobworker_stripe_events_total",
		Help: "stripe.event jobs by event type (payment_intent.succeeded, charge.refunded, other) and result.",
	}, []string{"type", "result"})
	if d.Registerer != nil {
		if err := d.Registerer.Register(events); err != nil {
			return err
		}
	}
	return jobs.Register(reg, func(ctx context.Context, j *jobs.Job[StripeEvent]) error {
		ev := j.Args
		label := ev.Type
		if !stripeTypes[label] {
			label = "other"
		}
		result, err := handleStripe(ctx, d.Store, ev)
		if err != nil {
			result = "failed"
		}
		events.WithLabelValues(label, result).Inc()
		attrs := []any{"event_id", ev.EventID, "type", ev.Type, "result", result}
		if err != nil {
			d.Log.WarnContext(ctx, "stripe event failed", append(attrs, "error", err.Error())...)
		} else {
			d.Log.InfoContext(ctx, "stripe event handled", attrs...)
		}
		return err
	})
}

// handleStripe applies one event to the ledger. The ledger's unique
// external reference (the PaymentIntent id) makes every effect happen once,
// however often the event or the job is delivered.
func handleStripe(ctx context.Context, st store.Store, ev StripeEvent) (string, error) {
	switch ev.Type {
	case StripePaymentSucceeded:
		if ev.UserID == "" && ev.Tokens == "" {
			return "ignored", nil // a payment of ours that is not a token purchase
		}
		tokens, err := strconv.ParseInt(strings.TrimSpace(ev.Tokens), 10, 64)
		if ev.UserID == "" || ev.PaymentIntent == "" || err != nil || tokens <= 0 {
			return "", jobs.Permanent(errors.New("payment_intent.succeeded: metadata needs user_id and a positive whole tokens amount"))
		}
		t, err := st.Credit(ctx, ev.UserID, tokens, ev.PaymentIntent)
		if err != nil {
			return "", storeError(err)
		}
		if t.Replayed {
			return "replayed", nil
		}
		return "credited", nil
	case StripeChargeRefunded:
		if ev.PaymentIntent == "" {
			return "ignored", nil
		}
		if !ev.FullyRefunded {
			// The ledger reverses whole deposits only; an operator decides.
			return "", jobs.Permanent(errors.New("charge.refunded: partial refunds need an operator"))
		}
		t, err := st.Reverse(ctx, ev.PaymentIntent)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return "ignored", nil // never credited: not a token purchase
		case err != nil:
			return "", storeError(err)
		case t.Replayed:
			return "replayed", nil
		}
		return "reversed", nil
	default:
		return "ignored", nil
	}
}

// storeError marks the store's verdicts no retry can change as permanent:
// the job goes to the DLQ for an operator (e.g. a refund of tokens already
// spent). Anything else (the database unreachable) is retried.
func storeError(err error) error {
	for _, permanent := range []error{store.ErrInvalid, store.ErrIdempotencyKeyReused, store.ErrInsufficientFunds, store.ErrNotFound} {
		if errors.Is(err, permanent) {
			return jobs.Permanent(err)
		}
	}
	return err
}
