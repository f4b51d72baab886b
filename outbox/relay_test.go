package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/digis/jobworker/internal/metrictest"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/outbox"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ok := outbox.Config{Pool: b.pool, Publisher: b.client}
	tests := []struct {
		name   string
		given  func(c *outbox.Config)
		expect string // substring of the error; "" for valid
	}{
		{name: "defaults", given: func(*outbox.Config) {}},
		{name: "no pool", given: func(c *outbox.Config) { c.Pool = nil }, expect: "Config.Pool is required"},
		{name: "no publisher", given: func(c *outbox.Config) { c.Publisher = nil }, expect: "Config.Publisher is required"},
		{name: "batch too big", given: func(c *outbox.Config) { c.BatchSize = outbox.MaxBatchSize + 1 }, expect: "Config.BatchSize"},
		{name: "negative concurrency", given: func(c *outbox.Config) { c.Concurrency = -1 }, expect: "Config.Concurrency"},
		{name: "negative sweep", given: func(c *outbox.Config) { c.SweepInterval = -time.Second }, expect: "Config.SweepInterval"},
		{name: "backoff inverted", given: func(c *outbox.Config) { c.MinBackoff, c.MaxBackoff = time.Minute, time.Second }, expect: "Config.MinBackoff"},
		{name: "retention inside the dedup window", given: func(c *outbox.Config) { c.Retention = 5 * time.Minute }, expect: "Config.Retention"},
		{name: "negative run-once rows", given: func(c *outbox.Config) { c.RunOnceMaxRows = -1 }, expect: "Config.RunOnceMaxRows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := ok
			tt.given(&c)
			err := c.Validate()
			if tt.expect == "" {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				if _, err := outbox.New(c); err != nil {
					t.Fatalf("New() = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.expect) {
				t.Fatalf("Validate() = %v, want it to name %q", err, tt.expect)
			}
			if _, err := outbox.New(c); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
}

// The NOTIFY sent at commit wakes a started relay: with the sweep an hour
// away, jobs still go out at once.
func TestNotifyWakesRelay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.relay(t, func(c *outbox.Config) { c.SweepInterval = time.Hour })
	start(t, r)
	testwait.For(t, 5*time.Second, "LISTEN", func() bool {
		v, _ := metrictest.Value(t, b.reg, "jobworker_outbox_listening", nil)
		return v == 1
	})
	b.enqueueCommitted(t, ids("n", 20)...)
	testwait.For(t, 5*time.Second, "deliveries", func() bool { return b.recv.distinct() == 20 })
	// QStash may deliver before the relay has recorded its answer.
	testwait.For(t, 5*time.Second, "published_total = 20", func() bool {
		v, _ := metrictest.Value(t, b.reg, "jobworker_outbox_published_total", map[string]string{"job": "outbox.test", "result": "ok"})
		return v == 20
	})
}

// Rows inserted without a notification (a lost NOTIFY) are found by the
// sweep.
func TestSweepFindsUnnotifiedRows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.relay(t, func(c *outbox.Config) { c.SweepInterval = 20 * time.Millisecond })
	start(t, r)
	_, err := b.pool.Exec(t.Context(), `INSERT INTO jobworker_outbox (id, kind, body, options)
		VALUES (gen_random_uuid(), 'outbox.test', '{"id":"quiet"}', '{"deduplication_id":"quiet"}')`)
	if err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 5*time.Second, "the sweep to publish", func() bool { return b.recv.count("quiet") == 1 })
}

// A lost LISTEN connection is re-established with backoff; afterwards
// notifications wake the relay again (the sweep is an hour away, so only
// the new connection can have woken it).
func TestListenReconnects(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.relay(t, func(c *outbox.Config) { c.SweepInterval = time.Hour })
	start(t, r)
	connects := func() float64 {
		v, _ := metrictest.Value(t, b.reg, "jobworker_outbox_listen_connects_total", nil)
		return v
	}
	testwait.For(t, 5*time.Second, "LISTEN", func() bool { return connects() == 1 })
	var killed int
	err := b.pool.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = 'jobworker-outbox-listener'`).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminated %d listener sessions: %v", killed, err)
	}
	testwait.For(t, 5*time.Second, "the LISTEN reconnect", func() bool { return connects() == 2 })
	if !strings.Contains(b.logs.String(), "LISTEN connection lost") {
		t.Error("no log line for the lost LISTEN connection")
	}
	b.enqueueCommitted(t, "after-reconnect")
	testwait.For(t, 5*time.Second, "the job after the reconnect", func() bool { return b.recv.count("after-reconnect") == 1 })
}

// QStash down for a while (its port refusing connections, then serving
// again on the same port) while jobs keep being enqueued: afterwards every
// job is delivered exactly once.
func TestQStashOutage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.relay(t, func(c *outbox.Config) { c.BatchSize = 25 })
	start(t, r)
	all := ids("o", 300)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < len(all); i += 3 {
			b.enqueueCommitted(t, all[i:min(i+3, len(all))]...)
		}
	})
	testwait.For(t, 10*time.Second, "some deliveries before the outage", func() bool { return b.recv.distinct() >= 30 })
	b.front.stop()
	errorsSeen := func() float64 {
		v, _ := metrictest.Value(t, b.reg, "jobworker_outbox_publish_errors_total", map[string]string{"class": "network"})
		return v
	}
	// Stay down until the relay has failed repeatedly, backing off.
	testwait.For(t, 10*time.Second, "publish failures during the outage", func() bool { return errorsSeen() >= 5 })
	testwait.For(t, 10*time.Second, "rows to pile up", func() bool { return b.states(t)["pending"] >= 20 })
	b.front.start()
	wg.Wait()
	testwait.For(t, 20*time.Second, "every row sent", func() bool { return b.states(t)["sent"] == len(all) })
	testwait.For(t, 20*time.Second, "every delivery", func() bool { return b.recv.distinct() == len(all) })
	if d := b.recv.duplicates(); len(d) > 0 {
		t.Fatalf("delivered more than once: %v", d)
	}
	if !strings.Contains(b.logs.String(), "qstash unavailable") {
		t.Error("no log line for the outage")
	}
}

// What each kind of QStash refusal does to the rows and to the relay.
func TestRefusals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		status      int
		retryAfter  string
		wantClass   string
		wantAtLeast time.Duration // the RetryAfter RunOnce reports
		wantState   string        // of the rows after the refusal
	}{
		{name: "503 with Retry-After", status: 503, retryAfter: "2", wantClass: "server", wantAtLeast: 2 * time.Second, wantState: "pending"},
		{name: "429", status: 429, retryAfter: "1", wantClass: "throttled", wantAtLeast: time.Second, wantState: "pending"},
		{name: "500", status: 500, wantClass: "server", wantState: "pending"},
		{name: "401 is the relay's problem, not the rows'", status: 401, wantClass: "config", wantState: "pending"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			var refuse atomic.Bool
			refuse.Store(true)
			b.front.setWrap(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
				if refuse.Load() {
					if tt.retryAfter != "" {
						w.Header().Set("Retry-After", tt.retryAfter)
					}
					http.Error(w, `{"error":"refused by the test"}`, tt.status)
					return
				}
				next.ServeHTTP(w, r)
			})
			b.enqueueCommitted(t, ids("r", 5)...)
			r := b.relay(t)
			res, err := r.RunOnce(t.Context())
			var ue *outbox.UnavailableError
			if !errors.As(err, &ue) || !errors.Is(err, outbox.ErrUnavailable) || !errors.Is(err, jobs.ErrPublish) {
				t.Fatalf("RunOnce = %+v, %v; want an UnavailableError", res, err)
			}
			if ue.RetryAfter < tt.wantAtLeast || ue.RetryAfter > outbox.MaxRetryAfter {
				t.Errorf("RetryAfter = %s, want at least %s", ue.RetryAfter, tt.wantAtLeast)
			}
			if v, _ := metrictest.Value(t, b.reg, "jobworker_outbox_publish_errors_total", map[string]string{"class": tt.wantClass}); v < 1 {
				t.Errorf("no publish error of class %s counted", tt.wantClass)
			}
			if st := b.states(t); st[tt.wantState] != 5 {
				t.Fatalf("rows = %v, want 5 %s", st, tt.wantState)
			}
			var attempts int
			var lastErr string
			if err := b.pool.QueryRow(t.Context(), `SELECT min(attempts), min(last_error) FROM jobworker_outbox`).Scan(&attempts, &lastErr); err != nil {
				t.Fatal(err)
			}
			if attempts != 1 || !strings.Contains(lastErr, "refused by the test") {
				t.Errorf("attempts %d, last_error %q: want the attempt recorded", attempts, lastErr)
			}
			// QStash is back: everything goes out.
			refuse.Store(false)
			res, err = r.RunOnce(t.Context())
			if err != nil || res.Published != 5 {
				t.Fatalf("RunOnce after recovery = %+v, %v", res, err)
			}
			testwait.For(t, 5*time.Second, "deliveries", func() bool { return b.recv.distinct() == 5 })
		})
	}
}

// A row QStash refuses for good is marked failed with the reason, logged at
// error level and counted; the rows batched with it go out; the failed row
// is not retried and survives the cleanup.
func TestPermanentRefusalMarksFailed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	b.enqueueCommitted(t, "good-1")
	// qstash-dev refuses more than 20 retries (a plan limit): 400.
	bad, err := outbox.Enqueue(ctx, b.pool, testJob{ID: "bad"}, jobs.WithRetries(50))
	if err != nil {
		t.Fatal(err)
	}
	b.enqueueCommitted(t, "good-2")
	// A row this binary cannot read (written by a newer release, say).
	_, err = b.pool.Exec(ctx, `INSERT INTO jobworker_outbox (id, kind, body, options)
		VALUES (gen_random_uuid(), 'outbox.test', '{"id":"unreadable"}', '{"retries":-3}')`)
	if err != nil {
		t.Fatal(err)
	}
	var now atomic.Pointer[time.Time]
	r := b.relay(t, func(c *outbox.Config) {
		c.Now = func() time.Time {
			if p := now.Load(); p != nil {
				return *p
			}
			return time.Now()
		}
	})
	res, err := r.RunOnce(ctx)
	if err != nil || res.Published != 2 || res.Failed != 2 {
		t.Fatalf("RunOnce = %+v, %v; want 2 published, 2 failed", res, err)
	}
	testwait.For(t, 5*time.Second, "the good jobs", func() bool { return b.recv.count("good-1")+b.recv.count("good-2") == 2 })
	var state, lastErr string
	if err := b.pool.QueryRow(ctx, `SELECT state, last_error FROM jobworker_outbox WHERE id = $1`, bad).Scan(&state, &lastErr); err != nil {
		t.Fatal(err)
	}
	if state != "failed" || !strings.Contains(lastErr, "400") || !strings.Contains(lastErr, "Upstash-Retries") {
		t.Errorf("refused row: state %s, last_error %q", state, lastErr)
	}
	logs := b.logs.String()
	if !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "job given up") || !strings.Contains(logs, bad) {
		t.Errorf("no error-level give-up log naming the row:\n%s", logs)
	}
	for class, want := range map[string]float64{"rejected": 1, "invalid": 1} {
		if v, _ := metrictest.Value(t, b.reg, "jobworker_outbox_publish_errors_total", map[string]string{"class": class}); v != want {
			t.Errorf("publish_errors_total{class=%s} = %v, want %v", class, v, want)
		}
	}
	if v, _ := metrictest.Value(t, b.reg, "jobworker_outbox_gave_up_total", map[string]string{"job": "outbox.test"}); v != 2 {
		t.Errorf("gave_up_total = %v, want 2", v)
	}
	if v, _ := metrictest.Value(t, b.reg, "jobworker_outbox_failed", nil); v != 2 {
		t.Errorf("failed gauge = %v, want 2", v)
	}
	// Not retried.
	if res, err := r.RunOnce(ctx); err != nil || res.Rounds != 1 || res.Published+res.Failed != 0 {
		t.Errorf("RunOnce again = %+v, %v; want nothing to do", res, err)
	}
	// A day later the sent rows are cleaned up; the failed ones stay.
	later := time.Now().Add(outbox.DefaultRetention + time.Hour)
	now.Store(&later)
	if _, err := r.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if st := b.states(t); st["failed"] != 2 || st["sent"] != 0 {
		t.Errorf("rows after the retention = %v, want only the 2 failed", st)
	}
	if v, _ := metrictest.Value(t, b.reg, "jobworker_outbox_cleaned_total", nil); v != 2 {
		t.Errorf("cleaned_total = %v, want 2", v)
	}
}

// Sent rows younger than the retention are kept.
func TestCleanupKeepsRecentRows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.enqueueCommitted(t, "recent")
	r := b.relay(t, func(c *outbox.Config) { c.Retention = time.Hour })
	for range 2 {
		if _, err := r.RunOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if st := b.states(t); st["sent"] != 1 {
		t.Errorf("rows = %v, want the recent sent row kept", st)
	}
}

// Two relays with their own pools, each running two rounds at once, while
// jobs are enqueued concurrently: no row is published twice — no delivery
// repeats and QStash never saw a row's deduplication id twice.
func TestTwoRelaysNeverPublishARowTwice(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 2000
	for i := range 2 {
		pool, err := pgxpool.New(t.Context(), b.db.URL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		r := b.relay(t, func(c *outbox.Config) {
			c.Pool, c.Concurrency, c.BatchSize, c.Registerer = pool, 2, 20, nil
			c.Publisher = newClient(t, b.front.URL, b.recv.srv.URL)
			_ = i
		})
		start(t, r)
	}
	all := ids("two", n)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 * 5 {
				var reqs []jobs.EnqueueRequest
				for j := i; j < min(i+5*4, n); j += 4 {
					reqs = append(reqs, jobs.EnqueueRequest{Args: testJob{ID: all[j]}})
				}
				err := pgx.BeginFunc(t.Context(), b.pool, func(tx pgx.Tx) error {
					_, err := outbox.EnqueueMany(t.Context(), tx, reqs)
					return err
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	testwait.For(t, 30*time.Second, "every row sent", func() bool { return b.states(t)["sent"] == n })
	testwait.For(t, 30*time.Second, "every delivery", func() bool { return b.recv.distinct() == n })
	if d := b.recv.duplicates(); len(d) > 0 {
		t.Fatalf("delivered more than once: %v", d)
	}
	if d := b.deduplicatedRows(t); d != 0 {
		t.Fatalf("%d rows were published a second time (QStash deduplicated them)", d)
	}
}

// Stop lets the round in flight finish — its publish and the recording of
// the outcome — and a Stop whose context ends cancels it, leaving the rows
// pending.
func TestStop(t *testing.T) {
	t.Parallel()
	for _, graceful := range []bool{true, false} {
		name := map[bool]string{true: "graceful", false: "deadline"}[graceful]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			inFlight := make(chan struct{})
			release := make(chan struct{})
			var once sync.Once
			b.front.setWrap(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
				once.Do(func() { close(inFlight) })
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
				next.ServeHTTP(w, r)
			})
			b.enqueueCommitted(t, ids("s", 10)...)
			r := b.relay(t)
			if err := r.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := r.Start(context.Background()); !errors.Is(err, outbox.ErrStarted) {
				t.Errorf("second Start = %v, want ErrStarted", err)
			}
			<-inFlight
			stopped := make(chan error, 1)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() { stopped <- r.Stop(ctx) }()
			if graceful {
				select {
				case err := <-stopped:
					t.Fatalf("Stop returned (%v) with a round in flight", err)
				default:
				}
				close(release)
				if err := <-stopped; err != nil {
					t.Fatalf("Stop = %v", err)
				}
				if st := b.states(t); st["sent"] != 10 {
					t.Fatalf("rows after a graceful stop = %v, want the in-flight batch recorded as sent", st)
				}
				return
			}
			cancel()
			if err := <-stopped; !errors.Is(err, context.Canceled) {
				t.Fatalf("Stop = %v, want context.Canceled", err)
			}
			close(release)
			if st := b.states(t); st["pending"] != 10 {
				t.Fatalf("rows after a cancelled stop = %v, want them pending", st)
			}
		})
	}
}

func TestHandler(t *testing.T) {
	t.Parallel()
	b := setup(t)
	h := b.relay(t).Handler()
	call := func(method string) (*httptest.ResponseRecorder, map[string]any) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequestWithContext(t.Context(), method, "/internal/outbox/relay", nil))
		var body map[string]any
		if method == http.MethodPost {
			raw, _ := io.ReadAll(w.Body)
			if err := json.Unmarshal(raw, &body); err != nil {
				t.Fatalf("body %q: %v", raw, err)
			}
		}
		return w, body
	}
	if w, _ := call(http.MethodGet); w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "POST" {
		t.Errorf("GET = %d, Allow %q", w.Code, w.Header().Get("Allow"))
	}
	b.enqueueCommitted(t, ids("h", 3)...)
	if w, body := call(http.MethodPost); w.Code != http.StatusOK || body["published"] != 3.0 {
		t.Errorf("POST = %d %v, want 200 with 3 published", w.Code, body)
	}
	b.front.stop()
	b.enqueueCommitted(t, "h-down")
	w, body := call(http.MethodPost)
	if w.Code != http.StatusInternalServerError || w.Header().Get("Retry-After") == "" || body["error"] != "qstash unavailable" {
		t.Errorf("POST with QStash down = %d, Retry-After %q, %v", w.Code, w.Header().Get("Retry-After"), body)
	}
	if strings.Contains(w.Body.String(), "127.0.0.1") {
		t.Errorf("the answer leaks internal error text: %s", w.Body.String())
	}
}

// RunOnce stops at its row bound and says there is more.
func TestRunOnceBounds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.enqueueCommitted(t, ids("b", 25)...)
	r := b.relay(t, func(c *outbox.Config) { c.BatchSize, c.RunOnceMaxRows = 10, 15 })
	res, err := r.RunOnce(t.Context())
	if err != nil || res.Published != 15 || !res.More || res.Rounds != 2 {
		t.Fatalf("first RunOnce = %+v, %v; want 15 published in 2 rounds, more", res, err)
	}
	res, err = r.RunOnce(t.Context())
	if err != nil || res.Published != 10 || res.More {
		t.Fatalf("second RunOnce = %+v, %v; want the last 10, no more", res, err)
	}
	if v, _ := metrictest.Value(t, b.reg, "jobworker_outbox_pending", nil); v != 0 {
		t.Errorf("pending gauge = %v, want 0", v)
	}
}
