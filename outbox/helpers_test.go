package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/logtest"
	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/outbox"
	"github.com/digis/jobworker/qstashdev"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	os.Exit(m.Run())
}

// testJob is the job the tests enqueue; ID identifies it at the receiver.
type testJob struct {
	ID string `json:"id"`
}

func (testJob) Kind() string { return "outbox.test" }

// checkedJob has defaults and a Validate method, like the apps' jobs.
type checkedJob struct {
	ID string `json:"id"`
}

func (checkedJob) Kind() string { return "outbox.checked" }

func (j checkedJob) Validate() error {
	if j.ID == "" {
		return errors.New("id is required")
	}
	return nil
}

func (j checkedJob) EnqueueDefaults() []jobs.EnqueueOption {
	return []jobs.EnqueueOption{jobs.WithRetries(2), jobs.WithDeduplicationID("checked:" + j.ID)}
}

// receiver is the worker stand-in QStash delivers to: it counts deliveries
// per job payload id and remembers QStash's message ids.
type receiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	got map[string]int      // payload id -> deliveries
	ids map[string][]string // payload id -> message ids
}

func newReceiver(t testing.TB) *receiver {
	rc := &receiver{got: map[string]int{}, ids: map[string][]string{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var j testJob
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &j); err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		rc.mu.Lock()
		rc.got[j.ID]++
		rc.ids[j.ID] = append(rc.ids[j.ID], r.Header.Get("Upstash-Message-Id"))
		rc.mu.Unlock()
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) count(id string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.got[id]
}

func (rc *receiver) distinct() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.got)
}

// duplicates lists (up to five) payload ids delivered more than once.
func (rc *receiver) duplicates() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []string
	for id, n := range rc.got {
		if n > 1 && len(out) < 5 { // a few examples are enough
			out = append(out, fmt.Sprintf("%s x%d %v", id, n, rc.ids[id]))
		}
	}
	return out
}

// front serves a qstashdev.Server's API on a fixed loopback port and can be
// stopped (connections refused) and started again on the same port while
// the server keeps its state, as a real QStash outage looks to a client.
// wrap, when set, sees every request before qstashdev does.
type front struct {
	t    testing.TB
	qs   *qstashdev.Server
	addr string
	URL  string
	wrap func(w http.ResponseWriter, r *http.Request, next http.Handler)

	mu  sync.Mutex
	hs  *http.Server
	out chan error
}

func newFront(t testing.TB, cfg qstashdev.Config) *front {
	t.Helper()
	qs, err := qstashdev.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = qs.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &front{t: t, qs: qs, addr: ln.Addr().String(), URL: "http://" + ln.Addr().String()}
	f.serve(ln)
	t.Cleanup(f.stop)
	return f
}

func (f *front) serve(ln net.Listener) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		wrap := f.wrap
		f.mu.Unlock()
		if wrap != nil {
			wrap(w, r, f.qs.Handler())
			return
		}
		f.qs.Handler().ServeHTTP(w, r)
	})
	hs := &http.Server{Handler: h}
	out := make(chan error, 1)
	go func() { out <- hs.Serve(ln) }()
	f.mu.Lock()
	f.hs, f.out = hs, out
	f.mu.Unlock()
}

// stop closes the listener and every connection: the port refuses calls.
func (f *front) stop() {
	f.mu.Lock()
	hs, out := f.hs, f.out
	f.hs = nil
	f.mu.Unlock()
	if hs == nil {
		return
	}
	_ = hs.Close()
	<-out
}

// start serves again on the same port.
func (f *front) start() {
	f.t.Helper()
	var ln net.Listener
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ln, err = net.Listen("tcp", f.addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the port is being released
	}
	if err != nil {
		f.t.Fatalf("front: listen again on %s: %v", f.addr, err)
	}
	f.serve(ln)
}

func (f *front) setWrap(w func(http.ResponseWriter, *http.Request, http.Handler)) {
	f.mu.Lock()
	f.wrap = w
	f.mu.Unlock()
}

// bundle is one test's world: a migrated database, qstash-dev behind a
// front, a receiver, a jobs client and a metrics registry.
type bundle struct {
	db     *pgtest.Database
	pool   *pgxpool.Pool
	front  *front
	recv   *receiver
	client *jobs.Client
	reg    *prometheus.Registry
	logs   *logtest.Buffer
}

func setup(t testing.TB) *bundle {
	t.Helper()
	db := pgtest.Create(t)
	if err := outbox.Migrate(t.Context(), db.Pool); err != nil {
		t.Fatal(err)
	}
	b := &bundle{db: db, pool: db.Pool, recv: newReceiver(t), reg: prometheus.NewRegistry(), logs: &logtest.Buffer{}}
	b.front = newFront(t, qstashdev.Config{})
	b.client = newClient(t, b.front.URL, b.recv.srv.URL)
	return b
}

func newClient(t testing.TB, qstashURL, workerURL string) *jobs.Client {
	t.Helper()
	c, err := jobs.NewClient(jobs.ClientConfig{QStashURL: qstashURL, Token: qstashdev.DevToken, WorkerPublicURL: workerURL, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// relay builds a relay on b with fast timings; mod adjusts the config.
func (b *bundle) relay(t testing.TB, mod ...func(*outbox.Config)) *outbox.Relay {
	t.Helper()
	cfg := outbox.Config{
		Pool: b.pool, Publisher: b.client, SweepInterval: 50 * time.Millisecond,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Registerer: b.reg,
		MetricsInterval: time.Millisecond,
	}
	for _, m := range mod {
		m(&cfg)
	}
	r, err := outbox.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// start starts r and stops it at cleanup.
func start(t testing.TB, r *outbox.Relay) {
	t.Helper()
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
}

// enqueueCommitted enqueues one testJob per id in its own transaction.
func (b *bundle) enqueueCommitted(t testing.TB, ids ...string) {
	t.Helper()
	for _, id := range ids {
		err := pgx.BeginFunc(t.Context(), b.pool, func(tx pgx.Tx) error {
			_, err := outbox.Enqueue(t.Context(), tx, testJob{ID: id})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// states counts rows per state.
func (b *bundle) states(t testing.TB) map[string]int {
	t.Helper()
	rows, err := b.pool.Query(t.Context(), `SELECT state, count(*) FROM jobworker_outbox GROUP BY state`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		out[s] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func (b *bundle) deduplicatedRows(t testing.TB) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(t.Context(), `SELECT count(*) FROM jobworker_outbox WHERE deduplicated`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return out
}
