package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
)

// End-to-end tests: the real qstash-go client publishes to a local
// qstashdev server, which delivers signed requests to an httptest worker
// that dispatches through a Registry and answers as package worker does
// (see answer).
// (Signature verification is package webhooks' business; here we only check
// the signature header is present.)

type greet struct {
	Name string `json:"name"`
}

func (greet) Kind() string { return "test.greet" }

type delivery struct {
	path   string
	header http.Header
	body   []byte
	status int
}

type e2e struct {
	client *jobs.Client
	reg    *jobs.Registry
	worker *httptest.Server
	got    chan delivery
}

// setup starts qstashdev and a worker whose /jobs/{name} route dispatches
// through reg; any other path (callbacks) is recorded and answered 200.
func setup(t *testing.T, register func(reg *jobs.Registry)) *e2e {
	t.Helper()
	qs := qstashdevtest.Start(t, qstashdev.Config{TimeScale: 0.001})
	reg, err := jobs.NewRegistry(jobs.RegistryConfig{DefaultTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	register(reg)
	env := &e2e{reg: reg, got: make(chan delivery, 64)}
	env.worker = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		status := http.StatusOK
		if name, ok := strings.CutPrefix(r.URL.Path, jobs.PathPrefix); ok {
			err := reg.Dispatch(r.Context(), name, jobs.DeliveryFromHeader(r.Header), body)
			var header http.Header
			status, header = answer(err)
			for k, v := range header {
				w.Header()[k] = v
			}
		}
		env.got <- delivery{path: r.URL.Path, header: r.Header.Clone(), body: body, status: status}
		w.WriteHeader(status)
	}))
	t.Cleanup(env.worker.Close)
	env.client, err = jobs.NewClient(jobs.ClientConfig{
		QStashURL: qs.URL, Token: qstashdev.DevToken, WorkerPublicURL: env.worker.URL,
	})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// answer is the worker's mapping of a Dispatch result, cut down to what
// these tests need (package worker owns the real one).
func answer(err error) (int, http.Header) {
	switch {
	case err == nil:
		return http.StatusOK, nil
	case jobs.IsPermanent(err):
		return jobs.StatusNonRetryable, http.Header{jobs.HeaderNonRetryable: {"true"}}
	}
	if d, ok := jobs.RetryAfterOf(err); ok {
		return http.StatusInternalServerError, http.Header{"Retry-After": {strconv.Itoa(int(d.Seconds()))}}
	}
	return http.StatusInternalServerError, nil
}

func (e *e2e) next(t *testing.T) delivery {
	t.Helper()
	select {
	case d := <-e.got:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery reached the worker")
		return delivery{}
	}
}

func TestQStashDevDelivery(t *testing.T) {
	t.Parallel()
	handled := make(chan *jobs.Job[greet], 1)
	env := setup(t, func(reg *jobs.Registry) {
		_ = jobs.Register(reg, func(ctx context.Context, j *jobs.Job[greet]) error {
			handled <- j
			return nil
		})
	})
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	ctx := jobs.WithTraceparent(context.Background(), tp)

	res, err := env.client.Enqueue(ctx, greet{Name: "ada"}, jobs.WithRetries(1))
	if err != nil {
		t.Fatal(err)
	}
	if res.MessageID == "" || res.Deduplicated {
		t.Fatalf("result = %+v", res)
	}
	d := env.next(t)
	if d.path != "/jobs/test.greet" || string(d.body) != `{"name":"ada"}` || d.status != 200 {
		t.Errorf("delivery %s %s -> %d", d.path, d.body, d.status)
	}
	for k, want := range map[string]string{
		"Content-Type": "application/json", "Traceparent": tp, "Upstash-Message-Id": res.MessageID, "Upstash-Retried": "0",
	} {
		if got := d.header.Get(k); got != want {
			t.Errorf("delivered %s = %q, want %q", k, got, want)
		}
	}
	if d.header.Get("Upstash-Signature") == "" {
		t.Error("delivery is not signed")
	}
	j := <-handled
	if j.Args.Name != "ada" || j.MessageID != res.MessageID || j.Traceparent != tp || j.Attempt() != 1 {
		t.Errorf("job = %+v", j)
	}
}

func TestQStashDevDelay(t *testing.T) {
	t.Parallel()
	env := setup(t, func(reg *jobs.Registry) {
		_ = jobs.Register(reg, func(context.Context, *jobs.Job[greet]) error { return nil })
	})
	start := time.Now()
	if _, err := env.client.Enqueue(context.Background(), greet{}, jobs.WithDelay(time.Second)); err != nil {
		t.Fatal(err)
	}
	env.next(t)
	// Not-before has one-second resolution at QStash; allow the rounding.
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Errorf("delivered after %v, want about 1s", took)
	}
}

func TestQStashDevDeduplication(t *testing.T) {
	t.Parallel()
	env := setup(t, func(reg *jobs.Registry) {
		_ = jobs.Register(reg, func(context.Context, *jobs.Job[greet]) error { return nil })
	})
	ctx := context.Background()
	first, err := env.client.Enqueue(ctx, greet{Name: "a"}, jobs.WithDeduplicationID("greet-a"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := env.client.Enqueue(ctx, greet{Name: "a"}, jobs.WithDeduplicationID("greet-a"))
	if err != nil {
		t.Fatal(err)
	}
	if first.Deduplicated || !second.Deduplicated || second.MessageID != first.MessageID {
		t.Fatalf("first %+v, second %+v", first, second)
	}
	// Different traces, same content: still one delivery.
	third, err := env.client.Enqueue(jobs.WithTraceparent(ctx, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), greet{Name: "a"}, jobs.WithContentBasedDeduplication())
	if err != nil {
		t.Fatal(err)
	}
	fourth, err := env.client.Enqueue(jobs.WithTraceparent(ctx, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203332-01"), greet{Name: "a"}, jobs.WithContentBasedDeduplication())
	if err != nil || third.Deduplicated || !fourth.Deduplicated || fourth.MessageID != third.MessageID {
		t.Fatalf("content-based: third %+v, fourth %+v, %v", third, fourth, err)
	}
}

func TestQStashDevBatch(t *testing.T) {
	t.Parallel()
	env := setup(t, func(reg *jobs.Registry) {
		_ = jobs.Register(reg, func(context.Context, *jobs.Job[greet]) error { return nil })
	})
	res, err := env.client.EnqueueBatch(context.Background(), []jobs.EnqueueRequest{
		{Args: greet{Name: "a"}},
		{Args: greet{Name: "b"}, Options: []jobs.EnqueueOption{jobs.WithQueue("greetings")}},
		{Args: greet{Name: "c"}, Options: []jobs.EnqueueOption{
			jobs.WithFlowControl(jobs.FlowControl{Key: "greet", Parallelism: 1, Rate: 100, Period: time.Second}),
			jobs.WithRetryDelay("10"),
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{} // message id → body
	for i, r := range res {
		if r.MessageID == "" || r.Deduplicated {
			t.Fatalf("result %d = %+v", i, r)
		}
		ids[r.MessageID] = `{"name":"` + string(rune('a'+i)) + `"}`
	}
	for range res {
		d := env.next(t)
		id := d.header.Get("Upstash-Message-Id")
		if want, ok := ids[id]; !ok || string(d.body) != want {
			t.Errorf("delivery %s body %s, want %s", id, d.body, want)
		}
		delete(ids, id)
	}
}

// A retryable failure comes back; a permanent one goes straight to the
// failure callback with no second attempt.
func TestQStashDevOutcomes(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	attempts := map[string]int{}
	env := setup(t, func(reg *jobs.Registry) {
		_ = jobs.Register(reg, func(_ context.Context, j *jobs.Job[greet]) error {
			mu.Lock()
			attempts[j.Args.Name]++
			mu.Unlock()
			switch {
			case j.Args.Name == "flaky" && j.Retried == 0:
				return jobs.RetryAfter(0, errors.New("try again"))
			case j.Args.Name == "doomed":
				return jobs.Permanent(errors.New("never"))
			}
			return nil
		})
	})
	ctx := context.Background()
	failed := env.worker.URL + "/failed"
	if _, err := env.client.Enqueue(ctx, greet{Name: "flaky"}, jobs.WithRetries(3)); err != nil {
		t.Fatal(err)
	}
	want := []int{500, 200}
	for i, status := range want {
		if d := env.next(t); d.status != status || d.header.Get("Upstash-Retried") != string(rune('0'+i)) {
			t.Errorf("flaky attempt %d: status %d retried %s", i, d.status, d.header.Get("Upstash-Retried"))
		}
	}

	doomed, err := env.client.Enqueue(ctx, greet{Name: "doomed"}, jobs.WithRetries(3), jobs.WithFailureCallback(failed))
	if err != nil {
		t.Fatal(err)
	}
	if d := env.next(t); d.status != jobs.StatusNonRetryable {
		t.Fatalf("doomed answered %d", d.status)
	}
	cb := env.next(t)
	if cb.path != "/failed" {
		t.Fatalf("after a 489 got %s, want the failure callback", cb.path)
	}
	var payload struct {
		Status          int    `json:"status"`
		SourceMessageID string `json:"sourceMessageId"`
	}
	if err := json.Unmarshal(cb.body, &payload); err != nil || payload.Status != jobs.StatusNonRetryable || payload.SourceMessageID != doomed.MessageID {
		t.Errorf("failure callback %s: %v", cb.body, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if attempts["doomed"] != 1 {
		t.Errorf("doomed ran %d times, want 1", attempts["doomed"])
	}
}

func TestQStashDevUnknownJobIsPermanent(t *testing.T) {
	t.Parallel()
	env := setup(t, func(*jobs.Registry) {}) // nothing registered
	if _, err := env.client.Enqueue(context.Background(), greet{}, jobs.WithRetries(3),
		jobs.WithFailureCallback(env.worker.URL+"/failed"), jobs.WithCallback(env.worker.URL+"/each")); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for range 3 { // the attempt, its callback, the failure callback (callbacks in any order)
		d := env.next(t)
		seen[d.path]++
		if d.path == "/jobs/test.greet" && d.status != jobs.StatusNonRetryable {
			t.Errorf("unknown job answered %d", d.status)
		}
	}
	if seen["/jobs/test.greet"] != 1 || seen["/each"] != 1 || seen["/failed"] != 1 {
		t.Errorf("deliveries = %v", seen)
	}
}
