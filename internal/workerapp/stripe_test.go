package workerapp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	qstash "github.com/upstash/qstash-go"

	"github.com/digis/jobworker/cache"
	"github.com/digis/jobworker/internal/appjobs"
	"github.com/digis/jobworker/internal/outage"
	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/process"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/internal/workerapp"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/webhooks/webhookstest"
)

const (
	stripeSecret    = "whsec_current_0123456789"
	stripeOldSecret = "whsec_old_9876543210"
)

type stripeBundle struct {
	*bundle
	store store.Store
	pool  *pgxpool.Pool // nil on the in-memory store
}

// setupStripe runs the worker with the reference application's jobs on a
// real PostgreSQL, so stripe.event jobs really move money.
func setupStripe(t *testing.T, b *bundle) *stripeBundle {
	t.Helper()
	pool := pgtest.New(t)
	st, err := store.NewPostgres(pool, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sb := setupStripeOn(t, b, st, nil)
	sb.pool = pool
	return sb
}

// setupStripeOn is setupStripe on st, with env overriding the worker's
// variables.
func setupStripeOn(t *testing.T, b *bundle, st store.Store, env map[string]string) *stripeBundle {
	t.Helper()
	register := func(reg *jobs.Registry, p *process.Process) error {
		c, err := cache.New(p.Redis, cache.Config{Registerer: p.Registry})
		if err != nil {
			return err
		}
		return appjobs.Register(reg, appjobs.Deps{Log: p.Log, Store: st, Cache: c, Registerer: p.Registry})
	}
	b.store = st
	vars := map[string]string{"STRIPE_WEBHOOK_SECRET": stripeSecret + "," + stripeOldSecret}
	for k, v := range env {
		vars[k] = v
	}
	setupWith(t, b, register, vars)
	return &stripeBundle{bundle: b, store: st}
}

// behindFront makes the worker reach QStash through a front the test can
// take down.
func behindFront(t *testing.T, b *bundle) **outage.Front {
	front := new(*outage.Front)
	b.qstashURL = func(string) string {
		*front = outage.Start(t, b.qstash.Handler())
		return (*front).URL
	}
	return front
}

// outboxStates counts the outbox rows per state.
func (b *stripeBundle) outboxStates(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	rows, _ := b.pool.Query(context.Background(), `SELECT state, count(*) FROM jobworker_outbox GROUP BY state`)
	var state string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&state, &n}, func() error { out[state] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
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

// QStash unreachable: Stripe's events are acknowledged all the same, since
// each is recorded with its job in one database transaction; a redelivery
// gets 200 without a second job. Once QStash is back, every purchase is
// credited once.
func TestStripeAcknowledgedWhileQStashDownCreditedWhenBack(t *testing.T) {
	t.Parallel()
	b := &bundle{}
	front := behindFront(t, b)
	sb := setupStripe(t, b)
	(*front).Down()
	now := time.Now()
	const buys = 5
	for i := range buys {
		payload := paymentEvent(fmt.Sprintf("evt_down_%d", i), fmt.Sprintf("pi_down_%d", i), fmt.Sprintf("user_down_%d", i), 10+i, now)
		for range 2 { // Stripe resends
			if s := sendStripe(t, sb.url, payload, webhookstest.StripeSignature(stripeSecret, payload, time.Now())); s != 200 {
				t.Fatalf("event %d with QStash down: %d, want 200", i, s)
			}
		}
	}
	if got := sb.outboxStates(t); got["pending"] != buys || len(got) != 1 {
		t.Fatalf("outbox with QStash down: %v, want %d pending jobs (one per event)", got, buys)
	}
	if n := metric(t, sb.url, `jobworker_stripe_webhooks_total{outcome="duplicate"}`); n != buys {
		t.Fatalf("duplicates = %v, want %d", n, buys)
	}
	(*front).Up()
	for i := range buys {
		sb.waitBalance(t, fmt.Sprintf("user_down_%d", i), int64(10+i))
	}
	waitMetric(t, sb.url, `jobworker_stripe_events_total{result="credited",type="payment_intent.succeeded"}`, buys)
	testwait.For(t, 10*time.Second, "every job recorded as sent", func() bool {
		got := sb.outboxStates(t)
		return got["sent"] == buys && len(got) == 1
	})
}

// On the local stack's in-memory store there is no transaction for the
// event and its job: the event is deduped in Redis and its job published
// before the answer. When the job cannot be published, Stripe gets a 5xx
// (so it retries) and nothing is marked done: the retry publishes and the
// credit happens once.
func TestStripeMemoryStorePublishFailureThenRetry(t *testing.T) {
	t.Parallel()
	b := &bundle{}
	front := behindFront(t, b)
	mem, err := store.NewMemory(store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sb := setupStripeOn(t, b, mem, nil)
	(*front).Down()
	now := time.Now()
	payload := paymentEvent("evt_retry", "pi_retry", "user_retry", 42, now)
	if s := sendStripe(t, sb.url, payload, webhookstest.StripeSignature(stripeSecret, payload, now)); s != http.StatusServiceUnavailable {
		t.Fatalf("publish failure answered %d, want 503", s)
	}
	(*front).Up()
	if s := sendStripe(t, sb.url, payload, webhookstest.StripeSignature(stripeSecret, payload, time.Now())); s != 200 {
		t.Fatalf("retry: %d", s)
	}
	sb.waitBalance(t, "user_retry", 42)
	waitMetric(t, sb.url, `jobworker_stripe_events_total{result="credited",type="payment_intent.succeeded"}`, 1)
}

// With OUTBOX_RELAY=off nothing publishes the outbox in the process; the
// relay route does, once per call, and only for calls QStash signed: the
// schedule of a serverless deployment.
func TestRelayRoute(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	st, err := store.NewPostgres(pool, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sb := setupStripeOn(t, &bundle{}, st, map[string]string{"OUTBOX_RELAY": "off"})
	sb.pool = pool
	now := time.Now()
	send := func(i int) {
		t.Helper()
		payload := paymentEvent(fmt.Sprintf("evt_route_%d", i), fmt.Sprintf("pi_route_%d", i), "user_route", 7, now)
		if s := sendStripe(t, sb.url, payload, webhookstest.StripeSignature(stripeSecret, payload, time.Now())); s != 200 {
			t.Fatalf("event %d: %d", i, s)
		}
	}
	send(1)
	relayURL := sb.url + workerapp.RelayPath
	for _, tt := range []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"unsigned", nil, http.StatusUnauthorized},
		{"signed with another key", map[string]string{"Upstash-Signature": mustQStashSignature(t, "sig_attacker_key_0123456789", relayURL)}, http.StatusUnauthorized},
		{"signed for another URL", map[string]string{"Upstash-Signature": mustQStashSignature(t, qstashdev.DevCurrentSigningKey, sb.url+"/jobs/x")}, http.StatusUnauthorized},
	} {
		if s, _ := post(t, relayURL, nil, tt.hdr); s != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, s, tt.want)
		}
	}
	if got := sb.outboxStates(t); got["pending"] != 1 {
		t.Fatalf("outbox before a signed call: %v, want the job pending (no relay runs in the process)", got)
	}

	// A signed call, as QStash's schedule makes it: the relay runs once.
	res, body := postBody(t, relayURL, map[string]string{"Upstash-Signature": mustQStashSignature(t, qstashdev.DevCurrentSigningKey, relayURL)})
	if res != 200 || !strings.Contains(body, `"published":1`) {
		t.Fatalf("signed relay call: %d %s", res, body)
	}
	sb.waitBalance(t, "user_route", 7)

	// And as deployed: a QStash schedule calling the route (qstash-dev
	// takes a cron with seconds; QStash's finest is every minute).
	q := qstash.NewClientWith(qstash.Options{Url: sb.qstash.URL, Token: qstashdev.DevToken})
	if _, err := q.Schedules().Create(qstash.ScheduleOptions{Destination: relayURL, Cron: "@every 1s"}); err != nil {
		t.Fatal(err)
	}
	send(2)
	sb.waitBalance(t, "user_route", 14)
	// The relay records "sent" once QStash accepted, which may be after
	// QStash delivered the job.
	testwait.For(t, 10*time.Second, "both jobs recorded as sent", func() bool {
		got := sb.outboxStates(t)
		return got["sent"] == 2 && len(got) == 1
	})
}

func mustQStashSignature(t *testing.T, key, url string) string {
	t.Helper()
	sig, err := webhookstest.QStashSignature(key, url, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// postBody is post returning the answer's body.
func postBody(t *testing.T, url string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// TestStripeLivemodeChecked: with STRIPE_MODE=live a test-mode event,
// validly signed with one of our secrets, is acknowledged (200, so Stripe
// stops retrying what can never be taken) but never recorded nor credited;
// a live event is. On the default of a development machine (test mode) a
// live event is the one ignored.
func TestStripeLivemodeChecked(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	st, err := store.NewPostgres(pool, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := setupStripeOn(t, &bundle{}, st, map[string]string{"STRIPE_MODE": "live"})
	b.pool = pool
	live := func(payload []byte) []byte {
		return bytes.Replace(payload, []byte(`"livemode":false`), []byte(`"livemode":true`), 1)
	}
	send := func(payload []byte) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, b.url+workerapp.StripePath, bytes.NewReader(payload))
		req.Header.Set("Stripe-Signature", webhookstest.StripeSignature(stripeSecret, payload, time.Now()))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}
	if status, body := send(paymentEvent("evt_testmode", "pi_testmode", "user_test", 100, time.Now())); status != 200 || !strings.Contains(body, `"ignored":"livemode"`) {
		t.Fatalf("test-mode event on a live worker: %d %s", status, body)
	}
	var recorded int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM stripe_events`).Scan(&recorded); err != nil || recorded != 0 {
		t.Fatalf("stripe_events after the ignored event: %d (%v)", recorded, err)
	}
	if n := metric(t, b.url, `jobworker_stripe_webhooks_total{outcome="wrong_mode"}`); n != 1 {
		t.Fatalf("wrong_mode = %v", n)
	}
	if status, body := send(live(paymentEvent("evt_live", "pi_live", "user_live", 250, time.Now()))); status != 200 || strings.Contains(body, "ignored") {
		t.Fatalf("live event: %d %s", status, body)
	}
	b.waitBalance(t, "user_live", 250)
	if n, err := b.store.Balance(context.Background(), "user_test"); err != nil || n != 0 {
		t.Fatalf("the test-mode event credited %d (%v)", n, err)
	}

	mem, err := store.NewMemory(store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b = setupStripeOn(t, &bundle{}, mem, nil) // JOBWORKER_ENV=development: test mode
	if status, body := send(live(paymentEvent("evt_live2", "pi_live2", "user_live2", 5, time.Now()))); status != 200 || !strings.Contains(body, `"ignored":"livemode"`) {
		t.Fatalf("live event on a development worker: %d %s", status, body)
	}
}
