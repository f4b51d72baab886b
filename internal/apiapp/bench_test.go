package apiapp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/digis/jobworker/internal/apiapp"
	"github.com/digis/jobworker/internal/cputime"
	"github.com/digis/jobworker/internal/metrictest"
	"github.com/digis/jobworker/internal/outage"
	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/process"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
)

// BenchmarkStatus measures GET /api/streams/status answered from the cache
// (one Redis GET, rate-limit decision, per-viewer part) anonymous and with a bearer token, against GET /healthz
// through the same server and loopback client, the baseline.
//
//	go test -run '^$' -bench . -benchtime 2000x -count 3 ./internal/apiapp
func BenchmarkStatus(b *testing.B) {
	bn := setup(b, map[string]string{"RATE_LIMIT_OVERRIDES": "streams:status=100000000/1m"})
	tok := token(b, bn.fan)
	if a, _ := bn.status(b, bn.api(), bn.username, tok); a.status != http.StatusOK {
		b.Fatalf("warm-up: %d", a.status)
	}
	b.Run("healthz", func(b *testing.B) {
		for b.Loop() {
			if a := req(b, http.MethodGet, bn.api()+"/healthz", ""); a.status != http.StatusOK {
				b.Fatal(a.status)
			}
		}
	})
	b.Run("status-cached-anonymous", func(b *testing.B) {
		for b.Loop() {
			if a, _ := bn.status(b, bn.api(), bn.username, ""); a.status != http.StatusOK {
				b.Fatal(a.status)
			}
		}
	})
	b.Run("status-cached", func(b *testing.B) {
		for b.Loop() {
			if a, _ := bn.status(b, bn.api(), bn.username, tok); a.status != http.StatusOK {
				b.Fatal(a.status)
			}
		}
	})
}

// plainStore hides the *store.Postgres behind the interface, so Build takes
// the path of a store without transactions: the follow-ups are published
// right after the commit, in the request. It is the baseline the outbox is
// measured against (the API before issue #16).
type plainStore struct{ store.Store }

// tipBench is the tip route under load on the production wiring, two API
// instances on one PostgreSQL and one Redis: one writing the follow-ups to
// the outbox (its relay running), one publishing them after the commit.
// QStash (qstashdev) sits behind a front that notes when QStash answered
// for each tip's tips.notify-creator job; the worker is a sink that answers
// 200, so deliveries cost the same in both modes.
type tipBench struct {
	apis      map[string]string // mode → base URL
	fans      []string          // bearer tokens, one per client
	streams   []int64           // one stream per client
	accepted  *acceptLog
	delivered atomic.Int64
	pool      *pgxpool.Pool // the database every instance uses
}

const (
	benchOutbox   = "outbox"
	benchBaseline = "baseline=publish-after-commit"
	// benchNotify writes the jobs with the NOTIFY in the tip's transaction.
	benchNotify = "outbox+notify-in-tx"
	// benchRowPerJob writes a tip's two jobs as two rows (the layout before
	// multi-job rows).
	benchRowPerJob = "outbox+row-per-job"
	// benchConc2 runs the API's relay with Concurrency 2.
	benchConc2   = "outbox+relay-concurrency=2"
	benchClients = 16
)

func setupTipBench(b *testing.B) *tipBench {
	b.Helper()
	tb := &tipBench{apis: map[string]string{}, accepted: newAcceptLog()}
	rs := redistest.Start(b)
	qs := qstashdevtest.Start(b, qstashdev.Config{TimeScale: 0.001})
	front := outage.Start(b, qs.Handler())
	front.Wrap(tb.accepted.record)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tb.delivered.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	b.Cleanup(sink.Close)
	pool := pgtest.New(b)
	tb.pool = pool
	pg, err := store.NewPostgres(pool, store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := range benchClients {
		fan, creator := fmt.Sprintf("bench-fan-%02d", i), fmt.Sprintf("bench-creator-%02d", i)
		if _, err := pg.Credit(ctx, fan, store.MaxCreditAmount, "seed:"+fan); err != nil {
			b.Fatal(err)
		}
		st, err := pg.StartStream(ctx, store.StartStreamRequest{CreatorID: creator, Username: fmt.Sprintf("bench_%02d", i)})
		if err != nil {
			b.Fatal(err)
		}
		tb.fans = append(tb.fans, token(b, fan))
		tb.streams = append(tb.streams, st.ID)
	}
	env := map[string]string{
		"METRICS_TOKEN": metrictest.Token, "REDIS_URL": rs.URL(), "QSTASH_URL": front.URL, "QSTASH_TOKEN": qstashdev.DevToken, "JOBWORKER_ENV": "development", "WORKER_PUBLIC_URL": sink.URL,
		"AUTH_JWT_SECRET": testSecret, "RATE_LIMIT_IP_SOURCE": "direct", "RATE_LIMIT_OVERRIDES": "tips:quick=1000000000/1m",
		"LOG_LEVEL": "error", "DATABASE_URL": "memory", // the store is passed in directly
		// Generous Redis deadlines: on the shared 2 cores a load spike
		// otherwise turns a tip into a 503 and fails the run.
		"REDIS_TIMEOUT": "2s", "RATE_LIMIT_REDIS_TIMEOUT": "2s",
	}
	cfg, err := apiapp.LoadConfig(envMap(env))
	if err != nil {
		b.Fatal(err)
	}
	for mode, st := range map[string]store.Store{benchOutbox: pg, benchBaseline: plainStore{pg}, benchNotify: pg, benchRowPerJob: pg, benchConc2: pg} {
		build := apiapp.Build
		switch mode {
		case benchNotify:
			build = apiapp.BuildNotifyingInTx
		case benchRowPerJob:
			build = apiapp.BuildRowPerJob
		case benchConc2:
			build = func(cfg apiapp.Config, deps apiapp.Deps) (*process.Process, error) {
				return apiapp.BuildRelayConcurrency(cfg, deps, 2)
			}
		}
		p, err := build(cfg, apiapp.Deps{Store: st})
		if err != nil {
			b.Fatal(err)
		}
		ln := listen(b)
		serve(b, ln, p)
		tb.apis[mode] = "http://" + ln.Addr().String()
	}
	return tb
}

// acceptLog notes, per tip, when QStash answered the publish carrying its
// tips.notify-creator job, and wakes whoever waits for it.
type acceptLog struct {
	rtt     atomic.Int64 // a delay before each publish call, as a network's
	mu      sync.Mutex
	at      map[int64]time.Time
	waiters map[int64]chan struct{}
	n       int // jobs accepted, both kinds
}

func newAcceptLog() *acceptLog {
	return &acceptLog{at: map[int64]time.Time{}, waiters: map[int64]chan struct{}{}}
}

// record is the QStash front's wrapper: it serves the call, then notes the
// tips in it.
func (a *acceptLog) record(w http.ResponseWriter, r *http.Request, next http.Handler) {
	type item struct {
		Destination string  `json:"destination"`
		Body        *string `json:"body"`
	}
	var items []item
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	switch {
	case r.URL.Path == "/v2/batch":
		_ = json.Unmarshal(body, &items)
	case strings.HasPrefix(r.URL.Path, "/v2/publish/"):
		s := string(body)
		items = []item{{Destination: r.URL.Path, Body: &s}}
	}
	if d := time.Duration(a.rtt.Load()); d > 0 && len(items) > 0 {
		time.Sleep(d)
	}
	next.ServeHTTP(w, r)
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, it := range items {
		a.n++
		if !strings.HasSuffix(it.Destination, "/jobs/tips.notify-creator") || it.Body == nil {
			continue
		}
		var job struct {
			TipID int64 `json:"tipId"`
		}
		if json.Unmarshal([]byte(*it.Body), &job) != nil {
			continue
		}
		if _, seen := a.at[job.TipID]; !seen {
			a.at[job.TipID] = now
			if ch := a.waiters[job.TipID]; ch != nil {
				close(ch)
				delete(a.waiters, job.TipID)
			}
		}
	}
}

// wait returns when QStash accepted tip id's job.
func (a *acceptLog) wait(id int64, within time.Duration) (time.Time, bool) {
	a.mu.Lock()
	if t, ok := a.at[id]; ok {
		a.mu.Unlock()
		return t, true
	}
	ch := make(chan struct{})
	a.waiters[id] = ch
	a.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(within):
		return time.Time{}, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.at[id], true
}

func (a *acceptLog) accepted() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

// sample is one tip: when it was sent, answered 201, and its job accepted
// by QStash.
type sample struct {
	id               int64
	sent, answered   time.Time
	acceptedByQStash time.Time
}

// tipOnce sends one tip and returns its sample (the acceptance filled in
// later).
func (tb *tipBench) tipOnce(b *testing.B, client *http.Client, base string, c int, key string) sample {
	body := `{"amount":1,"streamId":` + strconv.FormatInt(tb.streams[c], 10) + `}`
	r, _ := http.NewRequest(http.MethodPost, base+apiapp.QuickTipRoute, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+tb.fans[c])
	r.Header.Set("Idempotency-Key", key)
	s := sample{sent: time.Now()}
	res, err := client.Do(r)
	if err != nil {
		b.Error(err)
		return s
	}
	var tip apiapp.TipResponse
	err = json.NewDecoder(res.Body).Decode(&tip)
	res.Body.Close()
	s.answered = time.Now()
	if res.StatusCode != http.StatusCreated || err != nil {
		b.Errorf("tip: %d %v", res.StatusCode, err)
	}
	s.id = tip.ID
	return s
}

// BenchmarkTipRoute: POST /api/tips/quick over HTTP, writing the
// follow-ups to the outbox in the tip's transaction against publishing them
// after the commit (the baseline), alternating in one run. clients=N tip N
// streams from N fans at once; hot=16 tip one stream (its creator's wallet
// row serialises the transactions), and for both the outbox is also
// measured with the NOTIFY in the tip's transaction (outbox+notify-in-tx,
// the package's default); rtt=5ms adds 5 ms to every call to
// QStash, as a network to the real QStash would. With wait, each client
// waits for its tip's job to be accepted by QStash before its next tip: the
// commit → accepted latency without queueing behind other tips.
//
// Reported: tips/s; request, the tip's own latency (sent → 201);
// 201→accepted and sent→accepted, the time from the 201
// (the commit is just before it) and from the request to QStash answering
// the publish of the tip's tips.notify-creator job (≤ 0 for the baseline,
// which publishes before answering); catch-up-ms, from the last 201 until
// QStash accepted every job; rows/round, the relay's batches; cpu-ms/tip,
// the whole machine's busy CPU time per tip (noisy: the machine is shared).
//
// Run it a few times: each run measures both modes of a row one after the
// other, on the same database.
//
//	for i in 1 2 3; do go test -run '^$' -bench TipRoute -benchtime 2000x ./internal/apiapp; done
func BenchmarkTipRoute(b *testing.B) {
	tb := setupTipBench(b)
	run := 0
	for _, load := range []struct {
		name    string
		clients int
		hot     bool
		wait    bool
		rtt     time.Duration
		notify  bool // also measure benchNotify
		perJob  bool // also measure benchRowPerJob
	}{
		{name: "clients=1/wait", clients: 1, wait: true},
		{name: "clients=8/wait", clients: 8, wait: true},
		{name: "clients=1", clients: 1, perJob: true},
		{name: "clients=16", clients: benchClients, notify: true, perJob: true},
		{name: "hot=16", clients: benchClients, hot: true, notify: true},
		{name: "rtt=5ms/clients=1", clients: 1, rtt: 5 * time.Millisecond},
		{name: "rtt=5ms/clients=16", clients: benchClients, rtt: 5 * time.Millisecond},
	} {
		modes := []string{benchBaseline, benchOutbox}
		if load.perJob {
			modes = append(modes, benchRowPerJob)
		}
		if load.notify {
			modes = append(modes, benchNotify)
		}
		for _, mode := range modes {
			b.Run(load.name+"/"+mode, func(b *testing.B) {
				run++
				base := tb.apis[mode]
				tb.accepted.rtt.Store(int64(load.rtt))
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: load.clients}}
				defer client.CloseIdleConnections()
				before := tb.accepted.accepted()
				rounds0 := metrictest.Scrape(b, base, "jobworker_outbox_batch_size_count")
				rows0 := metrictest.Scrape(b, base, "jobworker_outbox_batch_size_sum")
				samples := make([][]sample, load.clients)
				var next atomic.Int64
				cpu0 := machineCPU(b)
				start := time.Now()
				var wg sync.WaitGroup
				for c := range load.clients {
					wg.Go(func() {
						stream := c
						if load.hot {
							stream = 0
						}
						for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
							s := tb.tipOnce(b, client, base, stream, fmt.Sprintf("%d-%d-%d", run, c, i))
							if load.wait {
								var ok bool
								if s.acceptedByQStash, ok = tb.accepted.wait(s.id, 10*time.Second); !ok {
									b.Error("a tip's job never reached QStash")
									return
								}
							}
							samples[c] = append(samples[c], s)
						}
					})
				}
				wg.Wait()
				elapsed := time.Since(start)
				cpu := machineCPU(b) - cpu0
				b.StopTimer()
				// Catch-up: until QStash has every job of this run (two per tip).
				for tb.accepted.accepted() < before+2*b.N {
					time.Sleep(time.Millisecond) // polling a counter the front updates
					if time.Since(start) > elapsed+time.Minute {
						b.Fatal("jobs never reached QStash")
					}
				}
				b.ReportMetric(float64(time.Since(start)-elapsed)/1e6, "catch-up-ms")
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tips/s")
				b.ReportMetric(float64(cpu)/float64(time.Millisecond)/float64(b.N), "cpu-ms/tip")
				if mode != benchBaseline {
					rounds := metrictest.Scrape(b, base, "jobworker_outbox_batch_size_count") - rounds0
					rows := metrictest.Scrape(b, base, "jobworker_outbox_batch_size_sum") - rows0
					b.ReportMetric(rows/max(rounds, 1), "rows/round")
				}
				var request, fromAnswer, fromSent []time.Duration
				for _, cs := range samples {
					for _, s := range cs {
						request = append(request, s.answered.Sub(s.sent))
						at := s.acceptedByQStash
						if at.IsZero() {
							at, _ = tb.accepted.wait(s.id, time.Second)
						}
						fromAnswer = append(fromAnswer, at.Sub(s.answered))
						fromSent = append(fromSent, at.Sub(s.sent))
					}
				}
				report(b, "request", request)
				report(b, "201→accepted", fromAnswer)
				report(b, "sent→accepted", fromSent)
			})
		}
	}
}

// backendsCPU is the CPU time so far of the PostgreSQL backends connected
// to the benchmark's database (/proc/<pid>/schedstat, nanoseconds on CPU):
// the other databases on a shared server are not counted, nor are the
// server's own processes (WAL writer, checkpointer).
func (tb *tipBench) backendsCPU(b *testing.B) time.Duration {
	rows, err := tb.pool.Query(context.Background(), `SELECT pid FROM pg_stat_activity WHERE datname = current_database()`)
	if err != nil {
		b.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for _, pid := range pids {
		raw, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/schedstat")
		if err != nil {
			continue // a backend that just exited, or a server elsewhere
		}
		f := strings.Fields(string(raw))
		if len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			total += time.Duration(ns)
		}
	}
	return total
}

// machineCPU is the busy CPU time of the whole machine so far (/proc/stat:
// every field but idle and iowait).
func machineCPU(b *testing.B) time.Duration {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Skip("no /proc/stat:", err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	var busy int64
	for i, f := range strings.Fields(line)[1:] {
		n, _ := strconv.ParseInt(f, 10, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return time.Duration(busy) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// report adds the p50 and p99 of d, in ms, to the benchmark's line.
func report(b *testing.B, name string, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	q := func(p float64) float64 { return float64(d[int(p*float64(len(d)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), name+"-p50-ms")
	b.ReportMetric(q(0.99), name+"-p99-ms")
}

// BenchmarkTipRouteRatio is BenchmarkTipRoute's throughput comparison made
// robust to a shared machine: per load, the modes alternate in chunks of
// tips (A B C C B A A B C ...), so a burst of other work hits all, and the
// ratio to the baseline is printed directly. A chunk's time runs from its
// first request to its last 201; the relay drains the chunk's jobs before
// the next chunk starts (not timed, as in BenchmarkTipRoute). Also
// reported: 201→accepted over all chunks, and at clients=16 the same with
// the relay's Concurrency at 2; and the CPU time per tip of this process
// (Go: load generator, APIs, relays, qstash-dev) and of the database's
// PostgreSQL backends, from a chunk's start until QStash accepted its jobs,
// with the ratio of the totals (outbox/baseline-cpu). CPU time varies far
// less than throughput when other work shares the machine, and at
// saturation throughput follows it.
//
//	go test -run '^$' -bench TipRouteRatio -benchtime 2000x ./internal/apiapp
func BenchmarkTipRouteRatio(b *testing.B) {
	tb := setupTipBench(b)
	const chunks = 10
	run := 0
	for _, load := range []struct {
		name    string
		clients int
		hot     bool
		rtt     time.Duration
		conc2   bool // also measure benchConc2
	}{
		{name: "clients=1", clients: 1},
		{name: "clients=16", clients: benchClients, conc2: true},
		{name: "hot=16", clients: benchClients, hot: true},
		{name: "rtt=5ms/clients=1", clients: 1, rtt: 5 * time.Millisecond},
	} {
		b.Run(load.name, func(b *testing.B) {
			modes := []string{benchBaseline, benchOutbox, benchRowPerJob}
			if load.conc2 {
				modes = append(modes, benchConc2)
			}
			elapsed := map[string]time.Duration{}
			goCPU, pgCPU := map[string]time.Duration{}, map[string]time.Duration{}
			tips := map[string]int{}
			fromAnswer := map[string][]time.Duration{}
			tb.accepted.rtt.Store(int64(load.rtt))
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: load.clients}}
			defer client.CloseIdleConnections()
			per := max(b.N/chunks, 1)
			for ch := range chunks {
				order := modes
				if ch%2 == 1 {
					order = slices.Clone(modes)
					slices.Reverse(order)
				}
				for _, mode := range order {
					run++
					goCPU0, pgCPU0 := cputime.Self(), tb.backendsCPU(b)
					before := tb.accepted.accepted()
					samples := make([][]sample, load.clients)
					var next atomic.Int64
					start := time.Now()
					var wg sync.WaitGroup
					for c := range load.clients {
						wg.Go(func() {
							stream := c
							if load.hot {
								stream = 0
							}
							for i := next.Add(1); i <= int64(per); i = next.Add(1) {
								s := tb.tipOnce(b, client, tb.apis[mode], stream, fmt.Sprintf("ratio-%d-%d-%d", run, c, i))
								samples[c] = append(samples[c], s)
							}
						})
					}
					wg.Wait()
					elapsed[mode] += time.Since(start)
					// The relay drains the chunk before the next one starts,
					// so its backlog never runs on another chunk's clock.
					for tb.accepted.accepted() < before+2*per {
						time.Sleep(100 * time.Microsecond) // polling a counter the front updates
						if time.Since(start) > time.Minute {
							b.Fatal("jobs never reached QStash")
						}
					}
					// CPU until the jobs are accepted: the relay's work counts.
					goCPU[mode] += cputime.Self() - goCPU0
					pgCPU[mode] += tb.backendsCPU(b) - pgCPU0
					tips[mode] += per
					if mode != benchBaseline {
						for _, cs := range samples {
							for _, s := range cs {
								at, _ := tb.accepted.wait(s.id, time.Second)
								fromAnswer[mode] = append(fromAnswer[mode], at.Sub(s.answered))
							}
						}
					}
				}
			}
			rate := func(m string) float64 { return float64(tips[m]) / elapsed[m].Seconds() }
			b.ReportMetric(rate(benchBaseline), "baseline-tips/s")
			b.ReportMetric(rate(benchOutbox), "outbox-tips/s")
			b.ReportMetric(rate(benchOutbox)/rate(benchBaseline), "outbox/baseline")
			b.ReportMetric(rate(benchRowPerJob)/rate(benchBaseline), "row-per-job/baseline")
			perTip := func(d map[string]time.Duration, m string) float64 {
				return float64(d[m].Microseconds()) / float64(tips[m])
			}
			for _, m := range []struct{ mode, name string }{{benchBaseline, "baseline"}, {benchOutbox, "outbox"}, {benchRowPerJob, "row-per-job"}} {
				b.ReportMetric(perTip(goCPU, m.mode), m.name+"-go-cpu-µs/tip")
				b.ReportMetric(perTip(pgCPU, m.mode), m.name+"-pg-cpu-µs/tip")
			}
			cpu := func(m string) float64 { return perTip(goCPU, m) + perTip(pgCPU, m) }
			b.ReportMetric(cpu(benchOutbox)/cpu(benchBaseline), "outbox/baseline-cpu")
			b.ReportMetric(cpu(benchRowPerJob)/cpu(benchBaseline), "row-per-job/baseline-cpu")
			report(b, "outbox-201→accepted", fromAnswer[benchOutbox])
			if load.conc2 {
				b.ReportMetric(rate(benchConc2)/rate(benchBaseline), "conc2/baseline")
				report(b, "conc2-201→accepted", fromAnswer[benchConc2])
			}
		})
	}
}
