package webhooks_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/digis/jobworker/webhooks"
	"github.com/digis/jobworker/webhooks/webhookstest"
)

// The fuzz targets check two properties: no input panics, and nothing is
// accepted that an independent, hand-written verifier (crypto/hmac, not
// jwx or stripe-go) would not accept with the configured keys.
//
// CI runs each briefly:
//
//	go test -run='^$' -fuzz='^FuzzQStashVerify$' -fuzztime=10s ./webhooks
//	go test -run='^$' -fuzz='^FuzzQStashVerifyRequest$' -fuzztime=10s ./webhooks
//	go test -run='^$' -fuzz='^FuzzParseQStashSignature$' -fuzztime=10s ./webhooks
//	go test -run='^$' -fuzz='^FuzzStripeSignatureHeader$' -fuzztime=10s ./webhooks

func FuzzQStashVerify(f *testing.F) {
	for _, s := range []struct{ tok, url, body string }{
		{vecV1, vecURL, vecBody},
		{vecV2, vecURL, vecBody},
		{vecV3, vecURL, vecBody},
		{vecV4, vecURL, ""},
		{vecV5, vecURL, "\x00\xff\x10\x80"},
		{vecV6, vecURL + "?tenant=a&x=1", "hello"},
		{vecV1, vecURL + "/", vecBody},
		{rawJWT(vecCurrent, `{"alg":"none"}`, `{"iss":"Upstash"}`), vecURL, vecBody},
		{b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(`{}`) + ".", vecURL, ""},
		{"", "", ""},
		{"a.b.c", "x", "y"},
		{"..", "", ""},
	} {
		f.Add(s.tok, s.url, []byte(s.body))
	}
	v, err := webhooks.NewQStashVerifier(webhooks.QStashConfig{
		CurrentSigningKey: vecCurrent, NextSigningKey: vecNext,
		Now: func() time.Time { return vecNow },
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, token, url string, body []byte) {
		claims, err := v.Verify(context.Background(), token, url, body)
		if err != nil {
			if webhooks.CheckOf(err) == "" {
				t.Fatalf("error without a check: %v", err)
			}
			return
		}
		// Accepted: an independent verifier must agree on every point.
		parts := strings.Split(token, ".")
		if len(parts) != 3 {
			t.Fatalf("accepted %d segments", len(parts))
		}
		var hdr struct{ Alg string }
		hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
		if json.Unmarshal(hb, &hdr) != nil || hdr.Alg != "HS256" {
			t.Fatalf("accepted header %q", hb)
		}
		sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
		macBy := func(key string) bool {
			m := hmac.New(sha256.New, []byte(key))
			m.Write([]byte(parts[0] + "." + parts[1]))
			return hmac.Equal(m.Sum(nil), sig)
		}
		if !macBy(vecCurrent) && !macBy(vecNext) {
			t.Fatalf("accepted a token not signed with either key: %q", token)
		}
		var c struct {
			Iss, Sub, Body string
			Exp            float64
		}
		pb, _ := base64.RawURLEncoding.DecodeString(parts[1])
		if err := json.Unmarshal(pb, &c); err != nil {
			t.Fatalf("accepted claims %q: %v", pb, err)
		}
		sum := sha256.Sum256(body)
		if c.Iss != "Upstash" || c.Sub != url || claims.Subject != url ||
			strings.TrimRight(c.Body, "=") != base64.RawURLEncoding.EncodeToString(sum[:]) ||
			float64(vecNow.Unix()) >= c.Exp+5 {
			t.Fatalf("accepted claims %s for url %q", pb, url)
		}
	})
}

// countingBody records how many body bytes a verifier read.
type countingBody struct {
	r io.Reader
	n int
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += n
	return n, err
}

func (b *countingBody) Close() error { return nil }

// FuzzQStashVerifyRequest: VerifyRequest, which checks the token before it
// reads the body, decides exactly as Verify over the whole body does; and a
// token refused for anything but its body hash costs no body read.
func FuzzQStashVerifyRequest(f *testing.F) {
	const base, path = "https://example.com", "/api/webhook"
	for _, s := range []struct{ tok, body string }{
		{vecV1, vecBody}, {vecV2, vecBody}, {vecV3, vecBody}, {vecV4, ""}, {vecV5, "\x00\xff\x10\x80"},
		{vecV1, vecBody + "x"}, {"a.b.c", "y"}, {"", ""},
	} {
		f.Add(s.tok, []byte(s.body))
	}
	v, err := webhooks.NewQStashVerifier(webhooks.QStashConfig{
		CurrentSigningKey: vecCurrent, NextSigningKey: vecNext,
		Now: func() time.Time { return vecNow },
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, token string, body []byte) {
		want, wantErr := v.Verify(context.Background(), token, base+path, body)
		r := httptest.NewRequest(http.MethodPost, path, nil)
		cb := &countingBody{r: bytes.NewReader(body)}
		r.Body, r.ContentLength = cb, int64(len(body))
		if token != "" {
			r.Header.Set(webhooks.HeaderUpstashSignature, token)
		}
		got, gotBody, gotErr := v.VerifyRequest(r, base, 1<<20)
		if webhooks.CheckOf(gotErr) != webhooks.CheckOf(wantErr) || got != want {
			t.Fatalf("VerifyRequest: %+v %v; Verify: %+v %v", got, gotErr, want, wantErr)
		}
		if gotErr == nil && !bytes.Equal(gotBody, body) {
			t.Fatalf("body %q, want %q", gotBody, body)
		}
		if gotErr != nil && webhooks.CheckOf(gotErr) != webhooks.CheckBodyHash && cb.n != 0 {
			t.Fatalf("refused (%s) after reading %d body bytes", webhooks.CheckOf(gotErr), cb.n)
		}
	})
}

func FuzzParseQStashSignature(f *testing.F) {
	for _, s := range []string{vecV1, vecV3, "", ".", "..", "a.b.c", vecV1 + "=", " " + vecV1, `{"payload":"x"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := webhooks.ParseQStashSignatureForTest(s)
		if err != nil {
			return
		}
		// One canonical encoding per token: re-encoding gives the input.
		if tok.SigningInput+"."+base64.RawURLEncoding.EncodeToString(tok.Signature) != s {
			t.Fatalf("parsed %q into a different token", s)
		}
		if tok.Alg != "HS256" || len(tok.Signature) != 32 || len(s) > webhooks.MaxQStashSignatureBytes {
			t.Fatalf("accepted %q: %+v", s, tok)
		}
	})
}

func FuzzStripeSignatureHeader(f *testing.F) {
	ev := webhookstest.StripeEvent("evt_fuzz", "charge.succeeded", stripeNow)
	now := stripeNow.Unix()
	ts := strconv.FormatInt(now, 10)
	good := v1(stripeSecret, now, ev)
	for _, h := range []string{
		webhookstest.StripeSignature(stripeSecret, ev, stripeNow),
		webhookstest.StripeSignature(stripeOldSecret, ev, stripeNow),
		"t=" + ts + ",v1=" + good + ",v0=" + good,
		"v1=" + good + ",t=" + ts,
		"t=" + ts + ", v1=" + good,
		"t=" + ts + ",t=" + ts + ",v1=" + good,
		"t=" + ts + "000,v1=" + good,
		"t=,v1=",
		"t=" + ts + ",v1=" + good + ",",
		"",
		"=",
		",,,",
	} {
		f.Add(h, ev)
	}
	f.Add("t="+ts+",v1="+v1(stripeSecret, now, []byte(`{}`)), []byte(`{}`))
	v, err := webhooks.NewStripeVerifier(webhooks.StripeConfig{
		Secrets: []string{stripeSecret, stripeOldSecret},
		Now:     func() time.Time { return stripeNow },
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, header string, payload []byte) {
		h, perr := webhooks.ParseStripeSignatureHeaderForTest(header)
		if perr == nil {
			if len(h.V1) == 0 || len(h.V1) > webhooks.MaxStripeV1Signatures {
				t.Fatalf("parsed %d v1 from %q", len(h.V1), header)
			}
			for _, s := range h.V1 {
				if len(s) != 32 {
					t.Fatalf("parsed a %d-byte v1 from %q", len(s), header)
				}
			}
		}
		ev, err := v.Verify(context.Background(), payload, header)
		if err != nil {
			if webhooks.CheckOf(err) == "" {
				t.Fatalf("error without a check: %v", err)
			}
			return
		}
		if perr != nil {
			t.Fatalf("Verify accepted a header the parser refused: %q", header)
		}
		// Independent check: HMAC-SHA256(secret, "<t>.<payload>") is one of
		// the v1 values, t is within ±300 s, and stripe-go agrees.
		var mine, stripeGo bool
		for _, secret := range []string{stripeSecret, stripeOldSecret} {
			m := hmac.New(sha256.New, []byte(secret))
			m.Write([]byte(strconv.FormatInt(h.Timestamp.Unix(), 10) + "."))
			m.Write(payload)
			want := m.Sum(nil)
			for _, s := range h.V1 {
				mine = mine || hmac.Equal(want, s)
			}
			stripeGo = stripeGo || webhook.ValidatePayloadIgnoringTolerance(payload, header, secret) == nil
		}
		if !mine || !stripeGo {
			t.Fatalf("accepted a payload not signed with a configured secret (independent %v, stripe-go %v): header %q", mine, stripeGo, header)
		}
		if d := h.Timestamp.Unix() - now; d > 300 || d < -300 {
			t.Fatalf("accepted t off by %d s", d)
		}
		if ev.ID == "" || !bytes.Equal(ev.Payload, payload) {
			t.Fatalf("accepted event %+v", ev)
		}
	})
}
