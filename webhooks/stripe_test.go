package webhooks_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/digis/jobworker/internal/logtest"
	"github.com/digis/jobworker/webhooks"
	"github.com/digis/jobworker/webhooks/webhookstest"
)

const (
	stripeSecret    = "whsec_test_current_0123456789abcdef"
	stripeOldSecret = "whsec_test_previous_0123456789abcd"
)

var stripeNow = time.Unix(1700000000, 0)

type stripeBundle struct {
	v   *webhooks.StripeVerifier
	reg *prometheus.Registry
	log *logtest.Buffer
}

func setupStripe(t *testing.T, secrets ...string) stripeBundle {
	t.Helper()
	if len(secrets) == 0 {
		secrets = []string{stripeSecret, stripeOldSecret}
	}
	b := stripeBundle{reg: prometheus.NewRegistry(), log: new(logtest.Buffer)}
	var err error
	b.v, err = webhooks.NewStripeVerifier(webhooks.StripeConfig{
		Secrets:    secrets,
		Now:        func() time.Time { return stripeNow },
		Logger:     slog.New(slog.NewJSONHandler(b.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: b.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// v1 is the hex v1 signature of payload at ts (stripe-go's ComputeSignature).
func v1(secret string, ts int64, payload []byte) string {
	return hex.EncodeToString(webhook.ComputeSignature(time.Unix(ts, 0), payload, secret))
}

func TestStripeVerify(t *testing.T) {
	t.Parallel()
	ev := webhookstest.StripeEvent("evt_1", "payment_intent.succeeded", stripeNow)
	now := stripeNow.Unix()
	ts := strconv.FormatInt(now, 10)
	good := v1(stripeSecret, now, ev)
	junk := strings.Repeat("0", 64)

	type given struct {
		payload []byte
		header  string
	}
	tests := []struct {
		name      string
		given     given
		wantCheck string // "" = accepted
		wantKey   string // index of the secret that matched
	}{
		{name: "GenerateTestSignedPayload, current secret", given: given{header: webhookstest.StripeSignature(stripeSecret, ev, stripeNow)}, wantKey: "0"},
		{name: "GenerateTestSignedPayload, previous secret (rotation)", given: given{header: webhookstest.StripeSignature(stripeOldSecret, ev, stripeNow)}, wantKey: "1"},
		{name: "two v1 during a roll", given: given{header: "t=" + ts + ",v1=" + v1("whsec_new_unknown_to_us", now, ev) + ",v1=" + good}, wantKey: "0"},
		{name: "test-mode v0 alongside v1", given: given{header: "t=" + ts + ",v1=" + good + ",v0=" + junk}, wantKey: "0"},
		{name: "unknown pair", given: given{header: "t=" + ts + ",v1=" + good + ",foo=bar"}, wantKey: "0"},
		{name: "v1 before t", given: given{header: "v1=" + good + ",t=" + ts}, wantKey: "0"},
		{name: "uppercase hex", given: given{header: "t=" + ts + ",v1=" + strings.ToUpper(good)}, wantKey: "0"},
		{name: "junk v1 before the real one", given: given{header: "t=" + ts + ",v1=" + junk + ",v1=" + junk + ",v1=" + good}, wantKey: "0"},
		{name: "exactly tolerance old", given: given{header: "t=" + strconv.FormatInt(now-300, 10) + ",v1=" + v1(stripeSecret, now-300, ev)}, wantKey: "0"},
		{name: "exactly tolerance ahead", given: given{header: "t=" + strconv.FormatInt(now+300, 10) + ",v1=" + v1(stripeSecret, now+300, ev)}, wantKey: "0"},

		// Timestamp and header edges where stripe-go alone is looser.
		{name: "24 h in the future (stripe-go accepts)", given: given{header: webhookstest.StripeSignature(stripeSecret, ev, stripeNow.Add(24*time.Hour))}, wantCheck: webhooks.CheckIssuedInFuture},
		{name: "301 s in the future", given: given{header: "t=" + strconv.FormatInt(now+301, 10) + ",v1=" + v1(stripeSecret, now+301, ev)}, wantCheck: webhooks.CheckIssuedInFuture},
		{name: "301 s old", given: given{header: "t=" + strconv.FormatInt(now-301, 10) + ",v1=" + v1(stripeSecret, now-301, ev)}, wantCheck: webhooks.CheckExpired},
		{name: "a day old", given: given{header: webhookstest.StripeSignature(stripeSecret, ev, stripeNow.Add(-24*time.Hour))}, wantCheck: webhooks.CheckExpired},
		{name: "expired and wrong secret: named as forged", given: given{header: webhookstest.StripeSignature("whsec_other", ev, stripeNow.Add(-time.Hour))}, wantCheck: webhooks.CheckSignature},
		{name: "no t", given: given{header: "v1=" + good}, wantCheck: webhooks.CheckMalformed},
		{name: "t=abc", given: given{header: "t=abc,v1=" + good}, wantCheck: webhooks.CheckMalformed},
		{name: "t empty", given: given{header: "t=,v1=" + good}, wantCheck: webhooks.CheckMalformed},
		{name: "trailing comma", given: given{header: "t=" + ts + ",v1=" + good + ","}, wantCheck: webhooks.CheckMalformed},
		{name: "space after comma", given: given{header: "t=" + ts + ", v1=" + good}, wantCheck: webhooks.CheckScheme},
		{name: "only v0", given: given{header: "t=" + ts + ",v0=" + good}, wantCheck: webhooks.CheckScheme},
		{name: "duplicate t", given: given{header: "t=" + ts + ",t=" + ts + ",v1=" + good}, wantCheck: webhooks.CheckMalformed},
		{name: "10,000 junk v1 plus the real one", given: given{header: "t=" + ts + strings.Repeat(",v1="+junk, 10000) + ",v1=" + good}, wantCheck: webhooks.CheckMalformed},
		{name: "more v1 than the cap", given: given{header: "t=" + ts + strings.Repeat(",v1="+junk, webhooks.MaxStripeV1Signatures) + ",v1=" + good}, wantCheck: webhooks.CheckMalformed},
		{name: "body with one trailing newline", given: given{payload: append(append([]byte{}, ev...), '\n'), header: "t=" + ts + ",v1=" + good}, wantCheck: webhooks.CheckSignature},
		{name: "header forged with an empty secret", given: given{header: "t=" + ts + ",v1=" + v1("", now, ev)}, wantCheck: webhooks.CheckSignature},
		{name: "signed {}: no id", given: given{payload: []byte(`{}`), header: "t=" + ts + ",v1=" + v1(stripeSecret, now, []byte(`{}`))}, wantCheck: webhooks.CheckEventID},
		{name: "signed event without type", given: given{payload: []byte(`{"id":"evt_2"}`), header: "t=" + ts + ",v1=" + v1(stripeSecret, now, []byte(`{"id":"evt_2"}`))}, wantCheck: webhooks.CheckEventType},
		{name: "signed JSON array", given: given{payload: []byte(`[]`), header: "t=" + ts + ",v1=" + v1(stripeSecret, now, []byte(`[]`))}, wantCheck: webhooks.CheckPayload},
		{name: "signed non-JSON", given: given{payload: []byte(`id=evt_1`), header: "t=" + ts + ",v1=" + v1(stripeSecret, now, []byte(`id=evt_1`))}, wantCheck: webhooks.CheckPayload},
		{name: "signed empty body", given: given{payload: []byte{}, header: "t=" + ts + ",v1=" + v1(stripeSecret, now, nil)}, wantCheck: webhooks.CheckPayload},
		{name: "data.object not an object", given: given{payload: []byte(`{"id":"evt_3","type":"x","data":{"object":5}}`), header: "t=" + ts + ",v1=" + v1(stripeSecret, now, []byte(`{"id":"evt_3","type":"x","data":{"object":5}}`))}, wantCheck: webhooks.CheckPayload},

		// Hostile Stripe-Signature headers.
		{name: "missing header", given: given{header: ""}, wantCheck: webhooks.CheckMissing},
		{name: "whitespace header", given: given{header: "  \t"}, wantCheck: webhooks.CheckMissing},
		{name: "negative t", given: given{header: "t=-1,v1=" + good}, wantCheck: webhooks.CheckMalformed},
		{name: "t with plus sign", given: given{header: "t=+" + ts + ",v1=" + good}, wantCheck: webhooks.CheckMalformed},
		{name: "t over int64", given: given{header: "t=99999999999999999999,v1=" + good}, wantCheck: webhooks.CheckMalformed},
		{name: "t in milliseconds", given: given{header: "t=" + ts + "000,v1=" + v1(stripeSecret, now*1000, ev)}, wantCheck: webhooks.CheckIssuedInFuture},
		{name: "v1 empty", given: given{header: "t=" + ts + ",v1="}, wantCheck: webhooks.CheckMalformed},
		{name: "v1 non-hex", given: given{header: "t=" + ts + ",v1=" + strings.Repeat("zz", 32)}, wantCheck: webhooks.CheckMalformed},
		{name: "v1 odd length", given: given{header: "t=" + ts + ",v1=" + good[:63]}, wantCheck: webhooks.CheckMalformed},
		{name: "v1 wrong length", given: given{header: "t=" + ts + ",v1=" + good[:62]}, wantCheck: webhooks.CheckMalformed},
		{name: "pair with ==", given: given{header: "t==" + ts + ",v1=" + good}, wantCheck: webhooks.CheckMalformed},
		{name: "pair without =", given: given{header: "t=" + ts + ",v1"}, wantCheck: webhooks.CheckMalformed},
		{name: "empty key", given: given{header: "t=" + ts + ",=x,v1=" + good}, wantCheck: webhooks.CheckMalformed},
		{name: "oversized header", given: given{header: "t=" + ts + ",v1=" + good + ",x=" + strings.Repeat("a", webhooks.MaxStripeSignatureHeaderBytes)}, wantCheck: webhooks.CheckMalformed},
		{name: "another environment's secret", given: given{header: webhookstest.StripeSignature("whsec_live_secret_not_ours", ev, stripeNow)}, wantCheck: webhooks.CheckSignature},
		{name: "secret with a trailing newline at the sender", given: given{header: webhookstest.StripeSignature(stripeSecret+"\n", ev, stripeNow)}, wantCheck: webhooks.CheckSignature},
		{name: "payload re-serialised", given: given{payload: bytes.ReplaceAll(ev, []byte(`,"`), []byte(`, "`)), header: "t=" + ts + ",v1=" + good}, wantCheck: webhooks.CheckSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupStripe(t)
			payload := tt.given.payload
			if payload == nil {
				payload = ev
			}
			got, err := b.v.Verify(context.Background(), payload, tt.given.header)
			result := "ok"
			if tt.wantCheck == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if got.ID != "evt_1" || got.Type != "payment_intent.succeeded" || got.APIVersion != webhooks.StripeAPIVersion ||
					!got.Created.Equal(stripeNow) || got.Livemode || !bytes.Equal(got.Payload, payload) || !bytes.Contains(got.Object, []byte(`"pi_test"`)) {
					t.Fatalf("event = %+v", got)
				}
				if c := counter(t, b.reg, "jobworker_webhook_signing_key_used_total", map[string]string{"source": "stripe", "key": tt.wantKey}); c != 1 {
					t.Errorf("key_used{%s} = %v, want 1", tt.wantKey, c)
				}
			} else {
				result = tt.wantCheck
				var ve *webhooks.VerificationError
				if !errors.As(err, &ve) || ve.Check != tt.wantCheck || ve.Source != "stripe" {
					t.Fatalf("Verify err = %v, want check %q", err, tt.wantCheck)
				}
				wantSentinel := webhooks.ErrInvalidSignature
				switch tt.wantCheck {
				case webhooks.CheckPayload, webhooks.CheckEventID, webhooks.CheckEventType:
					wantSentinel = webhooks.ErrInvalidEvent
				}
				if !errors.Is(err, wantSentinel) {
					t.Errorf("err %v does not wrap %v", err, wantSentinel)
				}
				if got.ID != "" || got.Payload != nil {
					t.Errorf("event returned on failure: %+v", got)
				}
				logged := b.log.String()
				for _, secret := range []string{stripeSecret, stripeOldSecret, "evt_1", "pi_test", good} {
					if strings.Contains(logged, secret) || strings.Contains(err.Error(), secret) {
						t.Errorf("log or error leaks %q", secret)
					}
				}
			}
			if c := counter(t, b.reg, "jobworker_webhook_verifications_total", map[string]string{"source": "stripe", "result": result}); c != 1 {
				t.Errorf("verifications{%s} = %v, want 1", result, c)
			}
		})
	}
}

func TestStripeAPIVersionMismatchAcceptedAndCounted(t *testing.T) {
	t.Parallel()
	b := setupStripe(t)
	for i, payload := range []string{
		`{"id":"evt_a","type":"charge.succeeded","api_version":"2024-06-20","data":{"object":{}}}`,
		`{"id":"evt_b","type":"charge.succeeded","api_version":"2024-06-20","data":{"object":{}}}`,
		`{"id":"evt_c","type":"charge.succeeded"}`, // no api_version at all
	} {
		ev, err := b.v.Verify(context.Background(), []byte(payload), webhookstest.StripeSignature(stripeSecret, []byte(payload), stripeNow))
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if ev.APIVersion == webhooks.StripeAPIVersion {
			t.Fatalf("%d: version %q", i, ev.APIVersion)
		}
	}
	if c := counter(t, b.reg, "jobworker_stripe_api_version_mismatch_total", nil); c != 3 {
		t.Fatalf("mismatch counter = %v, want 3", c)
	}
	logged := b.log.String()
	if n := strings.Count(logged, `"level":"WARN"`); n != 2 { // once per distinct version
		t.Errorf("%d warnings, want 2:\n%s", n, logged)
	}
	if !strings.Contains(logged, `"api_version":"2024-06-20"`) || !strings.Contains(logged, `"expected":"`+webhooks.StripeAPIVersion+`"`) {
		t.Errorf("log lacks the versions:\n%s", logged)
	}
	if webhooks.StripeAPIVersion != "2023-10-16" {
		t.Errorf("stripe-go pins %s; update docs when bumping stripe-go", webhooks.StripeAPIVersion)
	}
}

func TestStripeRotationOverlap(t *testing.T) {
	t.Parallel()
	ev := webhookstest.StripeEvent("evt_rot", "invoice.paid", stripeNow)
	// Before the roll: only the old secret is configured and used.
	before := setupStripe(t, stripeOldSecret)
	// During the overlap: the new secret first, the old one kept.
	during := setupStripe(t, stripeSecret, stripeOldSecret)
	// After: the old secret removed.
	after := setupStripe(t, stripeSecret)
	tests := []struct {
		name   string
		v      *webhooks.StripeVerifier
		secret string
		ok     bool
	}{
		{"before, old secret", before.v, stripeOldSecret, true},
		{"before, new secret", before.v, stripeSecret, false},
		{"overlap, old secret", during.v, stripeOldSecret, true},
		{"overlap, new secret", during.v, stripeSecret, true},
		{"after, new secret", after.v, stripeSecret, true},
		{"after, old secret", after.v, stripeOldSecret, false},
	}
	for _, tt := range tests {
		_, err := tt.v.Verify(context.Background(), ev, webhookstest.StripeSignature(tt.secret, ev, stripeNow))
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestNewStripeVerifierRefusesBadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		given webhooks.StripeConfig
	}{
		{"no secrets", webhooks.StripeConfig{}},
		{"empty secret", webhooks.StripeConfig{Secrets: []string{""}}},
		{"whitespace secret", webhooks.StripeConfig{Secrets: []string{"  "}}},
		{"second secret empty", webhooks.StripeConfig{Secrets: []string{stripeSecret, ""}}},
		{"trailing newline", webhooks.StripeConfig{Secrets: []string{stripeSecret + "\n"}}},
		{"negative tolerance", webhooks.StripeConfig{Secrets: []string{stripeSecret}, Tolerance: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := webhooks.NewStripeVerifier(tt.given)
			if err == nil || v != nil {
				t.Fatalf("NewStripeVerifier = %v, %v; want an error", v, err)
			}
			if strings.Contains(err.Error(), stripeSecret) {
				t.Errorf("error leaks the secret: %v", err)
			}
		})
	}
}
