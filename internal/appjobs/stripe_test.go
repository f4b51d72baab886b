package appjobs

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/logtest"
	"github.com/digis/jobworker/internal/metrictest"
	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/jobs"
)

func stripeEvent(t *testing.T, id, typ string, object any) VerifiedStripeEvent {
	t.Helper()
	raw, err := json.Marshal(object)
	if err != nil {
		t.Fatal(err)
	}
	return VerifiedStripeEvent{ID: id, Type: typ, APIVersion: "2024-06-20", Object: raw}
}

func TestStripeJobReadsWhatTheHandlerNeeds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		typ     string
		object  string
		want    StripeEvent
		wantErr bool
	}{
		{"payment", StripePaymentSucceeded,
			`{"id":"pi_1","object":"payment_intent","amount":500,"metadata":{"user_id":"u1","tokens":"100"},"receipt_email":"a@example.com"}`,
			StripeEvent{PaymentIntent: "pi_1", UserID: "u1", Tokens: "100"}, false},
		{"partial refund", StripeChargeRefunded,
			`{"id":"ch_1","object":"charge","amount":500,"amount_captured":500,"amount_refunded":200,"refunded":false,"payment_intent":"pi_1",
			  "billing_details":{"email":"a@example.com","name":"A Person"},"payment_method_details":{"card":{"last4":"4242"}}}`,
			StripeEvent{PaymentIntent: "pi_1", Charge: "ch_1", ChargeAmount: 500, AmountRefunded: 200}, false},
		{"older API: no amount_captured, expanded payment_intent, refunds list", StripeChargeRefunded,
			`{"id":"ch_1","amount":500,"amount_refunded":500,"refunded":true,"payment_intent":{"id":"pi_1","object":"payment_intent"},
			  "refunds":{"object":"list","data":[{"id":"re_1","amount":500,"status":"succeeded"}]}}`,
			StripeEvent{PaymentIntent: "pi_1", Charge: "ch_1", ChargeAmount: 500, AmountRefunded: 500, FullyRefunded: true}, false},
		{"partial capture: the share is of what was captured", StripeChargeRefunded,
			`{"id":"ch_1","amount":1000,"amount_captured":600,"amount_refunded":600,"refunded":true,"payment_intent":"pi_1"}`,
			StripeEvent{PaymentIntent: "pi_1", Charge: "ch_1", ChargeAmount: 600, AmountRefunded: 600, FullyRefunded: true}, false},
		{"charge without a PaymentIntent", StripeChargeRefunded,
			`{"id":"ch_1","amount":500,"amount_refunded":500,"refunded":true,"payment_intent":null}`,
			StripeEvent{Charge: "ch_1", ChargeAmount: 500, AmountRefunded: 500, FullyRefunded: true}, false},
		{"refund failed", StripeRefundFailed,
			`{"id":"re_1","object":"refund","amount":200,"charge":"ch_1","payment_intent":"pi_1","status":"failed","failure_reason":"expired_or_canceled_card"}`,
			StripeEvent{PaymentIntent: "pi_1", Charge: "ch_1", Refund: "re_1", RefundAmount: 200, RefundStatus: "failed", FailureReason: "expired_or_canceled_card"}, false},
		{"refund canceled, expanded charge, odd reason", StripeRefundUpdated,
			`{"id":"re_2","amount":50,"charge":{"id":"ch_1","object":"charge"},"payment_intent":"pi_1","status":"canceled","failure_reason":"Card <b>gone</b>"}`,
			StripeEvent{PaymentIntent: "pi_1", Charge: "ch_1", Refund: "re_2", RefundAmount: 50, RefundStatus: "canceled", FailureReason: "other"}, false},
		{"charge.refund.updated, succeeded", StripeChargeRefundUpdated,
			`{"id":"re_3","amount":50,"charge":"ch_1","payment_intent":"pi_1","status":"succeeded","failure_reason":null}`,
			StripeEvent{PaymentIntent: "pi_1", Charge: "ch_1", Refund: "re_3", RefundAmount: 50, RefundStatus: "succeeded"}, false},
		{"amount of the wrong type: what can be read is kept", StripeChargeRefunded,
			`{"id":"ch_1","amount":"500","amount_refunded":100,"payment_intent":"pi_1"}`,
			StripeEvent{PaymentIntent: "pi_1", Charge: "ch_1", AmountRefunded: 100}, true},
		{"other types carry nothing", "customer.created", `{"id":"cus_1","email":"a@example.com"}`, StripeEvent{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev := VerifiedStripeEvent{ID: "evt_1", Type: tt.typ, APIVersion: "2024-06-20", Object: json.RawMessage(tt.object)}
			got, err := StripeJob(ev)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			want := tt.want
			want.EventID, want.Type, want.APIVersion = "evt_1", tt.typ, "2024-06-20"
			if got != want {
				t.Fatalf("job = %+v\nwant  %+v", got, want)
			}
			body, _ := json.Marshal(got)
			for _, pii := range []string{"example.com", "A Person", "4242"} {
				if bytes.Contains(body, []byte(pii)) {
					t.Fatalf("job payload carries %q: %s", pii, body)
				}
			}
		})
	}
}

// A job payload enqueued by the previous release (no amounts) still
// decodes, and a full refund in it still reverses the whole deposit.
func TestStripeJobOldPayload(t *testing.T) {
	t.Parallel()
	var job StripeEvent
	old := `{"event_id":"evt_1","type":"charge.refunded","api_version":"2023-10-16","livemode":false,"payment_intent":"pi_1","fully_refunded":true}`
	if err := json.Unmarshal([]byte(old), &job); err != nil {
		t.Fatal(err)
	}
	s, _ := store.NewMemory(store.Options{})
	if _, err := s.Credit(t.Context(), "u1", 100, "pi_1"); err != nil {
		t.Fatal(err)
	}
	out, err := handleStripe(t.Context(), s, job)
	if err != nil || out.result != ResultReversed || out.reversed != 100 {
		t.Fatalf("old full refund = %+v, %v", out, err)
	}
	job.FullyRefunded = false // an old partial refund: its share is unknown
	if _, err := handleStripe(t.Context(), s, job); !jobs.IsPermanent(err) {
		t.Fatalf("old partial refund err = %v, want permanent", err)
	}
}

type handlerBundle struct {
	reg     *jobs.Registry
	metrics *prometheus.Registry
	store   store.Store
	pool    *pgxpool.Pool // nil for Memory
	logs    *logtest.Buffer
}

func setupHandler(t *testing.T, withPostgres bool) *handlerBundle {
	t.Helper()
	b := &handlerBundle{metrics: prometheus.NewRegistry(), logs: &logtest.Buffer{}}
	var err error
	if withPostgres {
		b.pool = pgtest.New(t)
		b.store, err = store.NewPostgres(b.pool, store.Options{})
	} else {
		b.store, err = store.NewMemory(store.Options{})
	}
	if err != nil {
		t.Fatal(err)
	}
	if b.reg, err = jobs.NewRegistry(jobs.RegistryConfig{}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := registerStripe(b.reg, Deps{Log: log, Store: b.store, Registerer: b.metrics}); err != nil {
		t.Fatal(err)
	}
	return b
}

// deliver runs an event the way the worker does: StripeJob, the JSON job
// payload, then the registered handler.
func (b *handlerBundle) deliver(t *testing.T, ev VerifiedStripeEvent) error {
	t.Helper()
	job, err := StripeJob(ev)
	if err != nil {
		t.Fatalf("StripeJob: %v", err)
	}
	body, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	return b.reg.Dispatch(context.Background(), job.Kind(), jobs.Delivery{MessageID: "msg_" + ev.ID}, body)
}

func (b *handlerBundle) mustDeliver(t *testing.T, ev VerifiedStripeEvent, wantResult string) {
	t.Helper()
	before := b.count(t, ev.Type, wantResult)
	if err := b.deliver(t, ev); err != nil {
		t.Fatalf("%s %s: %v", ev.Type, ev.ID, err)
	}
	if got := b.count(t, ev.Type, wantResult); got != before+1 {
		t.Fatalf("%s %s: result %q counted %v times, want %v (logs:\n%s)", ev.Type, ev.ID, wantResult, got, before+1, b.logs)
	}
}

// count reads jobworker_stripe_events_total{type,result}; the type label
// is the event type or "other".
func (b *handlerBundle) count(t *testing.T, typ, result string) float64 {
	t.Helper()
	if !stripeTypes[typ] {
		typ = "other"
	}
	v, _ := metrictest.Value(t, b.metrics, "jobworker_stripe_events_total", map[string]string{"type": typ, "result": result})
	return v
}

func (b *handlerBundle) wantBalance(t *testing.T, user string, want int64) {
	t.Helper()
	if got, err := b.store.Balance(context.Background(), user); err != nil || got != want {
		t.Fatalf("balance of %s = %d, %v; want %d", user, got, err, want)
	}
}

func payment(t *testing.T, id, pi, user string, tokens string) VerifiedStripeEvent {
	return stripeEvent(t, id, StripePaymentSucceeded, map[string]any{
		"id": pi, "object": "payment_intent", "amount": 500, "status": "succeeded",
		"metadata": map[string]string{MetadataUserID: user, MetadataTokens: tokens},
	})
}

func chargeRefunded(t *testing.T, id, pi string, amount, refunded int64) VerifiedStripeEvent {
	return stripeEvent(t, id, StripeChargeRefunded, map[string]any{
		"id": "ch_" + pi, "object": "charge", "amount": amount, "amount_captured": amount, "amount_refunded": refunded,
		"refunded": refunded == amount, "payment_intent": pi, "billing_details": map[string]any{"email": "buyer@example.com"},
	})
}

func refundEvent(t *testing.T, id, typ, refund, pi, status string, amount int64) VerifiedStripeEvent {
	return stripeEvent(t, id, typ, map[string]any{
		"id": refund, "object": "refund", "amount": amount, "charge": "ch_" + pi, "payment_intent": pi,
		"status": status, "failure_reason": "lost_or_stolen_card",
	})
}

// TestStripeHandler drives the registered stripe.event handler with Stripe
// shaped events, out of order, against a real PostgreSQL (and the Memory
// store, which must behave the same).
func TestStripeHandler(t *testing.T) {
	t.Parallel()
	for _, withPostgres := range []bool{true, false} {
		name := map[bool]string{true: "postgres", false: "memory"}[withPostgres]
		t.Run(name+"/refund before its payment", func(t *testing.T) {
			t.Parallel()
			b := setupHandler(t, withPostgres)
			// 2.00 of a 5.00 charge refunded before the payment's job ran.
			b.mustDeliver(t, chargeRefunded(t, "evt_r1", "pi_1", 500, 200), ResultReversalRecorded)
			b.wantBalance(t, "user_a", 0)
			st, err := b.store.RefundState(context.Background(), "pi_1")
			if err != nil || !st.Recorded || st.Deposit != 0 || st.AmountRefunded != 200 {
				t.Fatalf("after the refund: %+v, %v; want it recorded, not ignored", st, err)
			}
			b.mustDeliver(t, payment(t, "evt_p1", "pi_1", "user_a", "100"), ResultCreditedReversed)
			b.wantBalance(t, "user_a", 60) // 100 − floor(100 × 200 / 500)
			if b.pool != nil {
				var same bool
				err := b.pool.QueryRow(context.Background(), `SELECT d.xmin = r.xmin FROM ledger_transactions d
					JOIN ledger_transactions r ON r.reverses_id = d.id WHERE d.external_ref = 'pi_1'`).Scan(&same)
				if err != nil || !same {
					t.Fatalf("credit and reversal in one transaction: %v, %v", same, err)
				}
			}
			// Redeliveries (new event ids, as Stripe's retries of a new
			// endpoint would have) change nothing.
			b.mustDeliver(t, payment(t, "evt_p1b", "pi_1", "user_a", "100"), ResultReplayed)
			b.mustDeliver(t, chargeRefunded(t, "evt_r1b", "pi_1", 500, 200), ResultReplayed)
			// The rest refunded: the remaining tokens go.
			b.mustDeliver(t, chargeRefunded(t, "evt_r2", "pi_1", 500, 500), ResultReversed)
			b.wantBalance(t, "user_a", 0)
			// An older event arriving last is stale.
			b.mustDeliver(t, chargeRefunded(t, "evt_r0", "pi_1", 500, 100), ResultReplayed)
			b.wantBalance(t, "user_a", 0)
			if logs := b.logs.String(); strings.Contains(logs, "user_a") || strings.Contains(logs, "example.com") {
				t.Fatalf("logs carry a user id or customer data:\n%s", logs)
			}
		})
		t.Run(name+"/spent tokens and failed refunds are recorded for an operator", func(t *testing.T) {
			t.Parallel()
			b := setupHandler(t, withPostgres)
			ctx := context.Background()
			b.mustDeliver(t, payment(t, "evt_p1", "pi_1", "user_a", "100"), ResultCredited)
			stream, err := b.store.StartStream(ctx, store.StartStreamRequest{CreatorID: "creator", Username: "creator"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.store.Tip(ctx, store.TipRequest{TipperID: "user_a", StreamID: stream.ID, Amount: 70, IdempotencyKey: "k"}); err != nil {
				t.Fatal(err)
			}
			b.mustDeliver(t, chargeRefunded(t, "evt_r1", "pi_1", 500, 500), ResultReversalShortfall)
			b.wantBalance(t, "user_a", 0)
			b.wantBalance(t, "creator", 70)
			if !strings.Contains(b.logs.String(), "level=WARN msg=\"stripe event recorded for an operator") {
				t.Fatalf("no warning for the shortfall:\n%s", b.logs)
			}
			// The refund then fails at Stripe: recorded once, whichever of
			// the three events reports it; nothing is re-credited.
			b.mustDeliver(t, refundEvent(t, "evt_f1", StripeRefundFailed, "re_1", "pi_1", "failed", 500), ResultRefundFailureRecorded)
			b.mustDeliver(t, refundEvent(t, "evt_f2", StripeRefundUpdated, "re_1", "pi_1", "failed", 500), ResultReplayed)
			b.mustDeliver(t, refundEvent(t, "evt_f3", StripeChargeRefundUpdated, "re_1", "pi_1", "failed", 500), ResultReplayed)
			b.mustDeliver(t, refundEvent(t, "evt_s1", StripeRefundUpdated, "re_2", "pi_1", "succeeded", 100), ResultIgnored)
			b.mustDeliver(t, refundEvent(t, "evt_c1", StripeRefundCreated, "re_3", "pi_1", "pending", 100), ResultIgnored)
			b.wantBalance(t, "user_a", 0)
			ex, err := b.store.RefundExceptions(ctx, 0)
			if err != nil || len(ex) != 2 {
				t.Fatalf("exceptions = %+v, %v", ex, err)
			}
			kinds := map[string]store.RefundException{}
			for _, e := range ex {
				kinds[e.Kind] = e
			}
			if kinds[store.ExceptionShortfall].Tokens != 70 || kinds[store.ExceptionRefundFailed].RefundRef != "re_1" {
				t.Fatalf("exceptions = %+v", ex)
			}
		})
		t.Run(name+"/what cannot be applied", func(t *testing.T) {
			t.Parallel()
			b := setupHandler(t, withPostgres)
			b.mustDeliver(t, payment(t, "evt_p1", "pi_1", "user_a", "100"), ResultCredited)
			b.mustDeliver(t, stripeEvent(t, "evt_o1", "customer.created", map[string]any{"id": "cus_1"}), ResultIgnored)
			b.mustDeliver(t, stripeEvent(t, "evt_o2", StripeChargeRefunded, map[string]any{"id": "ch_x", "amount": 500, "amount_refunded": 500, "refunded": true}), ResultIgnored)
			b.mustDeliver(t, stripeEvent(t, "evt_o3", StripePaymentSucceeded, map[string]any{"id": "pi_2", "metadata": map[string]string{}}), ResultIgnored)
			b.mustDeliver(t, chargeRefunded(t, "evt_r1", "pi_1", 500, 100), ResultReversed)
			// Contradicting facts and bad metadata go to the DLQ at once.
			for _, ev := range []VerifiedStripeEvent{
				chargeRefunded(t, "evt_bad1", "pi_1", 400, 100), // another charge amount than recorded
				payment(t, "evt_bad2", "pi_3", "user_a", "ten"),
				// A partial refund in an older job payload: no amounts.
				stripeEvent(t, "evt_bad3", StripeChargeRefunded, map[string]any{"id": "ch_pi_1", "payment_intent": "pi_1", "refunded": false}),
			} {
				before := b.count(t, ev.Type, ResultFailed)
				if err := b.deliver(t, ev); !jobs.IsPermanent(err) {
					t.Fatalf("%s: err = %v, want permanent", ev.ID, err)
				}
				if b.count(t, ev.Type, ResultFailed) != before+1 {
					t.Fatalf("%s: not counted as failed", ev.ID)
				}
			}
			b.wantBalance(t, "user_a", 80)
		})
	}
}
