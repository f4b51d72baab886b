package webhooks_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/webhooks"
	"github.com/digis/jobworker/webhooks/webhookstest"
)

// BenchmarkQStashVerify compares a full verification (structure, alg pin,
// jwx MAC with current/next, claims, body hash, metrics) with the floor: a
// bare HMAC-SHA256 over the same token's signing input and a constant-time
// compare.
func BenchmarkQStashVerify(b *testing.B) {
	v, err := webhooks.NewQStashVerifier(webhooks.QStashConfig{
		CurrentSigningKey: vecCurrent, NextSigningKey: vecNext,
		Now:        func() time.Time { return vecNow },
		Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(vecBody)
	ctx := context.Background()

	b.Run("baseline_hmac_sha256", func(b *testing.B) {
		i := strings.LastIndexByte(vecV1, '.')
		input, sig := []byte(vecV1[:i]), vecV1[i+1:]
		key := []byte(vecCurrent)
		b.ReportAllocs()
		for b.Loop() {
			want, _ := base64.RawURLEncoding.DecodeString(sig)
			m := hmac.New(sha256.New, key)
			m.Write(input)
			if !hmac.Equal(m.Sum(nil), want) {
				b.Fatal("mismatch")
			}
		}
	})
	for _, bc := range []struct{ name, tok string }{
		{"verify_current_key", vecV1},
		{"verify_next_key", vecV2},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, bc.tok, vecURL, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("reject_forged", func(b *testing.B) {
		forged := rawJWT("sig_notOurs000000000000000000000", hs256Header, strings.Split(vecV1, ".")[1])
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(ctx, forged, vecURL, body); err == nil {
				b.Fatal("accepted")
			}
		}
	})
}

// BenchmarkStripeVerify does the same for a ~2 KB Stripe event.
func BenchmarkStripeVerify(b *testing.B) {
	v, err := webhooks.NewStripeVerifier(webhooks.StripeConfig{
		Secrets:    []string{stripeSecret, stripeOldSecret},
		Now:        func() time.Time { return stripeNow },
		Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		b.Fatal(err)
	}
	payload := []byte(`{"id":"evt_bench","object":"event","api_version":"2023-10-16","created":1700000000,"livemode":false,"type":"payment_intent.succeeded","data":{"object":{"id":"pi_1","object":"payment_intent","description":"` + strings.Repeat("x", 1800) + `"}}}`)
	ctx := context.Background()
	b.Run("baseline_hmac_sha256", func(b *testing.B) {
		key := []byte(stripeSecret)
		want := []byte(v1(stripeSecret, stripeNow.Unix(), payload))
		prefix := []byte(strconv.FormatInt(stripeNow.Unix(), 10) + ".")
		b.ReportAllocs()
		for b.Loop() {
			m := hmac.New(sha256.New, key)
			m.Write(prefix)
			m.Write(payload)
			var hexSum [64]byte
			const digits = "0123456789abcdef"
			for i, c := range m.Sum(nil) {
				hexSum[2*i], hexSum[2*i+1] = digits[c>>4], digits[c&15]
			}
			if !hmac.Equal(hexSum[:], want) {
				b.Fatal("mismatch")
			}
		}
	})
	for _, bc := range []struct{ name, secret string }{
		{"verify_first_secret", stripeSecret},
		{"verify_second_secret", stripeOldSecret},
	} {
		header := webhookstest.StripeSignature(bc.secret, payload, stripeNow)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, payload, header); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
