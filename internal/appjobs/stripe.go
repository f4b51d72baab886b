package appjobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/jobs"
)

// Stripe event types this application acts on.
const (
	StripePaymentSucceeded = "payment_intent.succeeded"
	// StripeChargeRefunded carries the Charge after every refund, partial
	// or full: its cumulative amount_refunded is what the ledger follows.
	StripeChargeRefunded = "charge.refunded"
	// Events carrying a Refund object: only a failed or canceled refund is
	// acted on (recorded for an operator). The amounts of the others are
	// taken from charge.refunded, which reports every refund with the
	// charge's cumulative amount.
	StripeRefundCreated       = "refund.created"
	StripeRefundUpdated       = "refund.updated"
	StripeRefundFailed        = "refund.failed"
	StripeChargeRefundUpdated = "charge.refund.updated"
)

// Metadata keys the checkout puts on a PaymentIntent that buys tokens.
const (
	MetadataUserID = "user_id"
	MetadataTokens = "tokens"
)

// Results of a stripe.event job: the result label of
// jobworker_stripe_events_total and the "result" of its log line.
const (
	ResultCredited = "credited"
	// ResultCreditedReversed: credited, and a refund recorded before the
	// payment was reversed in the same transaction.
	ResultCreditedReversed = "credited_reversed"
	ResultReversed         = "reversed"
	// ResultReversalRecorded: a refund before its payment, recorded;
	// the credit applies it.
	ResultReversalRecorded = "reversal_recorded"
	// ResultReversalShortfall: the user had spent some of the refunded
	// tokens; the rest is recorded for an operator.
	ResultReversalShortfall = "reversal_shortfall"
	// ResultRefundFailureRecorded: Stripe reports a refund failed or
	// canceled; recorded for an operator, no money moved.
	ResultRefundFailureRecorded = "refund_failure_recorded"
	// ResultReplayed: a duplicate or stale event; nothing changed.
	ResultReplayed = "replayed"
	ResultIgnored  = "ignored"
	ResultFailed   = "failed"
)

// StripeEvent is the stripe.event job: the fields of a verified Stripe
// event this application uses, and nothing else. Customer details, card
// data and the rest of the payload never leave the webhook: they would
// otherwise sit in QStash's queue and DLQ. Every field but the first four
// is omitted when empty, so a payload from before a field existed still
// decodes.
type StripeEvent struct {
	EventID    string `json:"event_id"`
	Type       string `json:"type"`
	APIVersion string `json:"api_version,omitempty"`
	Livemode   bool   `json:"livemode"`
	// PaymentIntent is the PaymentIntent id (payment_intent.succeeded) or
	// the PaymentIntent of the refunded charge (charge.refunded, refund
	// events).
	PaymentIntent string `json:"payment_intent,omitempty"`
	// UserID and Tokens come from the PaymentIntent's metadata, as sent
	// (validated by the handler, where a bad value can go to the DLQ).
	UserID string `json:"user_id,omitempty"`
	Tokens string `json:"tokens,omitempty"`
	// Charge is the charge id (charge.refunded) or the refunded charge
	// (refund events).
	Charge string `json:"charge,omitempty"`
	// ChargeAmount is what the charge captured, in the currency's minor
	// units: amount_captured, or amount for API versions without it.
	ChargeAmount int64 `json:"charge_amount,omitempty"`
	// AmountRefunded is charge.refunded's amount_refunded: cumulative over
	// all the charge's refunds.
	AmountRefunded int64 `json:"amount_refunded,omitempty"`
	// FullyRefunded is charge.refunded's "refunded" flag.
	FullyRefunded bool `json:"fully_refunded,omitempty"`
	// Refund, RefundAmount, RefundStatus and FailureReason come from the
	// Refund object of a refund event. FailureReason is Stripe's code
	// (lost_or_stolen_card, ...), "other" when not of that shape.
	Refund        string `json:"refund,omitempty"`
	RefundAmount  int64  `json:"refund_amount,omitempty"`
	RefundStatus  string `json:"refund_status,omitempty"`
	FailureReason string `json:"failure_reason,omitempty"`
}

// Kind is the job's stable name.
func (StripeEvent) Kind() string { return "stripe.event" }

// EnqueueDefaults makes QStash drop a second publish of the same event
// within its deduplication window, and retry the work generously: a
// credit must not be lost to a short database outage.
func (e StripeEvent) EnqueueDefaults() []jobs.EnqueueOption {
	return []jobs.EnqueueOption{jobs.WithDeduplicationID("stripe:" + e.EventID), jobs.WithRetries(5)}
}

// VerifiedStripeEvent is what StripeJob reads of an event package webhooks
// verified (webhooks.StripeEvent carries the same fields). It is a type of
// this package so the API, which imports it for the job types, links no
// Stripe library.
type VerifiedStripeEvent struct {
	ID, Type, APIVersion string
	Livemode             bool
	// Object is the event's data.object, raw.
	Object json.RawMessage
}

// StripeJob reads the fields the stripe.event job needs from a verified
// event. API-version differences are tolerated by reading only these, each
// optional: an id field may be a string or an expanded object, and a
// missing amount_captured falls back to amount. The job is returned with
// what could be read even when err is not nil.
func StripeJob(ev VerifiedStripeEvent) (StripeEvent, error) {
	job := StripeEvent{EventID: ev.ID, Type: ev.Type, APIVersion: ev.APIVersion, Livemode: ev.Livemode}
	switch ev.Type {
	case StripePaymentSucceeded:
		var pi struct {
			ID       string            `json:"id"`
			Metadata map[string]string `json:"metadata"`
		}
		err := json.Unmarshal(ev.Object, &pi)
		job.PaymentIntent, job.UserID, job.Tokens = pi.ID, pi.Metadata[MetadataUserID], pi.Metadata[MetadataTokens]
		if err != nil {
			return job, fmt.Errorf("payment_intent object: %w", err)
		}
	case StripeChargeRefunded:
		var ch struct {
			ID             string          `json:"id"`
			PaymentIntent  json.RawMessage `json:"payment_intent"`
			Amount         int64           `json:"amount"`
			AmountCaptured *int64          `json:"amount_captured"`
			AmountRefunded int64           `json:"amount_refunded"`
			Refunded       bool            `json:"refunded"`
		}
		err := json.Unmarshal(ev.Object, &ch)
		job.PaymentIntent, job.Charge = expandableID(ch.PaymentIntent), ch.ID
		job.ChargeAmount, job.AmountRefunded, job.FullyRefunded = ch.Amount, ch.AmountRefunded, ch.Refunded
		if ch.AmountCaptured != nil && *ch.AmountCaptured > 0 {
			job.ChargeAmount = *ch.AmountCaptured
		}
		if err != nil {
			return job, fmt.Errorf("charge object: %w", err)
		}
	case StripeRefundCreated, StripeRefundUpdated, StripeRefundFailed, StripeChargeRefundUpdated:
		var rf struct {
			ID            string          `json:"id"`
			Amount        int64           `json:"amount"`
			Charge        json.RawMessage `json:"charge"`
			PaymentIntent json.RawMessage `json:"payment_intent"`
			Status        string          `json:"status"`
			FailureReason string          `json:"failure_reason"`
		}
		err := json.Unmarshal(ev.Object, &rf)
		job.Refund, job.RefundAmount, job.RefundStatus = rf.ID, rf.Amount, rf.Status
		job.Charge, job.PaymentIntent = expandableID(rf.Charge), expandableID(rf.PaymentIntent)
		job.FailureReason = failureReason(rf.FailureReason)
		if err != nil {
			return job, fmt.Errorf("refund object: %w", err)
		}
	}
	return job, nil
}

var failureReasonRE = regexp.MustCompile(`^[a-z_]{1,64}$`)

// failureReason keeps Stripe's failure codes and nothing else: the value
// ends up in a database row and a log line.
func failureReason(s string) string {
	if s == "" || failureReasonRE.MatchString(s) {
		return s
	}
	return "other"
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
var stripeTypes = map[string]bool{
	StripePaymentSucceeded: true, StripeChargeRefunded: true,
	StripeRefundCreated: true, StripeRefundUpdated: true, StripeRefundFailed: true, StripeChargeRefundUpdated: true,
}

// operatorResults are the outcomes an operator must follow up (the
// refund_exceptions view lists them): logged as warnings.
var operatorResults = map[string]bool{ResultReversalShortfall: true, ResultRefundFailureRecorded: true}

func registerStripe(reg *jobs.Registry, d Deps) error {
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jobworker_stripe_events_total",
		Help: "stripe.event jobs by event type (the handled types, else other) and result (credited, credited_reversed, reversed, reversal_recorded, reversal_shortfall, refund_failure_recorded, replayed, ignored, failed).",
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
		out, err := handleStripe(ctx, d.Store, ev)
		if err != nil {
			out.result = ResultFailed
		}
		events.WithLabelValues(label, out.result).Inc()
		attrs := []any{"event_id", ev.EventID, "type", ev.Type, "result", out.result}
		if out.reversed != 0 || out.shortfall != 0 {
			attrs = append(attrs, "tokens_reversed", out.reversed, "tokens_shortfall", out.shortfall)
		}
		switch {
		case err != nil:
			d.Log.WarnContext(ctx, "stripe event failed", append(attrs, "error", err.Error())...)
		case operatorResults[out.result]:
			d.Log.WarnContext(ctx, "stripe event recorded for an operator (see refund_exceptions)", attrs...)
		default:
			as := []slog.Attr{slog.String("event_id", ev.EventID), slog.String("type", ev.Type), slog.String("result", out.result)}
			if out.reversed != 0 || out.shortfall != 0 {
				as = append(as, slog.Int64("tokens_reversed", out.reversed), slog.Int64("tokens_shortfall", out.shortfall))
			}
			d.done(ctx, ev.Kind(), j.MessageID, "stripe event handled", as...)
		}
		return err
	})
}

// stripeOutcome is what handling one event did.
type stripeOutcome struct {
	result              string
	reversed, shortfall int64 // tokens
}

// handleStripe applies one event to the ledger. Every effect is keyed by
// the PaymentIntent id (the deposit's external reference) and merged, so
// it happens once and ends the same in whatever order, and however often,
// events and jobs are delivered.
func handleStripe(ctx context.Context, st store.Store, ev StripeEvent) (stripeOutcome, error) {
	switch ev.Type {
	case StripePaymentSucceeded:
		if ev.UserID == "" && ev.Tokens == "" {
			return stripeOutcome{result: ResultIgnored}, nil // a payment of ours that is not a token purchase
		}
		tokens, err := strconv.ParseInt(strings.TrimSpace(ev.Tokens), 10, 64)
		if ev.UserID == "" || ev.PaymentIntent == "" || err != nil || tokens <= 0 {
			return stripeOutcome{}, jobs.Permanent(errors.New("payment_intent.succeeded: metadata needs user_id and a positive whole tokens amount"))
		}
		t, err := st.Credit(ctx, ev.UserID, tokens, ev.PaymentIntent)
		switch {
		case err != nil:
			return stripeOutcome{}, storeError(err)
		case t.Replayed:
			return stripeOutcome{result: ResultReplayed}, nil
		case t.Reversed > 0:
			return stripeOutcome{result: ResultCreditedReversed, reversed: t.Reversed}, nil
		}
		return stripeOutcome{result: ResultCredited}, nil
	case StripeChargeRefunded:
		if ev.PaymentIntent == "" {
			return stripeOutcome{result: ResultIgnored}, nil // not a PaymentIntent's charge: never a token purchase
		}
		if !ev.FullyRefunded && ev.ChargeAmount <= 0 {
			// A job enqueued before the amounts were read: its share is unknown.
			return stripeOutcome{}, jobs.Permanent(errors.New("charge.refunded: a partial refund without the charge amount; an operator must apply it"))
		}
		res, err := st.ApplyRefund(ctx, store.Refund{PaymentRef: ev.PaymentIntent, ChargeRef: ev.Charge,
			ChargeAmount: ev.ChargeAmount, AmountRefunded: ev.AmountRefunded, FullyRefunded: ev.FullyRefunded})
		if err != nil {
			return stripeOutcome{}, storeError(err)
		}
		out := stripeOutcome{reversed: res.Reversed, shortfall: res.Shortfall}
		switch res.Outcome {
		case store.RefundReversed:
			out.result = ResultReversed
		case store.RefundPending:
			out.result = ResultReversalRecorded
		case store.RefundShortfall:
			// Recorded (refund_exceptions), so the job is done: a DLQ entry
			// would add no information and expires, the row does not.
			out.result = ResultReversalShortfall
		default:
			out.result = ResultReplayed
		}
		return out, nil
	case StripeRefundCreated, StripeRefundUpdated, StripeRefundFailed, StripeChargeRefundUpdated:
		if ev.RefundStatus != store.RefundFailed && ev.RefundStatus != store.RefundCanceled {
			return stripeOutcome{result: ResultIgnored}, nil // pending or succeeded: charge.refunded has the amounts
		}
		if ev.PaymentIntent == "" || ev.Refund == "" {
			return stripeOutcome{result: ResultIgnored}, nil
		}
		f, err := st.RecordRefundFailure(ctx, store.RefundFailure{RefundRef: ev.Refund, PaymentRef: ev.PaymentIntent,
			Amount: ev.RefundAmount, Status: ev.RefundStatus, Reason: ev.FailureReason})
		switch {
		case err != nil:
			return stripeOutcome{}, storeError(err)
		case f.Replayed:
			return stripeOutcome{result: ResultReplayed}, nil
		}
		return stripeOutcome{result: ResultRefundFailureRecorded}, nil
	default:
		return stripeOutcome{result: ResultIgnored}, nil
	}
}

// storeError marks the store's verdicts no retry can change as permanent:
// the job goes to the DLQ for an operator (malformed or contradicting
// facts). Anything else (the database unreachable) is retried.
func storeError(err error) error {
	for _, permanent := range []error{store.ErrInvalid, store.ErrIdempotencyKeyReused, store.ErrInsufficientFunds, store.ErrNotFound} {
		if errors.Is(err, permanent) {
			return jobs.Permanent(err)
		}
	}
	return err
}
