package worker_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/metrictest"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/webhooks/webhookstest"
	"github.com/digis/jobworker/worker"
)

// Test jobs.
type (
	countJob struct {
		ID string `json:"id"`
	}
	failJob struct {
		ID string `json:"id"`
	}
	permanentJob struct{}
	panicJob     struct{}
	laterJob     struct{}
	blockJob     struct {
		ID string `json:"id"`
	}
)

func (countJob) Kind() string     { return "test.count" }
func (failJob) Kind() string      { return "test.fail" }
func (permanentJob) Kind() string { return "test.permanent" }
func (panicJob) Kind() string     { return "test.panic" }
func (laterJob) Kind() string     { return "test.later" }
func (blockJob) Kind() string     { return "test.block" }

// runs counts the effects of the test jobs by id.
type runs struct {
	mu      sync.Mutex
	n       map[string]int
	started chan string
	release chan struct{}
}

func (r *runs) add(id string) {
	r.mu.Lock()
	r.n[id]++
	r.mu.Unlock()
}

func (r *runs) get(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[id]
}

type bundle struct {
	redis *redistest.Server
	rdb   *redis.Client
	reg   *prometheus.Registry
	url   string // the worker's public URL
	h     *worker.Handler
	runs  *runs

	draining atomic.Bool
}

func newRegistry(t *testing.T, r *runs) *jobs.Registry {
	t.Helper()
	reg, err := jobs.NewRegistry(jobs.RegistryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	err = errors.Join(
		jobs.Register(reg, func(_ context.Context, j *jobs.Job[countJob]) error { r.add(j.Args.ID); return nil }),
		jobs.Register(reg, func(_ context.Context, j *jobs.Job[failJob]) error {
			r.add(j.Args.ID)
			return errors.New("transient")
		}),
		jobs.Register(reg, func(context.Context, *jobs.Job[permanentJob]) error {
			return jobs.Permanent(errors.New("never works"))
		}),
		jobs.Register(reg, func(context.Context, *jobs.Job[panicJob]) error { panic("boom") }),
		jobs.Register(reg, func(context.Context, *jobs.Job[laterJob]) error {
			return jobs.RetryAfter(90*time.Second, errors.New("upstream busy"))
		}),
		jobs.Register(reg, func(_ context.Context, j *jobs.Job[blockJob]) error {
			r.started <- j.Args.ID
			<-r.release
			r.add(j.Args.ID)
			return nil
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// setup serves a Handler over real HTTP on a private redis-server. Every
// bundle built with the same srv is another worker process of one
// deployment (its own handler, registry and Redis connections).
func setup(t *testing.T, srv *redistest.Server, tweak ...func(*worker.Config)) *bundle {
	t.Helper()
	if srv == nil {
		srv = redistest.Start(t)
	}
	b := &bundle{redis: srv, reg: prometheus.NewRegistry(),
		runs: &runs{n: map[string]int{}, started: make(chan string, 10), release: make(chan struct{})}}
	b.rdb = redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = b.rdb.Close() })
	mux := http.NewServeMux()
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	t.Cleanup(func() {
		select {
		case <-b.runs.release:
		default:
			close(b.runs.release) // never leave a blocked job behind
		}
	})
	b.url = ts.URL
	cfg := worker.Config{
		Registry: newRegistry(t, b.runs), Redis: b.rdb, PublicURL: b.url,
		CurrentSigningKey: qstashdev.DevCurrentSigningKey, NextSigningKey: qstashdev.DevNextSigningKey,
		RedisTimeout: 200 * time.Millisecond, Draining: b.draining.Load, Registerer: b.reg,
	}
	for _, f := range tweak {
		f(&cfg)
	}
	h, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.h = h
	mux.Handle("/", h)
	return b
}

// delivery is one request as QStash sends it.
type delivery struct {
	job, messageID string
	body           []byte
	retried        int
	signature      string // reuse a captured one; signed fresh when empty
}

type answer struct {
	status int
	header http.Header
	body   string
}

func (b *bundle) sign(t *testing.T, path string, body []byte) string {
	t.Helper()
	sig, err := webhookstest.QStashSignature(qstashdev.DevCurrentSigningKey, b.url+path, body, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func (b *bundle) post(t *testing.T, path string, body []byte, hdr map[string]string) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.url+path, strings.NewReader(string(body)))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	rb, _ := io.ReadAll(res.Body)
	return answer{status: res.StatusCode, header: res.Header, body: string(rb)}
}

func (b *bundle) deliver(t *testing.T, d delivery) answer {
	t.Helper()
	path := jobs.PathPrefix + d.job
	if d.signature == "" {
		d.signature = b.sign(t, path, d.body)
	}
	return b.post(t, path, d.body, map[string]string{
		"Upstash-Signature": d.signature, "Upstash-Message-Id": d.messageID,
		"Upstash-Retried": strconv.Itoa(d.retried), "Content-Type": "application/json",
	})
}

func (b *bundle) deliveries(t *testing.T, job, outcome string) float64 {
	t.Helper()
	v, _ := metrictest.Value(t, b.reg, "jobworker_deliveries_total", map[string]string{"job": job, "outcome": outcome})
	return v
}

func jsonBody(id string) []byte { return []byte(`{"id":"` + id + `"}`) }

func TestAnswers(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	tests := []struct {
		name       string
		given      delivery
		wantStatus int
		wantHeader map[string]string
		wantBody   string
		wantRuns   map[string]int
	}{
		{"done", delivery{job: "test.count", messageID: "m1", body: jsonBody("a")}, 200, nil, `"done"`, map[string]int{"a": 1}},
		{"handler error", delivery{job: "test.fail", messageID: "m2", body: jsonBody("f")}, 500, nil, "retried", map[string]int{"f": 1}},
		{"retry after", delivery{job: "test.later", messageID: "m3", body: []byte(`{}`)}, 500, map[string]string{"Retry-After": "90"}, "retried", nil},
		{"panic", delivery{job: "test.panic", messageID: "m4", body: []byte(`{}`)}, 500, nil, "retried", nil},
		{"permanent", delivery{job: "test.permanent", messageID: "m5", body: []byte(`{}`)}, 489, map[string]string{"Upstash-NonRetryable-Error": "true"}, "permanently", nil},
		{"bad payload", delivery{job: "test.count", messageID: "m6", body: []byte(`[1]`)}, 489, map[string]string{"Upstash-NonRetryable-Error": "true"}, "bad payload", nil},
		{"unknown job", delivery{job: "test.nope", messageID: "m7", body: []byte(`{}`)}, 489, map[string]string{"Upstash-NonRetryable-Error": "true"}, "unknown job", nil},
		{"no message id", delivery{job: "test.count", body: jsonBody("x")}, 489, map[string]string{"Upstash-NonRetryable-Error": "true"}, "", map[string]int{"x": 0}},
		{"oversized message id", delivery{job: "test.count", messageID: strings.Repeat("m", 300), body: jsonBody("y")}, 489, nil, "", map[string]int{"y": 0}},
		{"bad signature", delivery{job: "test.count", messageID: "m8", body: jsonBody("z"), signature: "x.y.z"}, 401, nil, "", map[string]int{"z": 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := b.deliver(t, tt.given)
			if got.status != tt.wantStatus || !strings.Contains(got.body, tt.wantBody) {
				t.Fatalf("answer = %d %s, want %d containing %q", got.status, got.body, tt.wantStatus, tt.wantBody)
			}
			for k, v := range tt.wantHeader {
				if got.header.Get(k) != v {
					t.Fatalf("%s = %q, want %q", k, got.header.Get(k), v)
				}
			}
			for id, n := range tt.wantRuns {
				if b.runs.get(id) != n {
					t.Fatalf("runs[%s] = %d, want %d", id, b.runs.get(id), n)
				}
			}
		})
	}
	if got := b.deliveries(t, "_unknown", "unknown_job"); got != 1 {
		t.Fatalf("unknown job counted under %v, want the _unknown label once", got)
	}
}

func TestRoutingAndTransport(t *testing.T) {
	t.Parallel()
	b := setup(t, nil, func(c *worker.Config) { c.MaxBodyBytes = 64 })
	if got := b.post(t, "/elsewhere", nil, nil); got.status != 404 {
		t.Fatalf("unknown path = %d, want 404", got.status)
	}
	req, _ := http.NewRequest(http.MethodGet, b.url+"/jobs/test.count", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 405 || res.Header.Get("Allow") != "POST" {
		t.Fatalf("GET = %d Allow %q, want 405 POST", res.StatusCode, res.Header.Get("Allow"))
	}
	big := []byte(`{"id":"` + strings.Repeat("x", 100) + `"}`)
	if got := b.deliver(t, delivery{job: "test.count", messageID: "m", body: big}); got.status != 413 {
		t.Fatalf("oversized body = %d, want 413", got.status)
	}
	// A token signed for one job's URL is refused at another's.
	body := jsonBody("a")
	sig := b.sign(t, "/jobs/test.fail", body)
	if got := b.deliver(t, delivery{job: "test.count", messageID: "m", body: body, signature: sig}); got.status != 401 || b.runs.get("a") != 0 {
		t.Fatalf("token for another job = %d (runs %d), want 401 and no run", got.status, b.runs.get("a"))
	}
}

func TestRedeliveriesRunOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	for i := range 3 { // QStash's retries carry fresh tokens
		got := b.deliver(t, delivery{job: "test.count", messageID: "msg_1", body: jsonBody("a"), retried: i})
		want := map[bool]string{true: `"done"`, false: `"duplicate"`}[i == 0]
		if got.status != 200 || !strings.Contains(got.body, want) {
			t.Fatalf("attempt %d = %d %s, want 200 %s", i, got.status, got.body, want)
		}
	}
	if n := b.runs.get("a"); n != 1 {
		t.Fatalf("runs = %d, want 1", n)
	}
	// A failed run frees the message: the retry runs it.
	b.deliver(t, delivery{job: "test.fail", messageID: "msg_2", body: jsonBody("f")})
	b.deliver(t, delivery{job: "test.fail", messageID: "msg_2", body: jsonBody("f"), retried: 1})
	if n := b.runs.get("f"); n != 2 {
		t.Fatalf("failing job runs = %d, want 2 (released after each failure)", n)
	}
}

// The fault of issue #14: a captured delivery replayed within its token's
// lifetime, with a new message id or another genuine message's id.
func TestReplayedTokensRunNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	body := jsonBody("a")
	captured := b.sign(t, "/jobs/test.count", body)
	if got := b.deliver(t, delivery{job: "test.count", messageID: "msg_1", body: body, signature: captured}); got.status != 200 {
		t.Fatalf("genuine delivery = %d", got.status)
	}
	// The same request sent twice is a duplicate, not a replay.
	if got := b.deliver(t, delivery{job: "test.count", messageID: "msg_1", body: body, signature: captured}); got.status != 200 || !strings.Contains(got.body, "duplicate") {
		t.Fatalf("same request again = %d %s, want 200 duplicate", got.status, got.body)
	}
	// Replayed under a new message id, and under another genuine message's
	// id before that message arrives: refused, nothing runs, and the
	// genuine message still runs when it comes.
	for _, id := range []string{"msg_new", "msg_2"} {
		if got := b.deliver(t, delivery{job: "test.count", messageID: id, body: body, signature: captured}); got.status != 401 {
			t.Fatalf("replay as %s = %d, want 401", id, got.status)
		}
	}
	if n := b.runs.get("a"); n != 1 {
		t.Fatalf("runs of the captured body = %d, want 1", n)
	}
	if got := b.deliver(t, delivery{job: "test.count", messageID: "msg_2", body: jsonBody("b")}); got.status != 200 || !strings.Contains(got.body, `"done"`) || b.runs.get("b") != 1 {
		t.Fatalf("genuine msg_2 after the replay = %d %s (runs %d), want done once", got.status, got.body, b.runs.get("b"))
	}
	if got := b.deliveries(t, "test.count", "replayed"); got != 2 {
		t.Fatalf("replayed deliveries counted = %v, want 2", got)
	}
}

// A message id that already ran with another body is never run again with
// this one: the delivery goes to the DLQ for an operator (489).
func TestMessageIDWithAnotherBodyIsDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.deliver(t, delivery{job: "test.count", messageID: "msg_1", body: jsonBody("a")})
	got := b.deliver(t, delivery{job: "test.count", messageID: "msg_1", body: jsonBody("b")})
	if got.status != 489 || got.header.Get("Upstash-NonRetryable-Error") != "true" || b.runs.get("b") != 0 {
		t.Fatalf("other body under a done id = %d (runs %d), want 489 and no run", got.status, b.runs.get("b"))
	}
}

func TestInProgressElsewhere(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, other := setup(t, srv), setup(t, srv)
	done := make(chan answer, 1)
	go func() { done <- a.deliver(t, delivery{job: "test.block", messageID: "msg_1", body: jsonBody("x")}) }()
	<-a.runs.started
	for retried, floor := range map[int]int{0: 13, 2: 1809} {
		got := other.deliver(t, delivery{job: "test.block", messageID: "msg_1", body: jsonBody("x"), retried: retried})
		ra, _ := strconv.Atoi(got.header.Get("Retry-After"))
		// Not before the holder's lease could lapse, nor before
		// QStash's own backoff for that attempt.
		if got.status != 409 || ra < floor {
			t.Fatalf("attempt %d while running elsewhere = %d, Retry-After %d; want 409, at least %d", retried, got.status, ra, floor)
		}
	}
	close(a.runs.release)
	if got := <-done; got.status != 200 || a.runs.get("x") != 1 || other.runs.get("x") != 0 {
		t.Fatalf("holder = %d, runs %d/%d; want one run", got.status, a.runs.get("x"), other.runs.get("x"))
	}
}

// Retry-After on a 503 follows QStash's backoff for the attempt, so an
// outage (or a long deploy) does not spend a message's retries in seconds.
func TestUnavailableAndDrainingBackOff(t *testing.T) {
	t.Parallel()
	want := map[int]string{0: "13", 1: "149", 2: "1809", 3: "22027", 6: "86400"}
	t.Run("draining", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.draining.Store(true)
		for retried, ra := range want {
			got := b.deliver(t, delivery{job: "test.count", messageID: "m", body: jsonBody("a"), retried: retried})
			if got.status != 503 || got.header.Get("Retry-After") != ra {
				t.Fatalf("attempt %d while draining = %d Retry-After %q, want 503 %s", retried, got.status, got.header.Get("Retry-After"), ra)
			}
		}
		if b.runs.get("a") != 0 {
			t.Fatal("a job ran while draining")
		}
	})
	t.Run("redis down", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.redis.Stop()
		for retried, ra := range want {
			got := b.deliver(t, delivery{job: "test.count", messageID: "m", body: jsonBody("a"), retried: retried})
			if got.status != 503 || got.header.Get("Retry-After") != ra {
				t.Fatalf("attempt %d with Redis down = %d Retry-After %q, want 503 %s", retried, got.status, got.header.Get("Retry-After"), ra)
			}
		}
		if b.runs.get("a") != 0 {
			t.Fatal("a job ran without dedupe")
		}
	})
}

// The fault of issue #14: Redis stalls past the worker's deadline (the
// claim waits in its socket) and then resumes. The first retry — here
// through another worker process — runs the job, once.
func TestRedisStallThenFirstRetrySucceeds(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	grace := func(c *worker.Config) { c.RedisTimeout = 100 * time.Millisecond }
	a, other := setup(t, srv, grace), setup(t, srv, grace)
	// Opens a's connection and loads the script, as in a running worker.
	a.deliver(t, delivery{job: "test.count", messageID: "warm", body: jsonBody("warm")})

	srv.Pause()
	got := a.deliver(t, delivery{job: "test.count", messageID: "msg_1", body: jsonBody("a")})
	if got.status != 503 {
		srv.Resume()
		t.Fatalf("delivery while Redis stalls = %d, want 503", got.status)
	}
	// Stalled past the claim's deadline plus its grace (100 ms + 1 s).
	time.Sleep(1500 * time.Millisecond) // the length of the fault, not a wait for a result
	srv.Resume()
	if got := other.deliver(t, delivery{job: "test.count", messageID: "msg_1", body: jsonBody("a"), retried: 1}); got.status != 200 || !strings.Contains(got.body, `"done"`) {
		t.Fatalf("first retry after Redis resumed = %d %s, want 200 done", got.status, got.body)
	}
	if n := a.runs.get("a") + other.runs.get("a"); n != 1 {
		t.Fatalf("runs = %d, want 1", n)
	}
}

func TestFailureCallbacksCountOncePerDLQEntry(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	callback := func(dlqID string) []byte {
		bs, _ := json.Marshal(map[string]any{
			"status": 489, "body": base64.StdEncoding.EncodeToString([]byte(`{"detail":"bad payload"}`)),
			"retried": 0, "maxRetries": 3, "dlqId": dlqID, "sourceMessageId": "msg_1",
			"url": b.url + "/jobs/test.count",
		})
		return bs
	}
	post := func(body []byte, sig string) answer {
		if sig == "" {
			sig = b.sign(t, worker.DefaultFailureCallbackPath, body)
		}
		return b.post(t, worker.DefaultFailureCallbackPath, body, map[string]string{"Upstash-Signature": sig, "Upstash-Message-Id": "cb_1"})
	}
	dead := func() float64 {
		v, _ := metrictest.Value(t, b.reg, "jobworker_dead_jobs_total", map[string]string{"job": "test.count"})
		return v
	}
	first := callback("1725323658779-0")
	sig := b.sign(t, worker.DefaultFailureCallbackPath, first)
	if got := post(first, sig); got.status != 200 || dead() != 1 {
		t.Fatalf("callback = %d, dead %v; want 200 and 1", got.status, dead())
	}
	if got := post(first, ""); got.status != 200 || dead() != 1 { // QStash retrying the callback
		t.Fatalf("repeated callback = %d, dead %v; want 200 and still 1", got.status, dead())
	}
	other := callback("1725323658780-0")
	if got := post(other, sig); got.status != 401 || dead() != 1 { // a replayed token
		t.Fatalf("replayed token = %d, dead %v; want 401 and still 1", got.status, dead())
	}
	if got := post(other, ""); got.status != 200 || dead() != 2 {
		t.Fatalf("second dead job = %d, dead %v; want 200 and 2", got.status, dead())
	}
	if got := post([]byte(`{"nope":1}`), ""); got.status != 489 {
		t.Fatalf("not a callback = %d, want 489", got.status)
	}
	if got := post(first, "bad.token.here"); got.status != 401 {
		t.Fatalf("forged callback = %d, want 401", got.status)
	}
	if got := post([]byte(`{"x":"`+strings.Repeat("a", 2<<20)+`"}`), "bad.token.here"); got.status != 413 || dead() != 2 {
		t.Fatalf("oversized callback = %d, want 413 and nothing counted", got.status)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	t.Parallel()
	reg, _ := jobs.NewRegistry(jobs.RegistryConfig{})
	rdb := redis.NewClient(&redis.Options{})
	good := worker.Config{Registry: reg, Redis: rdb, PublicURL: "https://w.example.com",
		CurrentSigningKey: "sig_a", NextSigningKey: "sig_b"}
	tests := map[string]func(*worker.Config){
		"Registry":            func(c *worker.Config) { c.Registry = nil },
		"Redis":               func(c *worker.Config) { c.Redis = nil },
		"PublicURL":           func(c *worker.Config) { c.PublicURL = "ftp://x?y" },
		"CurrentSigningKey":   func(c *worker.Config) { c.CurrentSigningKey = " " },
		"NextSigningKey":      func(c *worker.Config) { c.NextSigningKey = "sig_b\n" },
		"DedupeTTL":           func(c *worker.Config) { c.DedupeTTL = time.Second },
		"RedisTimeout":        func(c *worker.Config) { c.RedisTimeout = time.Hour },
		"FailureCallbackPath": func(c *worker.Config) { c.FailureCallbackPath = "failed" },
		"MaxBodyBytes":        func(c *worker.Config) { c.MaxBodyBytes = -1 },
	}
	for field, breakIt := range tests {
		t.Run(field, func(t *testing.T) {
			cfg := good
			breakIt(&cfg)
			_, err := worker.New(cfg)
			var ce *worker.ConfigError
			if !errors.As(err, &ce) || ce.Field != field || !errors.Is(err, worker.ErrInvalidConfig) {
				t.Fatalf("New = %v, want a *ConfigError for %s", err, field)
			}
			if strings.Contains(err.Error(), "sig_") {
				t.Fatalf("error echoes a key: %v", err)
			}
		})
	}
	if _, err := worker.New(good); err != nil {
		t.Fatalf("valid config: %v", err)
	}
}

func TestQStashBackoff(t *testing.T) {
	t.Parallel()
	for n, want := range map[int]string{-1: "12.18s", 0: "12.18s", 1: "2m28.41s", 2: "30m8.04s", 3: "6h7m6.47s", 4: "24h0m0s", 40: "24h0m0s"} {
		if got := worker.QStashBackoff(n).Round(10 * time.Millisecond).String(); got != want {
			t.Fatalf("QStashBackoff(%d) = %s, want %s", n, got, want)
		}
	}
}

// TestForgedTokenCostsNoBodyAndNoRedis: a delivery whose token is forged,
// signed with another key, expired or addressed to another URL is refused
// 401 from its headers alone, while the body it declared has not been sent,
// the connection closes, and Redis holds no key afterwards. A token that is
// QStash's but arrives with another body is refused too, also without a
// write.
func TestForgedTokenCostsNoBodyAndNoRedis(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	path := jobs.PathPrefix + "test.count"
	body := []byte(`{"id":"forged"}`)
	sign := func(key, url string, at time.Time) string {
		sig, err := webhookstest.QStashSignature(key, url, body, at)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	for _, tt := range []struct{ name, sig string }{
		{"junk", "junk.junk.junk"},
		{"another key", sign("sig_another_key_entirely", b.url+path, time.Now())},
		{"expired", sign(qstashdev.DevCurrentSigningKey, b.url+path, time.Now().Add(-time.Hour))},
		{"another url", sign(qstashdev.DevCurrentSigningKey, b.url+"/jobs/test.fail", time.Now())},
	} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(b.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() }) // before the server's Close, which waits for it
		_, err = fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nUpstash-Signature: %s\r\nUpstash-Message-Id: msg-1\r\nContent-Length: 100000\r\n\r\n", path, tt.sig)
		if err != nil {
			t.Fatal(err)
		}
		// Only keeps a broken handler from hanging the test: the body never comes.
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: no answer without the body: %v", tt.name, err)
		}
		res.Body.Close()
		conn.Close()
		if res.StatusCode != 401 || !res.Close {
			t.Fatalf("%s: %d, Connection: close %v", tt.name, res.StatusCode, res.Close)
		}
	}
	// QStash's token, another body.
	if a := b.deliver(t, delivery{job: "test.count", messageID: "msg-2", body: []byte(`{"id":"other"}`),
		signature: b.sign(t, path, body)}); a.status != 401 {
		t.Fatalf("tampered body: %d", a.status)
	}
	if n, err := b.rdb.DBSize(context.Background()).Result(); err != nil || n != 0 {
		t.Fatalf("Redis holds %d keys (%v) after refused deliveries", n, err)
	}
	if b.runs.get("forged") != 0 || b.runs.get("other") != 0 {
		t.Fatal("a refused delivery ran")
	}
}
