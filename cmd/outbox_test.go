package cmd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	qstash "github.com/upstash/qstash-go"

	"github.com/digis/jobworker/internal/appjobs"
	"github.com/digis/jobworker/internal/auth"
	"github.com/digis/jobworker/internal/metrictest"
	"github.com/digis/jobworker/internal/outage"
	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/proctest"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/webhooks/webhookstest"
)

const outboxJWTSecret = "outbox-test-secret-of-at-least-32-bytes"

// outboxStack is the production path of issue #16 as real processes: the
// api and worker binaries on one PostgreSQL and one Redis, QStash
// (qstashdev, in the test) behind a front that can go down, and the
// worker's public URL a recording proxy, so every job that ran is counted
// at the worker by its message id.
type outboxStack struct {
	t      *testing.T
	db     *pgtest.Database
	st     *store.Postgres // the raw store: seeds and reads, writes no jobs
	qs     *qstashdev.Server
	front  *outage.Front
	runs   *workerRuns
	worker *proctest.Proc
	apiBin string
	apiEnv []string
}

func startOutboxStack(t *testing.T, workerEnv ...string) *outboxStack {
	t.Helper()
	s := &outboxStack{t: t, db: pgtest.Create(t)}
	if err := store.Migrate(context.Background(), s.db.Pool); err != nil {
		t.Fatal(err)
	}
	var err error
	if s.st, err = store.NewPostgres(s.db.Pool, store.Options{}); err != nil {
		t.Fatal(err)
	}
	rs := redistest.Start(t)
	if s.qs, err = qstashdev.New(qstashdev.Config{TimeScale: 0.01}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.qs.Close() })
	s.front = outage.Start(t, s.qs.Handler())
	workerPort := proctest.FreePort(t)
	s.runs = newWorkerRuns(t, "http://127.0.0.1:"+strconv.Itoa(workerPort))
	common := []string{
		"REDIS_URL=" + rs.URL(), "DATABASE_URL=" + s.db.URL, "QSTASH_URL=" + s.front.URL, "QSTASH_TOKEN=" + qstashdev.DevToken, "JOBWORKER_ENV=development",
		// Redis is not what these tests break: generous deadlines keep a
		// loaded machine from turning a slow answer into a 503.
		"REDIS_TIMEOUT=2s", "RATE_LIMIT_REDIS_TIMEOUT=2s", "CACHE_REDIS_TIMEOUT=2s",
		"WORKER_PUBLIC_URL=" + s.runs.url, "LOG_FORMAT=text", "LOG_LEVEL=warn", "SHUTDOWN_TIMEOUT=5s",
	}
	s.apiBin = proctest.Build(t, "github.com/digis/jobworker/cmd/api")
	s.apiEnv = append(common, "AUTH_JWT_SECRET="+outboxJWTSecret, "RATE_LIMIT_IP_SOURCE=direct",
		"RATE_LIMIT_OVERRIDES=tips:quick=1000000/1m,streams:start=1000000/1m,streams:stop=1000000/1m")
	s.worker = proctest.Start(t, proctest.Build(t, "github.com/digis/jobworker/cmd/worker"), nil,
		append(append(common, "PORT="+strconv.Itoa(workerPort), "STRIPE_WEBHOOK_SECRET="+chaosStripeSecret,
			"QSTASH_CURRENT_SIGNING_KEY="+qstashdev.DevCurrentSigningKey, "QSTASH_NEXT_SIGNING_KEY="+qstashdev.DevNextSigningKey),
			workerEnv...)...)
	s.worker.WaitStatus(t, "/readyz", http.StatusOK, 15*time.Second)
	return s
}

// startAPI starts one more api process on the stack.
func (s *outboxStack) startAPI(env ...string) *proctest.Proc {
	s.t.Helper()
	p := proctest.Start(s.t, s.apiBin, nil, append(append([]string{}, s.apiEnv...), env...)...)
	p.WaitStatus(s.t, "/readyz", http.StatusOK, 15*time.Second)
	return p
}

// seed makes n fans with money and a creator whose stream takes the tips,
// and m creators each with a live stream to stop and start.
func (s *outboxStack) seed(fans, creators int) (tipStream store.Stream, streams []store.Stream) {
	s.t.Helper()
	ctx := context.Background()
	tipStream, err := s.st.StartStream(ctx, store.StartStreamRequest{CreatorID: "tipped", Username: "tipped"})
	if err != nil {
		s.t.Fatal(err)
	}
	for i := range fans {
		if _, err := s.st.Credit(ctx, fanID(i), 1_000_000, "seed:"+fanID(i)); err != nil {
			s.t.Fatal(err)
		}
	}
	for i := range creators {
		st, err := s.st.StartStream(ctx, store.StartStreamRequest{CreatorID: fmt.Sprintf("creator-%02d", i), Username: fmt.Sprintf("chan_%02d", i)})
		if err != nil {
			s.t.Fatal(err)
		}
		streams = append(streams, st)
	}
	return tipStream, streams
}

func fanID(i int) string { return fmt.Sprintf("fan-%02d", i) }

func bearerFor(t *testing.T, user string) string {
	t.Helper()
	tok, err := auth.DevToken([]byte(outboxJWTSecret), user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return "Bearer " + tok
}

// call posts a JSON body and returns the status, or 0 when there was no
// answer (the process died).
func call(ctx context.Context, url, authz, idemKey, body string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", authz)
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

func tipJSON(streamID int64, amount int) string {
	return fmt.Sprintf(`{"amount":%d,"streamId":%d}`, amount, streamID)
}

// committedTips lists the ids of the tips in the database.
func (s *outboxStack) committedTips() []int64 {
	s.t.Helper()
	rows, err := s.db.Pool.Query(context.Background(), `SELECT id FROM tips ORDER BY id`)
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			s.t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// tipJobs are the keys of every committed tip's two follow-ups.
func (s *outboxStack) tipJobs() []string {
	var keys []string
	for _, id := range s.committedTips() {
		keys = append(keys, tipJobKey("tips.notify-creator", id), tipJobKey("tips.refresh-count", id))
	}
	return keys
}

func tipJobKey(kind string, tipID int64) string { return kind + ":" + strconv.FormatInt(tipID, 10) }

// outboxStates counts the outbox rows per state (and deduplicated ones).
func (s *outboxStack) outboxStates() map[string]int {
	s.t.Helper()
	rows, err := s.db.Pool.Query(context.Background(), `
		SELECT state, count(*) FROM jobworker_outbox GROUP BY state
		UNION ALL SELECT 'deduplicated', count(*) FROM jobworker_outbox WHERE deduplicated`)
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var state string
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			s.t.Fatal(err)
		}
		out[state] = n
	}
	return out
}

// waitExactlyOnce waits until every job in want ran, then checks each ran
// exactly once, that no other job ran, and that QStash dead-lettered
// nothing.
func (s *outboxStack) waitExactlyOnce(within time.Duration, want []string) {
	s.t.Helper()
	var missing string
	defer func() {
		if s.t.Failed() && missing != "" {
			s.t.Logf("last job missing: %s", missing)
		}
	}()
	testwait.For(s.t, within, fmt.Sprintf("all %d jobs to run", len(want)), func() bool {
		for _, k := range want {
			if s.runs.count(k) == 0 {
				missing = k
				return false
			}
		}
		return true
	})
	// Every row is recorded as sent: nothing is left that could still run.
	testwait.For(s.t, 30*time.Second, "every outbox row recorded as sent", func() bool {
		st := s.outboxStates()
		return st["pending"] == 0 && st["failed"] == 0
	})
	wanted := map[string]bool{}
	for _, k := range want {
		wanted[k] = true
		if n := s.runs.count(k); n != 1 {
			s.t.Errorf("%s ran %d times (message ids %v), want once", k, n, s.runs.ids(k))
		}
	}
	for k, n := range s.runs.all() {
		if !wanted[k] {
			s.t.Errorf("unexpected job %s ran %d times", k, n)
		}
	}
	q := qstash.NewClientWith(qstash.Options{Url: s.front.URL, Token: qstashdev.DevToken})
	dead, _, err := q.Dlq().List(qstash.ListDlqOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	if len(dead) != 0 {
		s.t.Errorf("%d messages dead-lettered", len(dead))
	}
}

// workerRuns is the worker's public URL in these tests: a proxy to the
// worker that records, per job, the QStash message ids the worker answered
// 200 for. The worker runs a message id at most once, so two ids for one
// job mean the job ran twice.
type workerRuns struct {
	url string

	mu   sync.Mutex
	runs map[string]map[string]bool // job key → message ids answered 200
}

func newWorkerRuns(t *testing.T, workerURL string) *workerRuns {
	t.Helper()
	w := &workerRuns{runs: map[string]map[string]bool{}}
	target, _ := url.Parse(workerURL)
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
		},
		ErrorHandler: func(rw http.ResponseWriter, _ *http.Request, _ error) { rw.WriteHeader(http.StatusBadGateway) },
	}
	front := outage.Start(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := &statusRecorder{ResponseWriter: rw}
		proxy.ServeHTTP(rec, r)
		if rec.status == http.StatusOK && strings.HasPrefix(r.URL.Path, "/jobs/") {
			w.record(jobKey(strings.TrimPrefix(r.URL.Path, "/jobs/"), body), r.Header.Get("Upstash-Message-Id"))
		}
	}))
	w.url = front.URL
	return w
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// jobKey names what a job is about: a tip's follow-up by tip id, a stream's
// by stream and state (each stream stops and starts once in these tests),
// a Stripe event by event id.
func jobKey(kind string, body []byte) string {
	var p map[string]any
	_ = json.Unmarshal(body, &p)
	switch kind {
	case "tips.notify-creator", "tips.refresh-count":
		return fmt.Sprintf("%s:%v", kind, p["tipId"])
	case "streams.notify-followers":
		return fmt.Sprintf("%s:%v:%v", kind, p["streamId"], p["live"] == true)
	case "stripe.event":
		return fmt.Sprintf("%s:%v", kind, p["event_id"])
	}
	return kind + ":" + string(body)
}

func (w *workerRuns) record(key, messageID string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.runs[key] == nil {
		w.runs[key] = map[string]bool{}
	}
	w.runs[key][messageID] = true
}

func (w *workerRuns) count(key string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.runs[key])
}

func (w *workerRuns) ids(key string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for id := range w.runs[key] {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func (w *workerRuns) all() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]int, len(w.runs))
	for k, ids := range w.runs {
		out[k] = len(ids)
	}
	return out
}

// outageLength is how long QStash stays down in TestOutboxQStashOutage:
// 5 s by default, JOBWORKER_OUTBOX_OUTAGE=30s for the full run recorded in
// docs/benchmarks.md.
func outageLength(t *testing.T) time.Duration {
	v := os.Getenv("JOBWORKER_OUTBOX_OUTAGE")
	if v == "" {
		return 5 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("JOBWORKER_OUTBOX_OUTAGE=%q is not a positive duration", v)
	}
	return d
}

// TestOutboxQStashOutage: QStash is unreachable while 100 tips, 20 stream
// starts and stops and 5 Stripe purchases arrive at the real api and worker
// processes (relays in both, the defaults). Every request is answered as
// usual — 201 for a tip, 200 for a stop, a start and a Stripe event, never
// a 503 — and once QStash is back every follow-up runs, each exactly once,
// counted at the worker.
func TestOutboxQStashOutage(t *testing.T) {
	t.Parallel()
	s := startOutboxStack(t)
	api := s.startAPI()
	tipStream, streams := s.seed(10, 10)
	down := outageLength(t)

	var bad sync.Map // request → status, for anything but the normal answer
	var tipsOK atomic.Int64
	tip := func(i int) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if code := call(ctx, api.URL+"/api/tips/quick", bearerFor(t, fanID(i%10)), "tip-"+strconv.Itoa(i), tipJSON(tipStream.ID, 1+i%7)); code != http.StatusCreated {
			bad.Store(fmt.Sprintf("tip %d", i), code)
		} else {
			tipsOK.Add(1)
		}
	}
	// Ten tips while QStash is up, 80 tips, 20 stream changes and 5 Stripe
	// purchases spread over the outage, ten more after it.
	for i := range 10 {
		tip(i)
	}
	s.front.Down()
	outageStart := time.Now()
	var wg sync.WaitGroup
	pace := down * 8 / 10 / 80
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 10; i < 90; i++ {
			tip(i)
			time.Sleep(pace) // the load's pace across the outage, not a wait for a result
		}
	}()
	for _, st := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			authz := bearerFor(t, st.CreatorID)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second+down)
			defer cancel()
			time.Sleep(down / 4) // into the outage: the load's schedule
			if code := call(ctx, api.URL+"/api/streams/stop", authz, "", fmt.Sprintf(`{"streamId":%d}`, st.ID)); code != http.StatusOK {
				bad.Store("stop "+st.Username, code)
			}
			time.Sleep(down / 4)
			if code := call(ctx, api.URL+"/api/streams/start", authz, "", `{"username":"`+st.Username+`","title":"back"}`); code != http.StatusOK {
				bad.Store("start "+st.Username, code)
			}
		}()
	}
	var stripeJobs []string
	for i := range 5 {
		id := fmt.Sprintf("evt_outage_%d", i)
		stripeJobs = append(stripeJobs, "stripe.event:"+id)
		ev := chaosEvent(id, appjobs.StripePaymentSucceeded, map[string]any{
			"id": "pi_outage_" + strconv.Itoa(i), "object": "payment_intent", "amount": 1000, "status": "succeeded",
			"metadata": map[string]string{appjobs.MetadataUserID: "buyer-" + strconv.Itoa(i), appjobs.MetadataTokens: "100"},
		})
		if code := stripeOnce(s.worker.URL, ev); code != http.StatusOK {
			bad.Store("stripe "+id, code)
		}
	}
	wg.Wait()
	time.Sleep(time.Until(outageStart.Add(down))) // the rest of the outage: its length, not a wait for a result
	s.front.Up()
	upAt := time.Now()
	for i := 90; i < 100; i++ {
		tip(i)
	}
	bad.Range(func(k, v any) bool { t.Errorf("%s answered %v during the outage", k, v); return true })
	if t.Failed() {
		t.FailNow()
	}

	want := append(s.tipJobs(), stripeJobs...)
	for _, st := range streams {
		for _, live := range []bool{false, true} {
			want = append(want, fmt.Sprintf("streams.notify-followers:%d:%v", st.ID, live))
		}
	}
	if n := tipsOK.Load(); n != 100 || len(s.committedTips()) != 100 {
		t.Fatalf("%d tips answered 201, %d committed; want 100", n, len(s.committedTips()))
	}
	s.waitExactlyOnce(60*time.Second, want)
	t.Logf("QStash down %s; %d jobs, each run once, all run %s after QStash came back",
		down, len(want), time.Since(upAt).Round(time.Millisecond))
	for i := range 5 {
		if b, err := s.st.Balance(context.Background(), "buyer-"+strconv.Itoa(i)); err != nil || b != 100 {
			t.Errorf("buyer-%d holds %d (%v), want 100", i, b, err)
		}
	}
}

// stripeOnce posts a signed Stripe event once and returns the status.
func stripeOnce(workerURL string, ev []byte) int {
	req, _ := http.NewRequest(http.MethodPost, workerURL+"/webhooks/stripe", bytes.NewReader(ev))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Stripe-Signature", webhookstest.StripeSignature(chaosStripeSecret, ev, time.Now()))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// tipLoad sends tips from 8 clients, each with its own fan, to the api
// processes in turn until stop is closed; it returns the keys answered 201.
func tipLoad(t *testing.T, apis []*proctest.Proc, streamID int64, stop <-chan struct{}) (wait func() []string, answered *atomic.Int64) {
	var mu sync.Mutex
	var created []string
	answered = new(atomic.Int64)
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			authz := bearerFor(t, fanID(c))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("load-%d-%d", c, i)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				code := call(ctx, apis[(c+i)%len(apis)].URL+"/api/tips/quick", authz, key, tipJSON(streamID, 1))
				cancel()
				if code == http.StatusCreated {
					mu.Lock()
					created = append(created, key)
					mu.Unlock()
					answered.Add(1)
				}
			}
		}()
	}
	return func() []string { wg.Wait(); return created }, answered
}

// TestOutboxAPIKilledBetweenCommitAndPublish: tips flow into a real api
// process whose relay is the only one (the worker's is off). QStash accepts
// the relay's batch, but its answer is held, and the api is SIGKILLed: the
// batch is in QStash and not recorded as sent, the rows committed since are
// not published, requests are in flight. After a new api process starts on
// the same database, every committed tip's follow-ups run exactly once.
func TestOutboxAPIKilledBetweenCommitAndPublish(t *testing.T) {
	t.Parallel()
	s := startOutboxStack(t, "OUTBOX_RELAY=off")
	api := s.startAPI()
	tipStream, _ := s.seed(8, 0)

	held := make(chan struct{})
	release := make(chan struct{})
	var holding atomic.Bool
	s.front.Wrap(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		publish := r.URL.Path == "/v2/batch" || strings.HasPrefix(r.URL.Path, "/v2/publish/")
		if !publish || !holding.CompareAndSwap(false, true) {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(httputilDiscard{}, r) // QStash has the jobs now
		close(held)
		<-release // the answer goes to a process that is gone
		w.WriteHeader(http.StatusServiceUnavailable)
	})

	stop := make(chan struct{})
	wait, answered := tipLoad(t, []*proctest.Proc{api}, tipStream.ID, stop)
	testwait.For(t, 30*time.Second, "QStash to accept a batch and tips to keep committing", func() bool {
		select {
		case <-held:
			return answered.Load() >= 50
		default:
			return false
		}
	})
	if err := api.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	api.Wait(t, 10*time.Second)
	close(stop)
	created := wait()
	close(release)
	s.front.Wrap(nil)
	st := s.outboxStates()
	t.Logf("killed with %d tips answered, %d committed; outbox %v", len(created), len(s.committedTips()), st)
	if st["pending"] == 0 {
		t.Fatal("nothing was pending at the kill: the test did not hit the moment it is about")
	}

	s.startAPI()
	s.waitExactlyOnce(60*time.Second, s.tipJobs())
	if n := s.outboxStates()["deduplicated"]; n == 0 {
		t.Error("no row was republished after QStash had accepted it: the kill came too early")
	}
	// Sanity: every tip answered 201 is among the committed ones checked.
	var n int
	if err := s.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM tips`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n < len(created) {
		t.Fatalf("%d tips committed, but %d were answered 201", n, len(created))
	}
}

// httputilDiscard is a ResponseWriter that throws the answer away.
type httputilDiscard struct{}

func (httputilDiscard) Header() http.Header         { return http.Header{} }
func (httputilDiscard) Write(b []byte) (int, error) { return len(b), nil }
func (httputilDiscard) WriteHeader(int)             {}

// TestOutboxTwoRelaysPublishEachRowOnce: two real api processes on one
// database, each running its relay, take tips at once; both relays are
// woken by every commit. QStash is given each row exactly once (counted by
// deduplication id at QStash's door), both relays did part of the work, and
// every follow-up runs once.
func TestOutboxTwoRelaysPublishEachRowOnce(t *testing.T) {
	t.Parallel()
	s := startOutboxStack(t, "OUTBOX_RELAY=off")
	apis := []*proctest.Proc{s.startAPI(), s.startAPI()}
	tipStream, _ := s.seed(8, 0)

	var mu sync.Mutex
	published := map[string]int{} // deduplication id → times QStash was given it
	s.front.Wrap(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		var ids []string
		switch {
		case r.URL.Path == "/v2/batch":
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			var items []struct {
				Headers map[string]string `json:"headers"`
			}
			_ = json.Unmarshal(body, &items)
			for _, it := range items {
				for k, v := range it.Headers {
					if strings.EqualFold(k, "Upstash-Deduplication-Id") {
						ids = append(ids, v)
					}
				}
			}
		case strings.HasPrefix(r.URL.Path, "/v2/publish/"):
			ids = append(ids, r.Header.Get("Upstash-Deduplication-Id"))
		}
		if len(ids) > 0 {
			time.Sleep(2 * time.Millisecond) // a network's round trip: relays overlap more
		}
		next.ServeHTTP(w, r)
		mu.Lock()
		for _, id := range ids {
			published[id]++
		}
		mu.Unlock()
	})

	stop := make(chan struct{})
	wait, answered := tipLoad(t, apis, tipStream.ID, stop)
	testwait.For(t, 60*time.Second, "300 tips", func() bool { return answered.Load() >= 300 })
	close(stop)
	wait()
	want := s.tipJobs()
	s.waitExactlyOnce(60*time.Second, want)

	mu.Lock()
	defer mu.Unlock()
	if len(published) != len(want) {
		t.Errorf("QStash was given %d distinct jobs, want %d", len(published), len(want))
	}
	for id, n := range published {
		if n != 1 {
			t.Errorf("QStash was given %s %d times", id, n)
		}
	}
	if n := s.outboxStates()["deduplicated"]; n != 0 {
		t.Errorf("%d rows were published twice (QStash deduplicated them)", n)
	}
	for i, p := range apis {
		n := metrictest.Scrape(t, p.MetricsURL, `jobworker_outbox_published_total{job="tips.notify-creator",result="ok"}`)
		if n == 0 {
			t.Errorf("api %d's relay published nothing: the relays did not share the work", i)
		}
		t.Logf("api %d's relay published %v tips.notify-creator jobs", i, n)
	}
}
