package workerapp_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/metrictest"
	"github.com/digis/jobworker/internal/testwait"

	"github.com/redis/go-redis/v9"
	qstash "github.com/upstash/qstash-go"

	"github.com/digis/jobworker/internal/env"
	"github.com/digis/jobworker/internal/process"
	"github.com/digis/jobworker/internal/proctest"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/internal/workerapp"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
	"github.com/digis/jobworker/webhooks/webhookstest"
)

// Test jobs. Their effects are recorded in an effects table (in-process
// tests) or in Redis (multi-process tests).

type countJob struct {
	ID string `json:"id"`
}

func (countJob) Kind() string { return "test.count" }

type flakyJob struct {
	ID    string `json:"id"`
	Fails int    `json:"fails"`
}

func (flakyJob) Kind() string { return "test.flaky" }

type permanentJob struct{}

func (permanentJob) Kind() string { return "test.permanent" }

type blockJob struct {
	ID string `json:"id"`
}

func (blockJob) Kind() string { return "test.block" }

// effects counts successful runs and attempts per job id.
type effects struct {
	mu       sync.Mutex
	runs     map[string]int
	attempts map[string]int
	changed  chan struct{}
	started  chan string   // test.block: announced when a run begins
	release  chan struct{} // test.block: closed to let runs finish
}

func newEffects() *effects {
	return &effects{
		runs: map[string]int{}, attempts: map[string]int{},
		changed: make(chan struct{}, 1000), started: make(chan string, 100), release: make(chan struct{}),
	}
}

func (e *effects) get(id string) (runs, attempts int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.runs[id], e.attempts[id]
}

func (e *effects) record(id string, ok bool) {
	e.mu.Lock()
	e.attempts[id]++
	if ok {
		e.runs[id]++
	}
	e.mu.Unlock()
	select {
	case e.changed <- struct{}{}:
	default:
	}
}

// waitFor polls cond on every recorded effect, failing after within.
func (e *effects) waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(within)
	for !cond() {
		select {
		case <-e.changed:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// waitStarted waits for a test.block run to begin.
func (e *effects) waitStarted(t *testing.T) {
	t.Helper()
	select {
	case <-e.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the blocking job never started")
	}
}

func (e *effects) register(reg *jobs.Registry, _ *process.Process) error {
	return errors.Join(
		jobs.Register(reg, func(_ context.Context, j *jobs.Job[countJob]) error {
			e.record(j.Args.ID, true)
			return nil
		}),
		jobs.Register(reg, func(_ context.Context, j *jobs.Job[flakyJob]) error {
			_, attempts := e.get(j.Args.ID)
			if attempts < j.Args.Fails {
				e.record(j.Args.ID, false)
				return errors.New("flaky failure")
			}
			e.record(j.Args.ID, true)
			return nil
		}),
		jobs.Register(reg, func(context.Context, *jobs.Job[permanentJob]) error {
			e.record("permanent", false)
			return jobs.Permanent(errors.New("cannot ever work"))
		}),
		jobs.Register(reg, func(_ context.Context, j *jobs.Job[blockJob]) error {
			e.started <- j.Args.ID
			<-e.release
			e.record(j.Args.ID, true)
			return nil
		}),
	)
}

type bundle struct {
	// qstashURL, when set before setupWith, maps qstashdev's URL to the
	// QSTASH_URL the worker publishes to.
	qstashURL func(string) string
	// timeScale, when set before setupWith, is qstashdev's TimeScale
	// (default 0.001: QStash's waits are 1000× shorter).
	timeScale float64
	// store, when set before setupWith, is the worker's Deps.Store.
	store store.Store

	redis   *redistest.Server
	qstash  *qstashdevtest.Server
	url     string // the worker's public URL
	client  *jobs.Client
	effects *effects
}

// setup runs the worker in-process with the production wiring, a private
// redis-server and a qstashdev whose retries are 1000× faster, with the
// test jobs registered.
func setup(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{effects: newEffects()}
	return setupWith(t, b, b.effects.register, nil)
}

// setupWith is setup with the caller's job registration and extra
// environment; b.qstashURL, when set, is where the worker publishes (e.g.
// a proxy in front of qstashdev).
func setupWith(t *testing.T, b *bundle, register func(*jobs.Registry, *process.Process) error, env map[string]string) *bundle {
	t.Helper()
	if b.effects == nil {
		b.effects = newEffects()
	}
	b.redis = redistest.Start(t)
	if b.timeScale == 0 {
		b.timeScale = 0.001
	}
	b.qstash = qstashdevtest.Start(t, qstashdev.Config{TimeScale: b.timeScale})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.url = "http://" + ln.Addr().String()
	vars := map[string]string{
		"REDIS_URL": b.redis.URL(), "REDIS_TIMEOUT": "300ms", "WORKER_PUBLIC_URL": b.url,
		"QSTASH_CURRENT_SIGNING_KEY": qstashdev.DevCurrentSigningKey,
		"QSTASH_NEXT_SIGNING_KEY":    qstashdev.DevNextSigningKey,
		"STRIPE_WEBHOOK_SECRET":      "whsec_test", "LOG_LEVEL": os.Getenv("TEST_LOG_LEVEL"),
		"QSTASH_URL": b.qstash.URL, "QSTASH_TOKEN": qstashdev.DevToken, "JOBWORKER_ENV": "development",
		"DATABASE_URL": "memory", // jobs get their store from the test, not from config
	}
	if b.qstashURL != nil {
		vars["QSTASH_URL"] = b.qstashURL(b.qstash.URL)
	}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := workerapp.LoadConfig(envMap(vars))
	if err != nil {
		t.Fatal(err)
	}
	p, err := workerapp.Build(cfg, workerapp.Deps{Store: b.store, Register: register})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Server.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-b.effects.release:
		default:
			close(b.effects.release) // never leave a blocked job holding shutdown
		}
		<-done
	})
	b.client, err = jobs.NewClient(jobs.ClientConfig{QStashURL: b.qstash.URL, Token: qstashdev.DevToken, WorkerPublicURL: b.url})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func envMap(m map[string]string) env.Getenv { return func(k string) string { return m[k] } }

// deliver sends a signed delivery the way QStash does, with messageID.
func deliver(t *testing.T, workerURL, job, messageID string, body []byte) (int, http.Header) {
	t.Helper()
	url := workerURL + "/jobs/" + job
	sig, err := webhookstest.QStashSignature(qstashdev.DevCurrentSigningKey, url, body, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return post(t, url, body, map[string]string{"Upstash-Signature": sig, "Upstash-Message-Id": messageID})
}

func post(t *testing.T, url string, body []byte, hdr map[string]string) (int, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, res.Header
}

// metric reads one sample from a /metrics page, 0 when absent.
func metric(t *testing.T, base, series string) float64 {
	t.Helper()
	return metrictest.Scrape(t, base, series)
}

// waitMetric polls a series until it reaches want: the worker counts a
// delivery after the handler returns, a moment after the effect.
func waitMetric(t *testing.T, base, series string, want float64) {
	t.Helper()
	testwait.For(t, 10*time.Second, fmt.Sprintf("%s = %v", series, want), func() bool { return metric(t, base, series) == want })
}

func TestEnqueueDeliverRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res, err := b.client.Enqueue(context.Background(), countJob{ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if res.MessageID == "" {
		t.Fatal("no message id")
	}
	b.effects.waitFor(t, 10*time.Second, "the job to run", func() bool { r, _ := b.effects.get("a"); return r == 1 })
	waitMetric(t, b.url, `jobworker_deliveries_total{job="test.count",outcome="done"}`, 1)
}

func TestFailingJobIsRetriedThenSucceeds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.client.Enqueue(context.Background(), flakyJob{ID: "f", Fails: 2}, jobs.WithRetries(3)); err != nil {
		t.Fatal(err)
	}
	b.effects.waitFor(t, 15*time.Second, "the third attempt to succeed", func() bool { r, _ := b.effects.get("f"); return r == 1 })
	if r, a := b.effects.get("f"); r != 1 || a != 3 {
		t.Fatalf("runs=%d attempts=%d, want 1 and 3", r, a)
	}
	waitMetric(t, b.url, `jobworker_delivery_redeliveries_total{job="test.flaky"}`, 2)
}

func TestPermanentErrorGoesToDLQWithoutRetries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res, err := b.client.Enqueue(context.Background(), permanentJob{}, jobs.WithRetries(3),
		jobs.WithFailureCallback(b.url+workerapp.FailureCallbackPath))
	if err != nil {
		t.Fatal(err)
	}
	q := qstash.NewClientWith(qstash.Options{Url: b.qstash.URL, Token: qstashdev.DevToken})
	var dead []qstash.DlqMessage
	testwait.For(t, 10*time.Second, "the message in the DLQ", func() bool {
		msgs, _, err := q.Dlq().List(qstash.ListDlqOptions{})
		if err != nil {
			t.Fatal(err)
		}
		dead = msgs
		return len(msgs) > 0
	})
	if len(dead) != 1 || dead[0].MessageId != res.MessageID || dead[0].ResponseStatus != jobs.StatusNonRetryable {
		t.Fatalf("DLQ = %+v", dead)
	}
	// The failure callback records the dead job.
	waitMetric(t, b.url, `jobworker_dead_jobs_total{job="test.permanent"}`, 1)
	if _, a := b.effects.get("permanent"); a != 1 {
		t.Fatalf("attempts = %d, want exactly 1 (no retries after 489)", a)
	}
}

func TestUnknownJobAndBadPayloadArePermanent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, tt := range []struct{ job, body string }{
		{"no.such-job", `{}`},
		{"test.count", `{"id": 5}`},
		{"test.count", `not json`},
	} {
		status, hdr := deliver(t, b.url, tt.job, "msg_"+tt.job+tt.body, []byte(tt.body))
		if status != jobs.StatusNonRetryable || hdr.Get(jobs.HeaderNonRetryable) != "true" {
			t.Errorf("%s %s: %d %v", tt.job, tt.body, status, hdr)
		}
	}
}

func TestDuplicateDeliveriesRunOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := []byte(`{"id":"dup"}`)
	// The first delivery blocks in the handler while 10 more arrive.
	first := make(chan int, 1)
	go func() { s, _ := deliver(t, b.url, "test.block", "msg_dup", body); first <- s }()
	b.effects.waitStarted(t)
	var wg sync.WaitGroup
	statuses := make(chan int, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, h := deliver(t, b.url, "test.block", "msg_dup", body)
			if s == http.StatusConflict && h.Get("Retry-After") == "" {
				t.Error("409 without Retry-After")
			}
			statuses <- s
		}()
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != http.StatusConflict {
			t.Fatalf("duplicate while running answered %d, want 409", s)
		}
	}
	close(b.effects.release)
	if s := <-first; s != 200 {
		t.Fatalf("first delivery: %d", s)
	}
	// A redelivery after success is a 200 that runs nothing (never 409).
	if s, _ := deliver(t, b.url, "test.block", "msg_dup", body); s != 200 {
		t.Fatalf("redelivery after done: %d", s)
	}
	if r, _ := b.effects.get("dup"); r != 1 {
		t.Fatalf("runs = %d", r)
	}
}

func TestRejectsUnverifiedDeliveries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := []byte(`{"id":"forged"}`)
	url := b.url + "/jobs/test.count"
	now := time.Now()
	sign := func(key string, mutate func(map[string]any)) string {
		claims := webhookstest.QStashClaims(url, body, now)
		if mutate != nil {
			mutate(claims)
		}
		s, err := webhookstest.SignQStash(key, claims)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := sign(qstashdev.DevCurrentSigningKey, nil)
	parts := strings.Split(good, ".")
	tests := []struct {
		name string
		sig  string
		body []byte
	}{
		{"no signature", "", body},
		{"forged key", sign("sig_attacker", nil), body},
		{"wrong url", sign(qstashdev.DevCurrentSigningKey, func(c map[string]any) { c["sub"] = b.url + "/jobs/test.flaky" }), body},
		{"expired", sign(qstashdev.DevCurrentSigningKey, func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() }), body},
		{"not yet valid", sign(qstashdev.DevCurrentSigningKey, func(c map[string]any) { c["nbf"] = now.Add(time.Hour).Unix() }), body},
		{"tampered body", good, []byte(`{"id":"forged2"}`)},
		{"alg none", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + parts[1] + ".", body},
		{"empty signature segment", parts[0] + "." + parts[1] + ".", body},
	}
	for i, tt := range tests {
		hdr := map[string]string{"Upstash-Message-Id": "msg_forged_" + strconv.Itoa(i)}
		if tt.sig != "" {
			hdr["Upstash-Signature"] = tt.sig
		}
		if s, _ := post(t, url, tt.body, hdr); s != http.StatusUnauthorized {
			t.Errorf("%s: %d, want 401", tt.name, s)
		}
	}
	// Next-key signatures (rotation) are accepted.
	next, _ := webhookstest.QStashSignature(qstashdev.DevNextSigningKey, url, body, now)
	if s, _ := post(t, url, body, map[string]string{"Upstash-Signature": next, "Upstash-Message-Id": "msg_next"}); s != 200 {
		t.Fatalf("next key: %d", s)
	}
	if r, _ := b.effects.get("forged"); r != 1 {
		t.Fatalf("runs = %d, want 1 (only the next-key delivery)", r)
	}
}

func TestOversizedDelivery(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := []byte(`{"id":"` + strings.Repeat("x", 1<<20) + `"}`)
	if s, _ := deliver(t, b.url, "test.count", "msg_big", body); s != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized: %d", s)
	}
}

// Redis down: deliveries get 503 and nothing runs; when it returns QStash's
// retries deliver everything, each effect exactly once.
func TestRedisOutageLosesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.redis.Stop()
	ids := []string{"r1", "r2", "r3", "r4", "r5"}
	for _, id := range ids {
		if _, err := b.client.Enqueue(context.Background(), countJob{ID: id}, jobs.WithRetries(6)); err != nil {
			t.Fatal(err)
		}
	}
	testwait.For(t, 10*time.Second, "every delivery refused while Redis is down", func() bool {
		return metric(t, b.url, `jobworker_deliveries_total{job="test.count",outcome="unavailable"}`) >= float64(len(ids))
	})
	for _, id := range ids {
		if r, _ := b.effects.get(id); r != 0 {
			t.Fatalf("%s ran while Redis was down", id)
		}
	}
	b.redis.Restart()
	b.effects.waitFor(t, 30*time.Second, "every job after Redis returned", func() bool {
		for _, id := range ids {
			if r, _ := b.effects.get(id); r != 1 {
				return false
			}
		}
		return true
	})
}

// Redis dies while a job runs: the job finishes, the answer is 200 so QStash
// stops, and the job never runs twice.
func TestRedisDiesMidJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res, err := b.client.Enqueue(context.Background(), blockJob{ID: "mid"}, jobs.WithRetries(3))
	if err != nil {
		t.Fatal(err)
	}
	b.effects.waitStarted(t)
	b.redis.Stop()
	close(b.effects.release)
	b.effects.waitFor(t, 10*time.Second, "the job to finish", func() bool { r, _ := b.effects.get("mid"); return r == 1 })
	b.redis.Restart()
	// QStash drops a message from its store once it was answered 2xx; a
	// non-2xx answer would have kept it for a retry.
	q := qstash.NewClientWith(qstash.Options{Url: b.qstash.URL, Token: qstashdev.DevToken})
	testwait.For(t, 10*time.Second, "the message delivered", func() bool {
		_, err := q.Messages().Get(res.MessageID)
		return err != nil
	})
	if r, a := b.effects.get("mid"); r != 1 || a != 1 {
		t.Fatalf("runs = %d, attempts = %d; want 1", r, a)
	}
	waitMetric(t, b.url, `jobworker_deliveries_total{job="test.block",outcome="done"}`, 1)
}

// Two worker processes, one Redis: the same message delivered to both at
// once runs once.
func TestTwoWorkerProcessesRunEachMessageOnce(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	var workers []*proctest.Proc
	for i := 0; i < 2; i++ {
		workers = append(workers, startHelperWorker(t, rs.URL(), 0))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for m := 0; m < 5; m++ {
		msgID := "msg_multi_" + strconv.Itoa(m)
		body := []byte(`{"id":"` + msgID + `"}`)
		for _, w := range workers {
			for k := 0; k < 3; k++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s, _ := deliver(t, w.URL, "test.redis-count", msgID, body)
					mu.Lock()
					codes[s]++
					mu.Unlock()
				}()
			}
		}
	}
	wg.Wait()
	if codes[200] < 5 || codes[200]+codes[409] != 30 {
		t.Fatalf("answers %v", codes)
	}
	rdb := rs.Client(t)
	for m := 0; m < 5; m++ {
		n, err := rdb.Get(context.Background(), "effects:msg_multi_"+strconv.Itoa(m)).Int()
		if err != nil || n != 1 {
			t.Fatalf("message %d ran %d times (%v)", m, n, err)
		}
	}
}

// SIGTERM while a job runs: the job finishes and is answered 200, a new
// delivery during the drain gets 503 + Retry-After, and the process exits 0.
func TestSIGTERMLetsRunningJobFinish(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	w := startHelperWorker(t, rs.URL(), 500*time.Millisecond)
	got := make(chan int, 1)
	go func() {
		s, _ := deliver(t, w.URL, "test.slow", "msg_slow", []byte(`{"id":"slow"}`))
		got <- s
	}()
	testwait.For(t, 10*time.Second, "the slow job started", func() bool { return strings.Contains(w.Output(), "slow job started") })
	if err := w.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Draining shows on /readyz; the 500 ms drain delay keeps the listener
	// open meanwhile.
	testwait.For(t, 5*time.Second, "the worker draining", func() bool {
		res, err := http.Get(w.URL + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusServiceUnavailable
	})
	s, h := deliver(t, w.URL, "test.slow", "msg_late", []byte(`{"id":"late"}`))
	if s != http.StatusServiceUnavailable || h.Get("Retry-After") == "" {
		t.Fatalf("delivery during drain: %d Retry-After=%q", s, h.Get("Retry-After"))
	}
	if s := <-got; s != 200 {
		t.Fatalf("running job answered %d", s)
	}
	if code := w.Wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, w.Output())
	}
	if n, _ := rs.Client(t).Get(context.Background(), "effects:slow").Int(); n != 1 {
		t.Fatalf("slow job effect %d", n)
	}
}

// startHelperWorker runs this test binary as a worker process (see
// TestHelperWorker) on a free port.
func startHelperWorker(t *testing.T, redisURL string, drain time.Duration) *proctest.Proc {
	t.Helper()
	port := proctest.FreePort(t)
	w := proctest.Start(t, os.Args[0], []string{"-test.run=^TestHelperWorker$"},
		"JOBWORKER_HELPER_WORKER=1", "PORT="+strconv.Itoa(port), "REDIS_URL="+redisURL,
		"WORKER_PUBLIC_URL=http://127.0.0.1:"+strconv.Itoa(port),
		"QSTASH_CURRENT_SIGNING_KEY="+qstashdev.DevCurrentSigningKey,
		"QSTASH_NEXT_SIGNING_KEY="+qstashdev.DevNextSigningKey,
		"STRIPE_WEBHOOK_SECRET=whsec_test", "LOG_LEVEL=warn", "LOG_FORMAT=text",
		"QSTASH_URL=http://127.0.0.1:1", "QSTASH_TOKEN=unused", "DATABASE_URL=memory", "JOBWORKER_ENV=development",
		"SHUTDOWN_DRAIN_DELAY="+drain.String())
	w.WaitHealthy(t)
	return w
}

type redisCountJob struct {
	ID string `json:"id"`
}

func (redisCountJob) Kind() string { return "test.redis-count" }

type slowJob struct {
	ID string `json:"id"`
}

func (slowJob) Kind() string { return "test.slow" }

// TestHelperWorker is the worker process of the multi-process tests: the
// production wiring (workerapp.Build) with jobs that record their effect in
// Redis.
func TestHelperWorker(t *testing.T) {
	if os.Getenv("JOBWORKER_HELPER_WORKER") != "1" {
		t.Skip("helper process for the multi-process tests")
	}
	cfg, err := workerapp.LoadConfig(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	rdb := redis.NewClient(&redis.Options{Addr: strings.TrimPrefix(cfg.Redis.URL, "redis://")})
	p, err := workerapp.Build(cfg, workerapp.Deps{Register: func(reg *jobs.Registry, _ *process.Process) error {
		return errors.Join(
			jobs.Register(reg, func(ctx context.Context, j *jobs.Job[redisCountJob]) error {
				time.Sleep(50 * time.Millisecond) // the job's work: long enough for duplicates to overlap it
				return rdb.Incr(ctx, "effects:"+j.Args.ID).Err()
			}),
			jobs.Register(reg, func(ctx context.Context, j *jobs.Job[slowJob]) error {
				fmt.Println("slow job started")
				time.Sleep(time.Second) // the job's work, outlasting the SIGTERM
				return rdb.Incr(ctx, "effects:"+j.Args.ID).Err()
			}),
		)
	}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := p.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}
