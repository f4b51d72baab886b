package limits

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

func TestWriteHeadersGolden(t *testing.T) {
	t.Parallel()
	reset := time.Unix(1767225660, 250_000_000)
	for _, tc := range []struct {
		name   string
		given  Result
		expect map[string]string // "" = header absent
	}{
		{"allowed", Result{Bucket: "streams:status", Allowed: true, Limit: 120, Period: time.Minute, Remaining: 117,
			Reset: reset, ResetAfter: 41200 * time.Millisecond}, map[string]string{
			"X-RateLimit-Limit":     "120",
			"X-RateLimit-Remaining": "117",
			"X-RateLimit-Reset":     "1767225661", // epoch seconds, rounded up
			"RateLimit-Policy":      `"streams:status";q=120;w=60`,
			"RateLimit":             `"streams:status";r=117;t=42`, // delta seconds, rounded up
			"Retry-After":           "",
		}},
		{"denied", Result{Bucket: "auth:otp", Limit: 10, Period: time.Minute, Remaining: 0,
			Reset: reset, ResetAfter: 41200 * time.Millisecond, RetryAfter: 41200 * time.Millisecond}, map[string]string{
			"X-RateLimit-Limit":     "10",
			"X-RateLimit-Remaining": "0",
			"X-RateLimit-Reset":     "1767225661",
			"RateLimit-Policy":      `"auth:otp";q=10;w=60`,
			"RateLimit":             `"auth:otp";r=0;t=42`,
			"Retry-After":           "42", // integer delay-seconds, never below t
		}},
		{"sub-second wait still says 1", Result{Bucket: "default", Limit: 5, Period: 90 * time.Second,
			Reset: time.Unix(1767225660, 0), ResetAfter: 10 * time.Millisecond, RetryAfter: 10 * time.Millisecond}, map[string]string{
			"X-RateLimit-Reset": "1767225660",
			"RateLimit-Policy":  `"default";q=5;w=90`,
			"RateLimit":         `"default";r=0;t=1`,
			"Retry-After":       "1",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			WriteHeaders(h, tc.given)
			for k, v := range tc.expect {
				if got := h.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

// serve runs one request through e from remote with headers.
func serve(e *echo.Echo, remote string, headers map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/tips/quick", nil)
	req.RemoteAddr = remote
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

func newEcho(t *testing.T, cfg MiddlewareConfig) *echo.Echo {
	t.Helper()
	mw, err := cfg.ToMiddleware()
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	e.Logger.SetOutput(io.Discard)
	e.POST("/tips/quick", func(c echo.Context) error { return c.String(http.StatusOK, "ok") }, mw)
	e.POST("/fails", func(c echo.Context) error { return echo.NewHTTPError(http.StatusBadRequest, "bad") }, mw)
	return e
}

func direct(t *testing.T) *IPExtractor {
	x, err := ParseIPSource("direct", "")
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// The headers are the same with leases: one instance reports exactly.
func TestMiddlewareStrictTenthPassesEleventhIs429(t *testing.T) {
	t.Parallel()
	for _, lease := range []int{0, 4} {
		t.Run("lease="+strconv.Itoa(lease), func(t *testing.T) {
			t.Parallel()
			strictTenthPassesEleventhIs429(t, lease)
		})
	}
}

func strictTenthPassesEleventhIs429(t *testing.T, lease int) {
	b := setup(t, func(c *Config) {
		if lease > 0 {
			c.Leases = map[string]int{TierStrict: lease}
		}
	})
	mw, err := Middleware(b.l, "tips:quick", direct(t))
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	e.POST("/tips/quick", func(c echo.Context) error { return c.String(http.StatusOK, "ok") }, mw)

	start := time.Now().Unix()
	for i := 1; i <= 10; i++ {
		rec := serve(e, "203.0.113.7:5000", nil)
		if rec.Code != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, rec.Code, rec.Body)
		}
		want := map[string]string{
			"X-RateLimit-Limit":     "10",
			"X-RateLimit-Remaining": strconv.Itoa(10 - i),
			"RateLimit-Policy":      `"tips:quick";q=10;w=60`,
			"Retry-After":           "",
		}
		for k, v := range want {
			if got := rec.Header().Get(k); got != v {
				t.Fatalf("request %d: %s = %q, want %q", i, k, got, v)
			}
		}
	}
	if n := b.calls.scripts.Load(); lease > 0 && n >= 10 {
		t.Fatalf("%d Redis decisions for 10 requests with leases", n)
	}
	rec := serve(e, "203.0.113.7:5000", nil)
	end := time.Now().Unix()
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("11th: %d", rec.Code)
	}
	h := rec.Header()
	retry, err := strconv.Atoi(h.Get("Retry-After"))
	if err != nil || retry < 59 || retry > 60 {
		t.Fatalf("Retry-After = %q: want integer seconds of the 60 s window", h.Get("Retry-After"))
	}
	want := map[string]string{
		"X-RateLimit-Limit":     "10",
		"X-RateLimit-Remaining": "0",
		"RateLimit-Policy":      `"tips:quick";q=10;w=60`,
		"RateLimit":             `"tips:quick";r=0;t=` + strconv.Itoa(retry),
		"Content-Type":          "application/problem+json",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("11th: %s = %q, want %q", k, got, v)
		}
	}
	reset, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64)
	if err != nil || reset < start+59 || reset > end+61 {
		t.Errorf("X-RateLimit-Reset = %q: want epoch seconds in [%d, %d]", h.Get("X-RateLimit-Reset"), start+59, end+61)
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if body["status"] != float64(429) || body["type"] != ProblemQuotaExceeded || body["title"] != "Too Many Requests" {
		t.Errorf("problem body %s", rec.Body)
	}
	if vp, _ := body["violated-policies"].([]any); len(vp) != 1 || vp[0] != "tips:quick" {
		t.Errorf("violated-policies in %s", rec.Body)
	}
}

func TestMiddlewarePassesAgainAfterWindow(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.Overrides = map[string]Quota{"auth:otp": {Limit: 1, Period: time.Second}} })
	e := newEcho(t, MiddlewareConfig{Limiter: b.l, Bucket: "auth:otp", IPExtractor: direct(t)})
	if rec := serve(e, "203.0.113.7:1", nil); rec.Code != http.StatusOK {
		t.Fatalf("first: %d", rec.Code)
	}
	rec := serve(e, "203.0.113.7:1", nil)
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("second: %d Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	endWindow(t, b, "auth:otp", IPIdentity(netip.MustParseAddr("203.0.113.7")), time.Second) // the Retry-After the client was given
	if rec := serve(e, "203.0.113.7:1", nil); rec.Code != http.StatusOK {
		t.Fatalf("after the window: %d", rec.Code)
	}
}

func TestMiddlewareSpoofedHeadersDoNotChangeIdentity(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, mode, trusted, remote string
		header                      func(i int) map[string]string
	}{
		{"direct, rotating XFF", "direct", "", "203.0.113.7:1", func(i int) map[string]string {
			return map[string]string{"X-Forwarded-For": "198.18.0." + strconv.Itoa(i), "X-Real-Ip": "198.19.0." + strconv.Itoa(i)}
		}},
		{"xff, untrusted peer rotating XFF", "xff", "10.0.0.0/8", "203.0.113.7:1", func(i int) map[string]string {
			return map[string]string{"X-Forwarded-For": "198.18.0." + strconv.Itoa(i)}
		}},
		{"xff, trusted proxy, client rotating the left part", "xff", "10.0.0.0/8", "10.0.0.1:1", func(i int) map[string]string {
			return map[string]string{"X-Forwarded-For": "198.18.0." + strconv.Itoa(i) + ", 203.0.113.7"}
		}},
		{"cloudflare, direct caller forging CF-Connecting-IP", "cloudflare", "173.245.48.0/20", "203.0.113.7:1", func(i int) map[string]string {
			return map[string]string{"CF-Connecting-IP": "198.18.0." + strconv.Itoa(i)}
		}},
		{"x-real-ip, untrusted peer forging", "x-real-ip", "10.0.0.1", "203.0.113.7:1", func(i int) map[string]string {
			return map[string]string{"X-Real-IP": "198.18.0." + strconv.Itoa(i)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, nil)
			x, err := ParseIPSource(tc.mode, tc.trusted)
			if err != nil {
				t.Fatal(err)
			}
			e := newEcho(t, MiddlewareConfig{Limiter: b.l, Bucket: "auth:login", IPExtractor: x})
			for i := 1; i <= 11; i++ {
				rec := serve(e, tc.remote, tc.header(i))
				if want := map[bool]int{true: 200, false: 429}[i <= 10]; rec.Code != want {
					t.Fatalf("request %d: %d, want %d (spoofed header changed the identity)", i, rec.Code, want)
				}
			}
			if keys := allKeys(t, b.rdb); len(keys) != 1 {
				t.Fatalf("%d counters for one client: %v", len(keys), keys)
			}
		})
	}
}

func TestMiddlewareUserIDIsTheIdentity(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.Overrides = map[string]Quota{"messages:send": {Limit: 2, Period: time.Minute}} })
	e := newEcho(t, MiddlewareConfig{Limiter: b.l, Bucket: "messages:send", IPExtractor: direct(t),
		UserID: func(c echo.Context) string { return c.Request().Header.Get("X-Test-User") }})
	for _, tc := range []struct {
		user   string
		expect int
	}{
		{"alice", 200}, {"alice", 200}, {"alice", 429},
		{"bob", 200}, {"bob", 200}, {"bob", 429}, // same IP, own bucket
		{"", 200}, {"", 200}, {"", 429}, // anonymous: the IP
	} {
		if rec := serve(e, "203.0.113.7:1", map[string]string{"X-Test-User": tc.user}); rec.Code != tc.expect {
			t.Fatalf("user %q: %d, want %d", tc.user, rec.Code, tc.expect)
		}
	}
}

// TestMiddlewareHeadersGoldenEveryMode drives a real limiter into each way
// a decision can be reached and checks the whole answer: status, every
// rate-limit header and the problem type. A refusal never reports quota
// remaining; local decisions report what this instance knows (the fake
// clock stands at 1767225600, so their Reset is exact); 503s carry the
// Retry-After of a temporary condition. Redis decisions carry the server's
// clock, so their X-RateLimit-Reset is checked against a range.
func TestMiddlewareHeadersGoldenEveryMode(t *testing.T) {
	t.Parallel()
	const ip = "203.0.113.7:1"
	nth := func(n int) func(t *testing.T, b *testBundle, e *echo.Echo) *httptest.ResponseRecorder {
		return func(t *testing.T, b *testBundle, e *echo.Echo) *httptest.ResponseRecorder {
			var rec *httptest.ResponseRecorder
			for range n {
				rec = serve(e, ip, nil)
			}
			return rec
		}
	}
	stopped := func(n int) func(t *testing.T, b *testBundle, e *echo.Echo) *httptest.ResponseRecorder {
		return func(t *testing.T, b *testBundle, e *echo.Echo) *httptest.ResponseRecorder {
			b.srv.Stop()
			return nth(n)(t, b, e)
		}
	}
	for _, tc := range []struct {
		name    string
		mutate  func(*Config)
		drive   func(t *testing.T, b *testBundle, e *echo.Echo) *httptest.ResponseRecorder
		code    int
		problem string            // problem type; "" = no problem body
		expect  map[string]string // "" = absent; X-RateLimit-Reset absent from the map = a Redis-clock range check
	}{
		{"allowed", nil, nth(1), http.StatusOK, "", map[string]string{
			"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "9", "RateLimit-Policy": `"tips:quick";q=10;w=60`,
			"RateLimit": `"tips:quick";r=9;t=60`, "Retry-After": "",
		}},
		{"denied", func(c *Config) { c.LocalCacheSize = -1 }, nth(11), http.StatusTooManyRequests, ProblemQuotaExceeded, map[string]string{
			"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0", "RateLimit-Policy": `"tips:quick";q=10;w=60`,
			"RateLimit": `"tips:quick";r=0;t=60`, "Retry-After": "60",
		}},
		{"allowed-locally", func(c *Config) { c.Leases = map[string]int{TierStrict: 4} }, nth(3), http.StatusOK, "", map[string]string{
			"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "7", "RateLimit": `"tips:quick";r=7;t=60`, "Retry-After": "",
		}},
		{"blocked-locally", nil, nth(12), http.StatusTooManyRequests, ProblemQuotaExceeded, map[string]string{
			"X-RateLimit-Remaining": "0", "RateLimit": `"tips:quick";r=0;t=60`, "Retry-After": "60",
		}},
		{"degraded-local, allowed", func(c *Config) { c.Failure = map[string]FailureMode{TierStrict: FailureLocal} }, stopped(1), http.StatusOK, "", map[string]string{
			"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "9", "X-RateLimit-Reset": "1767225660",
			"RateLimit-Policy": `"tips:quick";q=10;w=60`, "RateLimit": `"tips:quick";r=9;t=60`, "Retry-After": "",
		}},
		{"degraded-local, refused", func(c *Config) {
			c.Failure = map[string]FailureMode{TierStrict: FailureLocal}
			c.Overrides = map[string]Quota{"tips:quick": PerMinute(2)}
		}, stopped(3), http.StatusTooManyRequests, ProblemQuotaExceeded, map[string]string{
			"X-RateLimit-Limit": "2", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1767225660",
			"RateLimit-Policy": `"tips:quick";q=2;w=60`, "RateLimit": `"tips:quick";r=0;t=60`, "Retry-After": "60",
		}},
		{"degraded-closed (strict by default)", nil, stopped(1), http.StatusServiceUnavailable, ProblemReducedCapacity, map[string]string{
			"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1767225601",
			"RateLimit-Policy": `"tips:quick";q=10;w=60`, "RateLimit": `"tips:quick";r=0;t=1`, "Retry-After": "1",
		}},
		{"degraded-open (explicit)", func(c *Config) { c.Failure = map[string]FailureMode{"tips:quick": FailureOpen} }, stopped(11), http.StatusOK, "", map[string]string{
			"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1767225660", "RateLimit": `"tips:quick";r=0;t=60`, "Retry-After": "",
		}},
		{"overloaded", func(c *Config) { c.MaxInFlight, c.MaxQueue = 1, 1 }, overload, http.StatusServiceUnavailable, ProblemReducedCapacity, map[string]string{
			"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1767225601",
			"RateLimit": `"tips:quick";r=0;t=1`, "Retry-After": "1",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tc.mutate)
			e := newEcho(t, MiddlewareConfig{Limiter: b.l, Bucket: "tips:quick", IPExtractor: direct(t)})
			before := time.Now().Unix()
			rec := tc.drive(t, b, e)
			after := time.Now().Unix()
			if rec.Code != tc.code {
				t.Fatalf("code %d, want %d (%s)", rec.Code, tc.code, rec.Body)
			}
			h := rec.Header()
			for k, v := range tc.expect {
				if got := h.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if _, exact := tc.expect["X-RateLimit-Reset"]; !exact {
				reset, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64)
				if err != nil || reset < before+59 || reset > after+61 {
					t.Errorf("X-RateLimit-Reset = %q: want Redis time + 60 s, in [%d, %d]", h.Get("X-RateLimit-Reset"), before+59, after+61)
				}
			}
			var body map[string]any
			_ = json.Unmarshal(rec.Body.Bytes(), &body)
			if tc.problem != "" && (body["type"] != tc.problem || h.Get("Content-Type") != "application/problem+json") {
				t.Errorf("problem %v, want type %s", body, tc.problem)
			}
		})
	}
}

// overload holds the only round trip in a gated client, so that of ten
// concurrent requests one queues (MaxQueue 1) and nine are shed; it returns
// one of the nine.
func overload(t *testing.T, b *testBundle, e *echo.Echo) *httptest.ResponseRecorder {
	t.Helper()
	// Load the script first: the held round trip is then one EVALSHA.
	if err := window.Load(context.Background(), b.rdb).Err(); err != nil {
		t.Fatal(err)
	}
	b.gate.hold.Store(true)
	first := make(chan *httptest.ResponseRecorder, 1)
	go func() { first <- serve(e, "198.51.100.1:1", nil) }()
	<-b.gate.entered
	const n = 10
	recs := make(chan *httptest.ResponseRecorder, n)
	for i := range n {
		go func() { recs <- serve(e, "198.51.100."+strconv.Itoa(10+i)+":1", nil) }()
	}
	var shed *httptest.ResponseRecorder
	for range n - 1 {
		if rec := <-recs; rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("a request answered %d while the queue was full", rec.Code)
		} else {
			shed = rec
		}
	}
	close(b.gate.release)
	if rec := <-first; rec.Code != http.StatusOK {
		t.Fatalf("the request holding the slot: %d", rec.Code)
	}
	if rec := <-recs; rec.Code != http.StatusOK {
		t.Fatalf("the queued request: %d", rec.Code)
	}
	if got := b.metric(t, "jobworker_ratelimit_decisions_total", map[string]string{"bucket": "tips:quick", "reason": "overloaded"}); got != n-1 {
		t.Fatalf("overloaded decisions metric = %v, want %d", got, n-1)
	}
	if keys := allKeys(t, b.rdb); len(keys) != 2 {
		t.Fatalf("%d counters in Redis, want 2: a shed request reached Redis", len(keys))
	}
	return shed
}

func TestMiddlewareHeadersOnEveryResponse(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	e := newEcho(t, MiddlewareConfig{Limiter: b.l, IPExtractor: direct(t),
		Skipper: func(c echo.Context) bool { return c.Request().Header.Get("X-Skip") != "" }})
	req := httptest.NewRequest(http.MethodPost, "/fails", nil)
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest || rec.Header().Get("RateLimit") != `"default";r=59;t=60` {
		t.Fatalf("handler error response: %d %v", rec.Code, rec.Header())
	}
	if rec := serve(e, "203.0.113.7:1", map[string]string{"X-Skip": "1"}); rec.Header().Get("RateLimit") != "" {
		t.Fatal("skipped request was limited")
	}
}

func TestMiddlewareErrors(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	var got error
	e := newEcho(t, MiddlewareConfig{Limiter: b.l, IPExtractor: direct(t),
		BucketFunc: BucketByRoute(map[string]string{"/fails": "no-such-bucket"}),
		ErrorHandler: func(c echo.Context, err error) error {
			got = err
			return c.NoContent(http.StatusTeapot)
		}})
	if rec := serve(e, "not-an-address", nil); rec.Code != http.StatusTeapot || !errors.Is(got, ErrNoClientIP) {
		t.Fatalf("bad peer: %d %v", rec.Code, got)
	}
	req := httptest.NewRequest(http.MethodPost, "/fails", nil)
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	if rec.Code != http.StatusTeapot || !errors.Is(got, ErrUnknownBucket) {
		t.Fatalf("unknown bucket: %d %v", rec.Code, got)
	}
	// The default error handler answers problem+json without internals.
	e2 := newEcho(t, MiddlewareConfig{Limiter: b.l, IPExtractor: direct(t)})
	if rec := serve(e2, "not-an-address", nil); rec.Code != http.StatusInternalServerError || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("default error handler: %d %v", rec.Code, rec.Header())
	}
}

func TestMiddlewareConfigValidation(t *testing.T) {
	t.Parallel()
	l, err := New(Config{Client: &countingClient{}, HashKey: testHashKey})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		cfg   MiddlewareConfig
		field string
	}{
		{"no limiter", MiddlewareConfig{IPExtractor: direct(t)}, "Limiter"},
		{"no identity source", MiddlewareConfig{Limiter: l}, "IPExtractor"},
		{"unknown bucket", MiddlewareConfig{Limiter: l, Bucket: "nope", IPExtractor: direct(t)}, "Bucket"},
	} {
		var ce *ConfigError
		if _, err := tc.cfg.ToMiddleware(); !errors.Is(err, ErrInvalidConfig) || !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if _, err := Middleware(l, "", direct(t)); err != nil {
		t.Errorf("shortcut with default bucket: %v", err)
	}
}
