package workerapp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digis/jobworker/cache"
	"github.com/digis/jobworker/internal/appjobs"
	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/process"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/internal/workerapp"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/webhooks/webhookstest"
)

const (
	stripeSecret    = "whsec_current_0123456789"
	stripeOldSecret = "whsec_old_9876543210"
)

type stripeBundle struct {
	*bundle
	store store.Store
}

// setupStripe runs the worker with the reference application's jobs on a
// real PostgreSQL, so stripe.event jobs really move money.
func setupStripe(t *testing.T, b *bundle) *stripeBundle {
	t.Helper()
	st, err := store.NewPostgres(pgtest.New(t), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	register := func(reg *jobs.Registry, p *process.Process) error {
		c, err := cache.New(p.Redis, cache.Config{Registerer: p.Registry})
		if err != nil {
			return err
		}
		return appjobs.Register(reg, appjobs.Deps{Log: p.Log, Store: st, Cache: c, Registerer: p.Registry})
	}
	setupWith(t, b, register, map[string]string{"STRIPE_WEBHOOK_SECRET": stripeSecret + "," + stripeOldSecret})
	return &stripeBundle{bundle: b, store: st}
}

// paymentEvent is a payment_intent.succeeded for a token purchase.
func paymentEvent(id, pi, userID string, tokens int, created time.Time) []byte {
	return stripeEvent(id, appjobs.StripePaymentSucceeded, created, map[string]any{
		"id": pi, "object": "payment_intent", "amount": 500,
		"metadata": map[string]string{appjobs.MetadataUserID: userID, appjobs.MetadataTokens: fmt.Sprint(tokens)},
	})
}

func stripeEvent(id, typ string, created time.Time, object map[string]any) []byte {
	ev := map[string]any{
		"id": id, "object": "event", "api_version": "2023-10-16", "created": created.Unix(),
		"livemode": false, "type": typ, "data": map[string]any{"object": object},
	}
	if id == "" {
		delete(ev, "id")
	}
	b, _ := json.Marshal(ev)
	return b
}

func sendStripe(t *testing.T, base string, payload []byte, sigHeader string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+workerapp.StripePath, strings.NewReader(string(payload)))
	req.Header.Set("Content-Type", "application/json")
	if sigHeader != "" {
		req.Header.Set("Stripe-Signature", sigHeader)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if strings.Contains(string(body), "whsec_") || (res.StatusCode >= 400 && strings.Contains(string(body), "payment_intent")) {
		t.Fatalf("answer leaks detail: %s", body)
	}
	return res.StatusCode
}

func (b *stripeBundle) waitBalance(t *testing.T, user string, want int64) {
	t.Helper()
	testwait.For(t, 15*time.Second, fmt.Sprintf("balance of %s = %d", user, want), func() bool {
		got, err := b.store.Balance(context.Background(), user)
		return err == nil && got == want
	})
}

func TestStripeEventCreditsOnceHoweverOftenDelivered(t *testing.T) {
	t.Parallel()
	b := setupStripe(t, &bundle{})
	payload := paymentEvent("evt_credit", "pi_credit", "user_buyer", 250, time.Now())
	sig := func() string { return webhookstest.StripeSignature(stripeSecret, payload, time.Now()) }
	if s := sendStripe(t, b.url, payload, sig()); s != 200 {
		t.Fatalf("first delivery: %d", s)
	}
	// Four more: one after another, then concurrently.
	if s := sendStripe(t, b.url, payload, sig()); s != 200 {
		t.Fatalf("redelivery: %d", s)
	}
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s := sendStripe(t, b.url, payload, sig()); s != 200 && s != http.StatusConflict {
				t.Errorf("concurrent redelivery: %d", s)
			}
		}()
	}
	wg.Wait()
	b.waitBalance(t, "user_buyer", 250)
	waitMetric(t, b.url, `jobworker_stripe_events_total{result="credited",type="payment_intent.succeeded"}`, 1)
	// Nothing else can arrive later: money moves only through stripe.event
	// jobs, and every delivery has been answered with one hand-off in all.
	if n := metric(t, b.url, `jobworker_stripe_webhooks_total{outcome="forwarded"}`); n != 1 {
		t.Fatalf("events handed on = %v, want 1", n)
	}
}

func TestStripeRefundReversesCredit(t *testing.T) {
	t.Parallel()
	b := setupStripe(t, &bundle{})
	now := time.Now()
	pay := paymentEvent("evt_pay", "pi_refund", "user_refund", 100, now)
	if s := sendStripe(t, b.url, pay, webhookstest.StripeSignature(stripeSecret, pay, now)); s != 200 {
		t.Fatal(s)
	}
	b.waitBalance(t, "user_refund", 100)
	refund := stripeEvent("evt_refund", appjobs.StripeChargeRefunded, now, map[string]any{
		"id": "ch_1", "object": "charge", "payment_intent": "pi_refund", "refunded": true,
	})
	if s := sendStripe(t, b.url, refund, webhookstest.StripeSignature(stripeSecret, refund, now)); s != 200 {
		t.Fatal(s)
	}
	b.waitBalance(t, "user_refund", 0)
	other := stripeEvent("evt_other", "customer.created", now, map[string]any{"id": "cus_1"})
	if s := sendStripe(t, b.url, other, webhookstest.StripeSignature(stripeSecret, other, now)); s != 200 {
		t.Fatal(s)
	}
	waitMetric(t, b.url, `jobworker_stripe_events_total{result="ignored",type="other"}`, 1)
}

func TestStripeRejectsBadDeliveries(t *testing.T) {
	t.Parallel()
	b := setupStripe(t, &bundle{})
	now := time.Now()
	payload := paymentEvent("evt_bad", "pi_bad", "user_bad", 10, now)
	good := webhookstest.StripeSignature(stripeSecret, payload, now)
	v1 := good[strings.Index(good, "v1=")+3:]
	tests := []struct {
		name    string
		payload []byte
		header  string
		want    int
	}{
		{"no header", payload, "", 400},
		{"garbage header", payload, "nonsense", 400},
		{"wrong secret", payload, webhookstest.StripeSignature("whsec_attacker", payload, now), 400},
		{"tampered body", paymentEvent("evt_bad", "pi_bad", "user_bad", 1000, now), good, 400},
		{"too old", payload, webhookstest.StripeSignature(stripeSecret, payload, now.Add(-10*time.Minute)), 400},
		{"in the future", payload, webhookstest.StripeSignature(stripeSecret, payload, now.Add(10*time.Minute)), 400},
		{"v0 only", payload, fmt.Sprintf("t=%d,v0=%s", now.Unix(), v1), 400},
		{"timestamp swapped", payload, fmt.Sprintf("t=%d,v1=%s", now.Unix()+1, v1), 400},
		{"event without id", stripeEvent("", "payment_intent.succeeded", now, map[string]any{"id": "pi"}), "", 400},
		{"oversized", []byte(`{"pad":"` + strings.Repeat("x", 1<<20) + `"}`), good, 413},
	}
	for _, tt := range tests {
		header := tt.header
		if tt.name == "event without id" {
			header = webhookstest.StripeSignature(stripeSecret, tt.payload, now)
		}
		if s := sendStripe(t, b.url, tt.payload, header); s != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, s, tt.want)
		}
	}
	// Every answer is in: a refused event was never handed on, so no job can
	// move money later.
	if n := metric(t, b.url, `jobworker_stripe_webhooks_total{outcome="forwarded"}`); n != 0 {
		t.Fatalf("refused events handed on = %v, want 0", n)
	}
	if got, _ := b.store.Balance(context.Background(), "user_bad"); got != 0 {
		t.Fatalf("a rejected event moved money: balance %d", got)
	}
}

func TestStripeRotatedSecretDuringOverlap(t *testing.T) {
	t.Parallel()
	b := setupStripe(t, &bundle{})
	now := time.Now()
	for i, secret := range []string{stripeOldSecret, stripeSecret} {
		payload := paymentEvent(fmt.Sprintf("evt_rot_%d", i), fmt.Sprintf("pi_rot_%d", i), "user_rot", 5, now)
		if s := sendStripe(t, b.url, payload, webhookstest.StripeSignature(secret, payload, now)); s != 200 {
			t.Fatalf("secret %d: %d", i, s)
		}
	}
	b.waitBalance(t, "user_rot", 10)
}

// When the job cannot be published, Stripe gets a 5xx (so it retries) and
// nothing is marked done: the retry publishes and the credit happens once.
func TestStripePublishFailureThenRetry(t *testing.T) {
	t.Parallel()
	var failing atomic.Bool
	failing.Store(true)
	b := &bundle{}
	b.qstashURL = func(real string) string {
		target, _ := url.Parse(real)
		proxy := httputil.NewSingleHostReverseProxy(target)
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if failing.Load() {
				http.Error(w, `{"error":"unavailable"}`, http.StatusServiceUnavailable)
				return
			}
			proxy.ServeHTTP(w, r)
		}))
		t.Cleanup(ts.Close)
		return ts.URL
	}
	sb := setupStripe(t, b)
	now := time.Now()
	payload := paymentEvent("evt_retry", "pi_retry", "user_retry", 42, now)
	if s := sendStripe(t, sb.url, payload, webhookstest.StripeSignature(stripeSecret, payload, now)); s < 500 {
		t.Fatalf("publish failure answered %d, want 5xx", s)
	}
	failing.Store(false)
	if s := sendStripe(t, sb.url, payload, webhookstest.StripeSignature(stripeSecret, payload, time.Now())); s != 200 {
		t.Fatalf("retry: %d", s)
	}
	sb.waitBalance(t, "user_retry", 42)
}
