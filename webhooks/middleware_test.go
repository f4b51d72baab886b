package webhooks_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/digis/jobworker/webhooks"
	"github.com/digis/jobworker/webhooks/webhookstest"
)

// echoHandler answers 200 with the body it can (re-)read and the verified
// facts the middleware left in the context.
func echoHandler(c echo.Context) error {
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return err
	}
	if claims, ok := webhooks.QStashClaimsFrom(c); ok {
		c.Response().Header().Set("X-Key", claims.Key)
	}
	if ev, ok := webhooks.StripeEventFrom(c); ok {
		c.Response().Header().Set("X-Event", ev.ID)
	}
	return c.Blob(http.StatusOK, "application/octet-stream", body)
}

func serve(e *echo.Echo, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

func TestVerifyQStashMiddleware(t *testing.T) {
	t.Parallel()
	const public = "https://worker.example.com"
	now := time.Now()
	tok := func(url string, body []byte) string {
		s, err := webhookstest.QStashSignature(vecCurrent, url, body, now)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	body := []byte(`{"job":"tips.settle","id":42}`)
	big := bytes.Repeat([]byte("a"), int(webhooks.DefaultMaxBodyBytes))

	type when struct {
		target  string
		body    []byte
		headers map[string][]string
		chunked bool
	}
	tests := []struct {
		name       string
		givenCfg   func(c *webhooks.VerifyQStashConfig)
		when       when
		expectCode int
		expectKey  string
	}{
		{name: "valid", when: when{target: "/jobs/tips.settle", body: body, headers: map[string][]string{"Upstash-Signature": {tok(public+"/jobs/tips.settle", body)}}}, expectCode: 200, expectKey: "current"},
		{name: "valid with query", when: when{target: "/jobs/x?tenant=a&x=1", body: body, headers: map[string][]string{"Upstash-Signature": {tok(public+"/jobs/x?tenant=a&x=1", body)}}}, expectCode: 200, expectKey: "current"},
		{name: "valid with escaped path", when: when{target: "/jobs/a%2Fb", body: body, headers: map[string][]string{"Upstash-Signature": {tok(public+"/jobs/a%2Fb", body)}}}, expectCode: 200, expectKey: "current"},
		{name: "valid, empty body", when: when{target: "/jobs/x", body: nil, headers: map[string][]string{"Upstash-Signature": {tok(public+"/jobs/x", nil)}}}, expectCode: 200, expectKey: "current"},
		{name: "valid, body exactly at the cap", when: when{target: "/jobs/x", body: big, headers: map[string][]string{"Upstash-Signature": {tok(public+"/jobs/x", big)}}}, expectCode: 200, expectKey: "current"},
		{name: "public URL with a base path (proxy strips it)", givenCfg: func(c *webhooks.VerifyQStashConfig) { c.PublicURL = "https://example.com/worker/" },
			when: when{target: "/jobs/x", body: body, headers: map[string][]string{"Upstash-Signature": {tok("https://example.com/worker/jobs/x", body)}}}, expectCode: 200, expectKey: "current"},
		{name: "ExpectedURL override", givenCfg: func(c *webhooks.VerifyQStashConfig) {
			c.ExpectedURL = func(echo.Context) string { return "https://elsewhere.example/hook" }
		}, when: when{target: "/jobs/x", body: body, headers: map[string][]string{"Upstash-Signature": {tok("https://elsewhere.example/hook", body)}}}, expectCode: 200, expectKey: "current"},
		{name: "skipped", givenCfg: func(c *webhooks.VerifyQStashConfig) { c.Skipper = func(echo.Context) bool { return true } },
			when: when{target: "/jobs/x", body: body}, expectCode: 200},

		{name: "missing header", when: when{target: "/jobs/x", body: body}, expectCode: 401},
		{name: "empty header", when: when{target: "/jobs/x", body: body, headers: map[string][]string{"Upstash-Signature": {""}}}, expectCode: 401},
		{name: "two headers", when: when{target: "/jobs/x", body: body, headers: map[string][]string{"Upstash-Signature": {tok(public+"/jobs/x", body), tok(public+"/jobs/x", body)}}}, expectCode: 401},
		{name: "other path", when: when{target: "/jobs/y", body: body, headers: map[string][]string{"Upstash-Signature": {tok(public+"/jobs/x", body)}}}, expectCode: 401},
		{name: "trailing slash", when: when{target: "/jobs/x/", body: body, headers: map[string][]string{"Upstash-Signature": {tok(public+"/jobs/x", body)}}}, expectCode: 401},
		{name: "query dropped", when: when{target: "/jobs/x", body: body, headers: map[string][]string{"Upstash-Signature": {tok(public+"/jobs/x?a=1", body)}}}, expectCode: 401},
		{name: "Host and X-Forwarded-* are not trusted", when: when{target: "/jobs/x", body: body, headers: map[string][]string{
			"Upstash-Signature": {tok("https://evil.example/jobs/x", body)}, "Host": {"evil.example"}, "X-Forwarded-Host": {"evil.example"}, "X-Forwarded-Proto": {"https"}}}, expectCode: 401},
		{name: "tampered body", when: when{target: "/jobs/x", body: []byte(`{"job":"tips.settle","id":43}`), headers: map[string][]string{"Upstash-Signature": {tok(public+"/jobs/x", body)}}}, expectCode: 401},
		{name: "signed with another key", when: when{target: "/jobs/x", body: body, headers: map[string][]string{"Upstash-Signature": {func() string {
			s, _ := webhookstest.QStashSignature("sig_notOurs000000000000000000000", public+"/jobs/x", body, now)
			return s
		}()}}}, expectCode: 401},
		{name: "body one byte over the cap (Content-Length)", when: when{target: "/jobs/x", body: append(big, 'a'), headers: map[string][]string{"Upstash-Signature": {tok(public+"/jobs/x", nil)}}}, expectCode: 413},
		{name: "body over the cap, chunked", when: when{target: "/jobs/x", body: append(big, 'a'), chunked: true, headers: map[string][]string{"Upstash-Signature": {tok(public+"/jobs/x", nil)}}}, expectCode: 413},
		{name: "smaller cap", givenCfg: func(c *webhooks.VerifyQStashConfig) { c.MaxBodyBytes = 10 },
			when: when{target: "/jobs/x", body: body, headers: map[string][]string{"Upstash-Signature": {tok(public+"/jobs/x", body)}}}, expectCode: 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupQStash(t, now)
			cfg := webhooks.DefaultVerifyQStashConfig
			cfg.Verifier = b.v
			cfg.PublicURL = public
			if tt.givenCfg != nil {
				tt.givenCfg(&cfg)
			}
			mw, err := cfg.ToMiddleware()
			if err != nil {
				t.Fatal(err)
			}
			e := echo.New()
			e.POST("/*", echoHandler, mw)

			var rdr io.Reader = bytes.NewReader(tt.when.body)
			if tt.when.chunked {
				rdr = io.MultiReader(rdr) // hides the length: ContentLength -1
			}
			req := httptest.NewRequest(http.MethodPost, tt.when.target, rdr)
			if tt.when.chunked {
				req.ContentLength = -1
			}
			for k, vs := range tt.when.headers {
				if k == "Host" {
					req.Host = vs[0]
					continue
				}
				for _, v := range vs {
					req.Header.Add(k, v)
				}
			}
			rec := serve(e, req)
			if rec.Code != tt.expectCode {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.expectCode, rec.Body)
			}
			if tt.expectCode == 200 {
				if !bytes.Equal(rec.Body.Bytes(), tt.when.body) {
					t.Errorf("handler read %d bytes, want the %d raw bytes", rec.Body.Len(), len(tt.when.body))
				}
				if got := rec.Header().Get("X-Key"); got != tt.expectKey {
					t.Errorf("claims key = %q, want %q", got, tt.expectKey)
				}
				return
			}
			if ct := rec.Header().Get(echo.HeaderContentType); ct != "application/problem+json" {
				t.Errorf("content type %q", ct)
			}
			if strings.Contains(rec.Body.String(), "detail") || strings.Contains(rec.Body.String(), "check") {
				t.Errorf("answer carries detail: %s", rec.Body)
			}
		})
	}
}

func TestVerifyQStashConfigErrors(t *testing.T) {
	t.Parallel()
	b := setupQStash(t, vecNow)
	tests := []struct {
		name  string
		given webhooks.VerifyQStashConfig
	}{
		{"no verifier", webhooks.VerifyQStashConfig{PublicURL: "https://w.example.com"}},
		{"no public URL", webhooks.VerifyQStashConfig{Verifier: b.v}},
		{"relative public URL", webhooks.VerifyQStashConfig{Verifier: b.v, PublicURL: "worker.example.com"}},
		{"public URL with query", webhooks.VerifyQStashConfig{Verifier: b.v, PublicURL: "https://w.example.com/?a=1"}},
		{"public URL with fragment", webhooks.VerifyQStashConfig{Verifier: b.v, PublicURL: "https://w.example.com/#x"}},
		{"public URL ftp", webhooks.VerifyQStashConfig{Verifier: b.v, PublicURL: "ftp://w.example.com"}},
		{"public URL with user info", webhooks.VerifyQStashConfig{Verifier: b.v, PublicURL: "https://u:p@w.example.com"}},
		{"negative cap", webhooks.VerifyQStashConfig{Verifier: b.v, PublicURL: "https://w.example.com", MaxBodyBytes: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if mw, err := tt.given.ToMiddleware(); err == nil || mw != nil {
				t.Fatalf("ToMiddleware = %v, %v; want an error", mw, err)
			}
		})
	}
	if _, err := webhooks.VerifyQStash(b.v, "https://w.example.com"); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyStripeMiddleware(t *testing.T) {
	t.Parallel()
	ev := webhookstest.StripeEvent("evt_mw", "charge.refunded", stripeNow)
	sig := webhookstest.StripeSignature(stripeSecret, ev, stripeNow)
	// A valid event padded to exactly the cap.
	pad := int(webhooks.DefaultMaxBodyBytes) - len(`{"id":"evt_mw","type":"x","pad":""}`)
	atCap := []byte(`{"id":"evt_mw","type":"x","pad":"` + strings.Repeat("p", pad) + `"}`)
	overCap := append(append([]byte{}, atCap[:len(atCap)-2]...), 'p', '"', '}')
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(ev)
	_ = zw.Close()

	type when struct {
		body    []byte
		headers map[string][]string
	}
	tests := []struct {
		name        string
		when        when
		expectCode  int
		expectEvent string
	}{
		{name: "valid", when: when{body: ev, headers: map[string][]string{"Stripe-Signature": {sig}}}, expectCode: 200, expectEvent: "evt_mw"},
		{name: "valid, previous secret", when: when{body: ev, headers: map[string][]string{"Stripe-Signature": {webhookstest.StripeSignature(stripeOldSecret, ev, stripeNow)}}}, expectCode: 200, expectEvent: "evt_mw"},
		{name: "valid, body exactly at the cap", when: when{body: atCap, headers: map[string][]string{"Stripe-Signature": {webhookstest.StripeSignature(stripeSecret, atCap, stripeNow)}}}, expectCode: 200, expectEvent: "evt_mw"},
		{name: "body over the cap", when: when{body: overCap, headers: map[string][]string{"Stripe-Signature": {webhookstest.StripeSignature(stripeSecret, overCap, stripeNow)}}}, expectCode: 413},
		{name: "missing header", when: when{body: ev}, expectCode: 400},
		{name: "two headers", when: when{body: ev, headers: map[string][]string{"Stripe-Signature": {sig, sig}}}, expectCode: 400},
		{name: "future timestamp", when: when{body: ev, headers: map[string][]string{"Stripe-Signature": {webhookstest.StripeSignature(stripeSecret, ev, stripeNow.Add(time.Hour))}}}, expectCode: 400},
		{name: "too old", when: when{body: ev, headers: map[string][]string{"Stripe-Signature": {webhookstest.StripeSignature(stripeSecret, ev, stripeNow.Add(-time.Hour))}}}, expectCode: 400},
		{name: "tampered body", when: when{body: append(append([]byte{}, ev...), '\n'), headers: map[string][]string{"Stripe-Signature": {sig}}}, expectCode: 400},
		{name: "gzip body signed uncompressed", when: when{body: gz.Bytes(), headers: map[string][]string{"Stripe-Signature": {sig}, "Content-Encoding": {"gzip"}}}, expectCode: 400},
		{name: "no event id", when: when{body: []byte(`{"type":"x"}`), headers: map[string][]string{"Stripe-Signature": {webhookstest.StripeSignature(stripeSecret, []byte(`{"type":"x"}`), stripeNow)}}}, expectCode: 400},
		{name: "only v0", when: when{body: ev, headers: map[string][]string{"Stripe-Signature": {strings.Replace(sig, "v1=", "v0=", 1)}}}, expectCode: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupStripe(t)
			mw, err := webhooks.VerifyStripe(b.v)
			if err != nil {
				t.Fatal(err)
			}
			e := echo.New()
			e.POST("/webhooks/stripe", echoHandler, mw)
			req := httptest.NewRequest(http.MethodPost, "/webhooks/stripe", bytes.NewReader(tt.when.body))
			for k, vs := range tt.when.headers {
				for _, v := range vs {
					req.Header.Add(k, v)
				}
			}
			rec := serve(e, req)
			if rec.Code != tt.expectCode {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.expectCode, rec.Body)
			}
			if tt.expectCode == 200 {
				if !bytes.Equal(rec.Body.Bytes(), tt.when.body) || rec.Header().Get("X-Event") != tt.expectEvent {
					t.Errorf("handler saw event %q and %d bytes", rec.Header().Get("X-Event"), rec.Body.Len())
				}
				return
			}
			if ct := rec.Header().Get(echo.HeaderContentType); ct != "application/problem+json" {
				t.Errorf("content type %q", ct)
			}
			if strings.Contains(rec.Body.String(), "detail") {
				t.Errorf("answer carries detail: %s", rec.Body)
			}
		})
	}
	if mw, err := (webhooks.VerifyStripeConfig{}).ToMiddleware(); err == nil || mw != nil {
		t.Error("nil verifier accepted")
	}
}

func TestParseSecrets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		given   string
		expect  []string
		wantErr bool
	}{
		{given: "whsec_a", expect: []string{"whsec_a"}},
		{given: "whsec_a, whsec_b\n", expect: []string{"whsec_a", "whsec_b"}},
		{given: "", wantErr: true},
		{given: "  ", wantErr: true},
		{given: "whsec_a,", wantErr: true},
		{given: "whsec_a,,whsec_b", wantErr: true},
	}
	for _, tt := range tests {
		got, err := webhooks.ParseSecrets(tt.given)
		if (err != nil) != tt.wantErr || strings.Join(got, "|") != strings.Join(tt.expect, "|") {
			t.Errorf("ParseSecrets(%q) = %q, %v", tt.given, got, err)
		}
		if err != nil && strings.Contains(err.Error(), "whsec") {
			t.Errorf("error echoes the value: %v", err)
		}
	}
}

func TestParsePublicURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		given   string
		expect  string
		wantErr bool
	}{
		{given: "https://w.example.com", expect: "https://w.example.com"},
		{given: "https://w.example.com/", expect: "https://w.example.com"},
		{given: "http://localhost:8081/base/", expect: "http://localhost:8081/base"},
		{given: "", wantErr: true},
		{given: " https://w.example.com", wantErr: true},
		{given: "w.example.com", wantErr: true},
		{given: "https://", wantErr: true},
		{given: "https://w.example.com?", wantErr: true},
		{given: "https://u:secret@w.example.com", wantErr: true},
		{given: "https://w.example.com/%zz", wantErr: true},
	}
	for _, tt := range tests {
		got, err := webhooks.ParsePublicURL(tt.given)
		if (err != nil) != tt.wantErr || got != tt.expect {
			t.Errorf("ParsePublicURL(%q) = %q, %v", tt.given, got, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error echoes user info: %v", err)
		}
	}
}
