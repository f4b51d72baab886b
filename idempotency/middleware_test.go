package idempotency_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/metrictest"
	"github.com/digis/jobworker/internal/testwait"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/idempotency"
	"github.com/digis/jobworker/internal/redistest"
)

// mwBundle is one API under test: a private Redis, the middleware on
// POST /tips/quick and POST /other, served over real HTTP.
type mwBundle struct {
	srv   *redistest.Server
	rdb   *redis.Client
	store *idempotency.Store
	reg   *prometheus.Registry
	ts    *httptest.Server
	e     *echo.Echo
	calls atomic.Int64
}

type mwOptions struct {
	store idempotency.StoreConfig
	mw    func(*idempotency.MiddlewareConfig)
}

// testPrincipal stands in for the API's auth middleware.
func testPrincipal(c echo.Context) string { return c.Request().Header.Get("X-User") }

func setupMW(t *testing.T, h echo.HandlerFunc, opts mwOptions) *mwBundle {
	t.Helper()
	b := &mwBundle{reg: prometheus.NewRegistry()}
	b.srv = redistest.Start(t)
	b.rdb = client(t, b.srv)
	if opts.store.Namespace == "" {
		opts.store.Namespace = "http"
	}
	var err error
	if b.store, err = idempotency.NewStore(b.rdb, opts.store); err != nil {
		t.Fatal(err)
	}
	cfg := idempotency.DefaultMiddlewareConfig
	cfg.Store, cfg.Principal, cfg.Registerer = b.store, testPrincipal, b.reg
	if opts.mw != nil {
		opts.mw(&cfg)
	}
	mw, err := cfg.ToMiddleware()
	if err != nil {
		t.Fatal(err)
	}
	b.e = echo.New()
	counted := func(c echo.Context) error { b.calls.Add(1); return h(c) }
	b.e.POST("/tips/quick", counted, mw)
	b.e.POST("/other", counted, mw)
	b.e.GET("/tips/quick", counted, mw)
	b.ts = httptest.NewServer(b.e)
	t.Cleanup(b.ts.Close)
	return b
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) replayed() bool { return r.header.Get(idempotency.HeaderReplayed) == "true" }

type req struct {
	method, path, user, body string
	keys                     []string // Idempotency-Key header values
}

func (b *mwBundle) do(t *testing.T, r req) reply {
	t.Helper()
	rep, err := b.try(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func (b *mwBundle) try(ctx context.Context, r req) (reply, error) {
	return doHTTP(ctx, b.ts.URL, r)
}

func doHTTP(ctx context.Context, base string, r req) (reply, error) {
	if r.method == "" {
		r.method = http.MethodPost
	}
	if r.path == "" {
		r.path = "/tips/quick"
	}
	if r.user == "" {
		r.user = "user_1"
	}
	hr, err := http.NewRequestWithContext(ctx, r.method, base+r.path, strings.NewReader(r.body))
	if err != nil {
		return reply{}, err
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("X-User", r.user)
	for _, k := range r.keys {
		hr.Header.Add(idempotency.HeaderIdempotencyKey, k)
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: body}, err
}

func key(k string) []string { return []string{k} }

// gate holds handlers until opened. Register t.Cleanup(g.open) after
// setupMW so a failing test never leaves a handler (and the server's Close)
// blocked.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

func newGate() *gate    { return &gate{ch: make(chan struct{})} }
func (g *gate) open()   { g.once.Do(func() { close(g.ch) }) }
func (g *gate) wait()   { <-g.ch }
func (g *gate) signal() { g.open() }

func counter(t *testing.T, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	v, _ := metrictest.Value(t, reg, "jobworker_idempotency_requests_total", map[string]string{"outcome": outcome})
	return v
}

func expectProblem(t *testing.T, r reply, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json", ct)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control = %q, want no-store", cc)
	}
}

func tipHandler(c echo.Context) error {
	body, _ := io.ReadAll(c.Request().Body)
	c.Response().Header().Set("Location", "/tips/tip_1")
	c.Response().Header().Set("X-Request-Local", "not replayed")
	c.SetCookie(&http.Cookie{Name: "session", Value: "secret"})
	return c.JSON(http.StatusCreated, map[string]string{"tip": "tip_1", "echo": string(body), "at": time.Now().Format(time.RFC3339Nano)})
}

// The headline behaviour, and useplunk/plunk #484: a retry after success
// learns the outcome (a byte-identical replay), never a 409.
func TestMiddlewareRetryAfterSuccessReplaysByteIdentical(t *testing.T) {
	t.Parallel()
	b := setupMW(t, tipHandler, mwOptions{})
	r := req{keys: key("8e03978e-40d5-43e8-bc93-6894a57f9324"), body: `{"amount":500}`}
	first := b.do(t, r)
	if first.status != http.StatusCreated || first.replayed() || first.header.Get("Set-Cookie") == "" {
		t.Fatalf("first = %d replayed=%v cookie=%q", first.status, first.replayed(), first.header.Get("Set-Cookie"))
	}
	for i := 0; i < 3; i++ {
		again := b.do(t, r)
		switch {
		case again.status != first.status:
			t.Fatalf("replay status %d, want %d", again.status, first.status)
		case !bytes.Equal(again.body, first.body):
			t.Fatalf("replay body %q, want %q", again.body, first.body)
		case again.header.Get("Content-Type") != first.header.Get("Content-Type"):
			t.Fatalf("replay Content-Type %q", again.header.Get("Content-Type"))
		case again.header.Get("Location") != "/tips/tip_1":
			t.Fatalf("replay Location %q", again.header.Get("Location"))
		case !again.replayed():
			t.Fatal("replay lacks Idempotent-Replayed: true")
		case again.header.Get("Set-Cookie") != "":
			t.Fatal("Set-Cookie replayed")
		case again.header.Get("X-Request-Local") != "":
			t.Fatal("a header outside ReplayHeaders was replayed")
		}
	}
	if n := b.calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1", n)
	}
	if counter(t, b.reg, "first") != 1 || counter(t, b.reg, "replayed") != 3 {
		t.Fatalf("metrics first=%v replayed=%v", counter(t, b.reg, "first"), counter(t, b.reg, "replayed"))
	}
	// The record holds no cookie either.
	keys := b.rdb.Keys(context.Background(), "idem:http:*").Val()
	if len(keys) != 1 {
		t.Fatalf("keys = %v", keys)
	}
	if v := b.rdb.HGet(context.Background(), keys[0], "v").Val(); strings.Contains(v, "secret") || strings.Contains(v, "8e03978e") {
		t.Fatalf("stored record leaks the cookie or the raw key: %s", v)
	}
}

// LabsCrypt #1624 and accept-io/midas #14: 50 concurrent identical
// requests run the handler once; the rest get 409 + Retry-After, never 500.
func TestMiddlewareConcurrentIdenticalRequestsRunOnce(t *testing.T) {
	t.Parallel()
	release := newGate()
	b := setupMW(t, func(c echo.Context) error {
		release.wait()
		return c.String(http.StatusOK, "charged once")
	}, mwOptions{})
	t.Cleanup(release.open)
	r := req{keys: key("k-concurrent"), body: `{"amount":1}`}
	const n = 50
	replies := make(chan reply, n)
	for i := 0; i < n; i++ {
		go func() {
			rep, err := b.try(context.Background(), r)
			if err != nil {
				t.Error(err)
			}
			replies <- rep
		}()
	}
	var got []reply
	for len(got) < n-1 { // everyone but the holder is answered while it runs
		got = append(got, <-replies)
	}
	release.open()
	got = append(got, <-replies)
	statuses := map[int]int{}
	for _, rep := range got {
		statuses[rep.status]++
		if rep.status == http.StatusConflict {
			expectProblem(t, rep, http.StatusConflict)
			if rep.header.Get("Retry-After") != "1" {
				t.Fatalf("409 Retry-After = %q", rep.header.Get("Retry-After"))
			}
		}
	}
	if statuses[http.StatusOK] != 1 || statuses[http.StatusConflict] != n-1 {
		t.Fatalf("statuses = %v, want one 200 and %d 409", statuses, n-1)
	}
	// Late duplicates, concurrently: all replays.
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if rep, err := b.try(context.Background(), r); err != nil || rep.status != 200 || !rep.replayed() {
				t.Errorf("late duplicate: %d replayed=%v %v", rep.status, rep.replayed(), err)
			}
		}()
	}
	wg.Wait()
	if c := b.calls.Load(); c != 1 {
		t.Fatalf("handler ran %d times", c)
	}
	if counter(t, b.reg, "conflict") != n-1 {
		t.Fatalf("conflict metric = %v", counter(t, b.reg, "conflict"))
	}
}

func TestMiddlewareFingerprintMismatch(t *testing.T) {
	t.Parallel()
	b := setupMW(t, func(c echo.Context) error { return c.String(http.StatusOK, "ok") }, mwOptions{})
	first := req{keys: key("k1"), body: `{"amount":500}`}
	if rep := b.do(t, first); rep.status != 200 {
		t.Fatal(rep.status)
	}
	tests := []struct {
		name string
		when req
	}{
		{"different body", req{keys: key("k1"), body: `{"amount":501}`}},
		{"same JSON, other formatting (raw-byte fingerprint)", req{keys: key("k1"), body: `{ "amount": 500 }`}},
		{"same route, other query", req{keys: key("k1"), path: "/tips/quick?currency=eur", body: `{"amount":500}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expectProblem(t, b.do(t, tt.when), http.StatusUnprocessableEntity)
		})
	}
	if rep := b.do(t, first); rep.status != 200 || !rep.replayed() {
		t.Fatalf("original request no longer replays: %d", rep.status)
	}
	if b.calls.Load() != 1 || counter(t, b.reg, "mismatch") != 3 {
		t.Fatalf("calls=%d mismatch=%v", b.calls.Load(), counter(t, b.reg, "mismatch"))
	}
}

func TestMiddlewareMismatchWhileInProgress(t *testing.T) {
	t.Parallel()
	started, release := newGate(), newGate()
	b := setupMW(t, func(c echo.Context) error {
		started.signal()
		release.wait()
		return c.NoContent(http.StatusOK)
	}, mwOptions{})
	t.Cleanup(release.open)
	done := make(chan reply)
	go func() { rep, _ := b.try(context.Background(), req{keys: key("k"), body: "a"}); done <- rep }()
	started.wait()
	expectProblem(t, b.do(t, req{keys: key("k"), body: "b"}), http.StatusUnprocessableEntity)
	expectProblem(t, b.do(t, req{keys: key("k"), body: "a"}), http.StatusConflict)
	release.open()
	if rep := <-done; rep.status != http.StatusOK {
		t.Fatal(rep.status)
	}
}

// A panic is an ambiguous outcome: recorded, and every retry gets the same
// answer without the handler running again.
func TestMiddlewarePanicIsRecordedAndNeverRerun(t *testing.T) {
	t.Parallel()
	b := setupMW(t, func(c echo.Context) error {
		c.Response().Header().Set("X-Partial", "1")
		_ = c.String(http.StatusOK, "half-written") // the charge went through, then...
		panic("boom")
	}, mwOptions{})
	r := req{keys: key("k-panic"), body: "{}"}
	first := b.do(t, r)
	if first.status != http.StatusInternalServerError || first.header.Get("Content-Type") != "application/problem+json" ||
		!bytes.Contains(first.body, []byte("outcome of the original request is unknown")) || first.header.Get("X-Partial") != "" {
		t.Fatalf("first = %d %q %s", first.status, first.header, first.body)
	}
	for i := 0; i < 3; i++ {
		again := b.do(t, r)
		if again.status != first.status || !bytes.Equal(again.body, first.body) || !again.replayed() {
			t.Fatalf("retry %d = %d %s", i, again.status, again.body)
		}
	}
	if b.calls.Load() != 1 || counter(t, b.reg, "ambiguous") != 1 {
		t.Fatalf("calls=%d ambiguous=%v", b.calls.Load(), counter(t, b.reg, "ambiguous"))
	}
}

// Every row of decide, through Echo's real error handler: errors
// returned as Go errors are rendered inside the middleware and recorded with
// their body, not lost.
func TestMiddlewarePolicyTable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		handler    echo.HandlerFunc
		wantStatus int
		wantBody   string
		wantStored bool // false: released, the retry runs the handler again
	}{
		{"2xx stored", func(c echo.Context) error { return c.String(201, "created") }, 201, "created", true},
		{"nil without writing stored as 200", func(c echo.Context) error { return nil }, 200, "", true},
		{"validation error (returned) released", func(c echo.Context) error { return echo.NewHTTPError(400, "bad amount") }, 400, `{"message":"bad amount"}`, false},
		{"422 written released", func(c echo.Context) error { return c.String(422, "unprocessable") }, 422, "unprocessable", false},
		{"401 released", func(c echo.Context) error { return echo.ErrUnauthorized }, 401, `{"message":"Unauthorized"}`, false},
		{"429 released", func(c echo.Context) error { return c.NoContent(429) }, 429, "", false},
		{"402 card declined stored", func(c echo.Context) error { return echo.NewHTTPError(402, "card declined") }, 402, `{"message":"card declined"}`, true},
		{"409 business conflict stored", func(c echo.Context) error { return echo.NewHTTPError(409, "already tipped") }, 409, `{"message":"already tipped"}`, true},
		{"plain Go error: 500 body recorded", func(c echo.Context) error { return errors.New("db exploded") }, 500, `{"message":"Internal Server Error"}`, true},
		{"timeout after work began stored", func(c echo.Context) error { return context.DeadlineExceeded }, 500, `{"message":"Internal Server Error"}`, true},
		{"503 written stored as ambiguous", func(c echo.Context) error { return c.String(503, "upstream down") }, 503, "upstream down", true},
		{"NoSideEffect(HTTPError) released, rendered as usual", func(c echo.Context) error {
			return idempotency.NoSideEffect(echo.NewHTTPError(503, "database unavailable"))
		}, 503, `{"message":"database unavailable"}`, false},
		{"NoSideEffect(plain error) released", func(c echo.Context) error {
			return idempotency.NoSideEffect(errors.New("tx refused"))
		}, 500, `{"message":"Internal Server Error"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupMW(t, tt.handler, mwOptions{})
			r := req{keys: key("k"), body: "{}"}
			first := b.do(t, r)
			if first.status != tt.wantStatus || strings.TrimSpace(string(first.body)) != tt.wantBody {
				t.Fatalf("first = %d %q, want %d %q", first.status, first.body, tt.wantStatus, tt.wantBody)
			}
			second := b.do(t, r)
			if second.status != first.status || !bytes.Equal(second.body, first.body) {
				t.Fatalf("second = %d %q, want the same answer", second.status, second.body)
			}
			wantCalls := map[bool]int64{true: 1, false: 2}[tt.wantStored]
			if second.replayed() != tt.wantStored || b.calls.Load() != wantCalls {
				t.Fatalf("replayed=%v calls=%d; want stored=%v", second.replayed(), b.calls.Load(), tt.wantStored)
			}
		})
	}
}

// Truxify #5846: a handler slower than the lease keeps it (renewal), so a
// duplicate arriving after several lease periods gets 409, not a second run.
func TestMiddlewareSlowHandlerKeepsLease(t *testing.T) {
	t.Parallel()
	// Short enough to keep the test quick, long enough that a loaded
	// 2-core CI box cannot stall renewal (every 200 ms) for a whole lease.
	const lease = 600 * time.Millisecond
	started, release := newGate(), newGate()
	b := setupMW(t, func(c echo.Context) error {
		started.signal()
		release.wait()
		return c.String(http.StatusOK, "slow but once")
	}, mwOptions{store: idempotency.StoreConfig{LeaseTTL: lease, Timeout: 300 * time.Millisecond}})
	t.Cleanup(release.open)
	r := req{keys: key("k-slow"), body: "{}"}
	done := make(chan reply)
	go func() { rep, _ := b.try(context.Background(), r); done <- rep }()
	started.wait()
	<-time.After(3 * lease) // the thing under test is the passage of time
	expectProblem(t, b.do(t, r), http.StatusConflict)
	release.open()
	if rep := <-done; rep.status != 200 {
		t.Fatal(rep.status)
	}
	if rep := b.do(t, r); !rep.replayed() || string(rep.body) != "slow but once" {
		t.Fatalf("after = %d %s", rep.status, rep.body)
	}
	if b.calls.Load() != 1 {
		t.Fatalf("handler ran %d times", b.calls.Load())
	}
}

// paySphere #1919: Redis down means 503 + Retry-After, nothing runs; when it
// returns, a completed key still replays (no duplicate) and a new key runs once.
func TestMiddlewareRedisDownFailsClosed(t *testing.T) {
	t.Parallel()
	b := setupMW(t, func(c echo.Context) error { return c.String(http.StatusOK, "charged") }, mwOptions{})
	done := req{keys: key("k-before"), body: "{}"}
	if rep := b.do(t, done); rep.status != 200 {
		t.Fatal(rep.status)
	}
	b.srv.Stop()
	fresh := req{keys: key("k-during"), body: "{}"}
	for _, r := range []req{done, fresh} {
		rep := b.do(t, r)
		expectProblem(t, rep, http.StatusServiceUnavailable)
		if rep.header.Get("Retry-After") != "2" {
			t.Fatalf("Retry-After = %q", rep.header.Get("Retry-After"))
		}
	}
	if b.calls.Load() != 1 || counter(t, b.reg, "unavailable") != 2 {
		t.Fatalf("calls=%d unavailable=%v", b.calls.Load(), counter(t, b.reg, "unavailable"))
	}
	b.srv.Restart()
	waitRedis(t, b.rdb)
	if rep := b.do(t, done); rep.status != 200 || !rep.replayed() {
		t.Fatalf("completed key after restart: %d replayed=%v", rep.status, rep.replayed())
	}
	if rep := b.do(t, fresh); rep.status != 200 || rep.replayed() {
		t.Fatalf("new key after restart: %d", rep.status)
	}
	if rep := b.do(t, fresh); !rep.replayed() {
		t.Fatal("new key not stored")
	}
	if b.calls.Load() != 2 {
		t.Fatalf("handler ran %d times, want 2", b.calls.Load())
	}
}

// A hung Redis (SIGSTOP) answers 503 within the store timeout, not after the
// client gave up.
func TestMiddlewareRedisHungFailsFast(t *testing.T) {
	t.Parallel()
	b := setupMW(t, func(c echo.Context) error { return c.NoContent(200) },
		mwOptions{store: idempotency.StoreConfig{Timeout: 200 * time.Millisecond}})
	b.srv.Pause()
	t.Cleanup(b.srv.Resume)
	start := time.Now()
	expectProblem(t, b.do(t, req{keys: key("k"), body: "{}"}), http.StatusServiceUnavailable)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("503 took %s", took)
	}
	if b.calls.Load() != 0 {
		t.Fatal("handler ran without a lease")
	}
}

func waitRedis(t *testing.T, rdb *redis.Client) {
	t.Helper()
	testwait.For(t, 5*time.Second, "redis back", func() bool { return rdb.Ping(context.Background()).Err() == nil })
}

// Keys are scoped: another principal (or route) with the same key runs its
// own request and never sees someone else's response.
func TestMiddlewareScopesKeysByPrincipalAndRoute(t *testing.T) {
	t.Parallel()
	b := setupMW(t, func(c echo.Context) error {
		return c.String(http.StatusOK, "for "+c.Request().Header.Get("X-User")+" on "+c.Path())
	}, mwOptions{})
	shared := key("same-key")
	tests := []struct {
		when req
		want string
	}{
		{req{user: "alice", keys: shared, body: "{}"}, "for alice on /tips/quick"},
		{req{user: "bob", keys: shared, body: "{}"}, "for bob on /tips/quick"},
		{req{user: "alice", keys: shared, body: "{}", path: "/other"}, "for alice on /other"},
	}
	for _, tt := range tests {
		if rep := b.do(t, tt.when); rep.status != 200 || string(rep.body) != tt.want || rep.replayed() {
			t.Fatalf("%+v: %d %q replayed=%v", tt.when, rep.status, rep.body, rep.replayed())
		}
	}
	for _, tt := range tests { // and each replays its own
		if rep := b.do(t, tt.when); string(rep.body) != tt.want || !rep.replayed() {
			t.Fatalf("replay %+v: %q", tt.when, rep.body)
		}
	}
	if b.calls.Load() != 3 {
		t.Fatalf("calls = %d", b.calls.Load())
	}
}

func TestMiddlewareRefusesAnonymous(t *testing.T) {
	t.Parallel()
	b := setupMW(t, func(c echo.Context) error { return c.NoContent(200) },
		mwOptions{mw: func(c *idempotency.MiddlewareConfig) {
			c.Principal = func(echo.Context) string { return "" }
		}})
	expectProblem(t, b.do(t, req{keys: key("k"), body: "{}"}), http.StatusUnauthorized)
	if b.calls.Load() != 0 {
		t.Fatal("anonymous request ran")
	}
}

// Idempotency-Key header rules, in process: some of these values cannot even
// be sent by Go's HTTP client.
func TestMiddlewareKeyHeaderRules(t *testing.T) {
	t.Parallel()
	b := setupMW(t, func(c echo.Context) error { return c.String(200, "ok") }, mwOptions{})
	tests := []struct {
		name   string
		given  []string
		expect int
	}{
		{"missing", nil, 400},
		{"empty", []string{""}, 400},
		{"whitespace only", []string{"   "}, 400},
		{"two headers", []string{"a", "b"}, 400},
		{"folded list", []string{"a, b"}, 400},
		{"256 chars", []string{strings.Repeat("k", 256)}, 400},
		{"255 chars", []string{strings.Repeat("k", 255)}, 200},
		{"control char", []string{"ab\x01cd"}, 400},
		{"CR LF", []string{"ab\r\nX-Evil: 1"}, 400},
		{"non-ASCII", []string{"clé"}, 400},
		{"bare quote inside", []string{`ab"cd`}, 400},
		{"quoted unterminated", []string{`"abc`}, 400},
		{"quoted with parameters", []string{`"abc";p=1`}, 400},
		{"quoted empty", []string{`""`}, 400},
		{"quoted bad escape", []string{`"a\nb"`}, 400},
		{"uuid", []string{"8e03978e-40d5-43e8-bc93-6894a57f9324"}, 200},
		{"quoted sf-string", []string{`"8e03978e-40d5-43e8-bc93-6894a57f9325"`}, 200},
		{"quoted with escapes", []string{`"a\"b\\c"`}, 200},
		{"layout characters", []string{"idem:*:{x} y"}, 200},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hr := httptest.NewRequest(http.MethodPost, "/tips/quick", strings.NewReader(`{"n":`+string(rune('0'+i%10))+`}`))
			hr.Header.Set("X-User", "user_"+tt.name)
			for _, v := range tt.given {
				hr.Header.Add(idempotency.HeaderIdempotencyKey, v)
			}
			rec := httptest.NewRecorder()
			b.e.ServeHTTP(rec, hr)
			if rec.Code != tt.expect {
				t.Fatalf("status = %d, want %d: %s", rec.Code, tt.expect, rec.Body)
			}
			if tt.expect == 400 && rec.Header().Get("Content-Type") != "application/problem+json" {
				t.Fatalf("Content-Type = %q", rec.Header().Get("Content-Type"))
			}
		})
	}
}

func TestMiddlewareQuotedAndBareFormsAreOneKey(t *testing.T) {
	t.Parallel()
	b := setupMW(t, func(c echo.Context) error { return c.String(200, "ok") }, mwOptions{})
	if rep := b.do(t, req{keys: key("abc-123"), body: "{}"}); rep.replayed() {
		t.Fatal("first replayed")
	}
	if rep := b.do(t, req{keys: key(`"abc-123"`), body: "{}"}); !rep.replayed() {
		t.Fatal("quoted form is a different key")
	}
}

func TestMiddlewareSizeCaps(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 2048)
	b := setupMW(t, func(c echo.Context) error { return c.String(200, big) },
		mwOptions{mw: func(c *idempotency.MiddlewareConfig) { c.MaxBodyBytes, c.MaxResponseBytes = 1024, 1000 }})
	expectProblem(t, b.do(t, req{keys: key("k"), body: strings.Repeat("a", 1025)}), http.StatusRequestEntityTooLarge)
	if b.calls.Load() != 0 {
		t.Fatal("handler ran for an oversized body")
	}
	// The 413 claimed nothing: the key still works, and the big response
	// reaches the client in full, while its replay says it was not kept.
	first := b.do(t, req{keys: key("k"), body: strings.Repeat("a", 1024)})
	if first.status != 200 || string(first.body) != big {
		t.Fatalf("first = %d, %d bytes", first.status, len(first.body))
	}
	again := b.do(t, req{keys: key("k"), body: strings.Repeat("a", 1024)})
	if again.status != 200 || !again.replayed() || !bytes.Contains(again.body, []byte("was not kept")) {
		t.Fatalf("replay = %d %s", again.status, again.body)
	}
	if b.calls.Load() != 1 {
		t.Fatalf("calls = %d", b.calls.Load())
	}
}

// A client that disconnects mid-request does not stop the record: the retry
// replays what the handler did.
func TestMiddlewareClientDisconnectStillRecords(t *testing.T) {
	t.Parallel()
	started, release := newGate(), newGate()
	b := setupMW(t, func(c echo.Context) error {
		started.signal()
		release.wait()
		return c.String(http.StatusOK, "done anyway")
	}, mwOptions{})
	t.Cleanup(release.open)
	r := req{keys: key("k"), body: "{}"}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() { _, err := b.try(ctx, r); errc <- err }()
	started.wait()
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("request not cancelled")
	}
	release.open()
	// Until the detached handler records its answer, retries see 409.
	testwait.For(t, 5*time.Second, "the abandoned request's answer replayed", func() bool {
		rep := b.do(t, r)
		if !rep.replayed() && rep.status != http.StatusConflict {
			t.Fatalf("retry = %d %s", rep.status, rep.body)
		}
		if rep.replayed() && string(rep.body) != "done anyway" {
			t.Fatalf("replay %q", rep.body)
		}
		return rep.replayed()
	})
	if b.calls.Load() != 1 {
		t.Fatalf("calls = %d", b.calls.Load())
	}
}

func TestMiddlewareDownstreamKeyIsStable(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var seen []string
	b := setupMW(t, func(c echo.Context) error {
		k, ok := idempotency.DownstreamKey(c.Request().Context())
		if !ok {
			return errors.New("no downstream key")
		}
		mu.Lock()
		seen = append(seen, k)
		mu.Unlock()
		return idempotency.NoSideEffect(echo.NewHTTPError(503, "retry")) // released: runs again
	}, mwOptions{})
	b.do(t, req{user: "alice", keys: key("k"), body: "{}"})
	b.do(t, req{user: "alice", keys: key("k"), body: "{}"})
	b.do(t, req{user: "bob", keys: key("k"), body: "{}"})
	if len(seen) != 3 || seen[0] != seen[1] || seen[0] == seen[2] || !strings.HasPrefix(seen[0], "idem_") || strings.Contains(seen[0], "k") && len(seen[0]) < 10 {
		t.Fatalf("downstream keys %v", seen)
	}
}

func TestMiddlewareSkipsSafeMethods(t *testing.T) {
	t.Parallel()
	b := setupMW(t, func(c echo.Context) error { return c.String(200, "read") }, mwOptions{})
	if rep := b.do(t, req{method: http.MethodGet}); rep.status != 200 {
		t.Fatalf("GET without key = %d", rep.status)
	}
}

func TestMiddlewareConfigValidate(t *testing.T) {
	t.Parallel()
	store, err := idempotency.NewStore(redis.NewClient(&redis.Options{}), idempotency.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ok := idempotency.MiddlewareConfig{Store: store, Principal: testPrincipal}
	tests := []struct {
		name    string
		mutate  func(*idempotency.MiddlewareConfig)
		wantErr bool
	}{
		{"minimal", func(*idempotency.MiddlewareConfig) {}, false},
		{"no store", func(c *idempotency.MiddlewareConfig) { c.Store = nil }, true},
		{"no principal", func(c *idempotency.MiddlewareConfig) { c.Principal = nil }, true},
		{"set-cookie replayed", func(c *idempotency.MiddlewareConfig) { c.ReplayHeaders = []string{"set-cookie"} }, true},
		{"negative body cap", func(c *idempotency.MiddlewareConfig) { c.MaxBodyBytes = -1 }, true},
		{"huge key length", func(c *idempotency.MiddlewareConfig) { c.MaxKeyLength = 5000 }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := ok
			tt.mutate(&cfg)
			if _, err := cfg.ToMiddleware(); (err != nil) != tt.wantErr {
				t.Fatalf("ToMiddleware() = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
	if _, err := idempotency.Middleware(store, nil); err == nil {
		t.Fatal("Middleware without principal succeeded")
	}
}

// A streamed response reaches the client as it is written; it cannot be
// replayed, so the replay says so with the original status.
func TestMiddlewareStreamedResponseNotReplayed(t *testing.T) {
	t.Parallel()
	b := setupMW(t, func(c echo.Context) error {
		c.Response().WriteHeader(http.StatusAccepted)
		_, _ = c.Response().Write([]byte("part1 "))
		c.Response().Flush()
		_, _ = c.Response().Write([]byte("part2"))
		return nil
	}, mwOptions{})
	r := req{keys: key("k"), body: "{}"}
	if rep := b.do(t, r); rep.status != http.StatusAccepted || string(rep.body) != "part1 part2" {
		t.Fatalf("first = %d %q", rep.status, rep.body)
	}
	if rep := b.do(t, r); rep.status != http.StatusAccepted || !rep.replayed() || !bytes.Contains(rep.body, []byte("was not kept")) {
		t.Fatalf("replay = %d %q", rep.status, rep.body)
	}
	if b.calls.Load() != 1 {
		t.Fatalf("calls = %d", b.calls.Load())
	}
}
