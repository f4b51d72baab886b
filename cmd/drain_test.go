package cmd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/proctest"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
)

// TestDrain is the end-to-end drain harness of docs/benchmarks.md
// (qstash-dev section, issue #21): how fast N demo.hello jobs published to
// the real qstash-dev binary are delivered to the real worker binary, at a
// given concurrency toward the worker, against an asynq-shaped queue in
// the same run and on the same redis-server.
//
//   - qstash-dev → worker: the jobs are published through POST /v2/batch
//     (1,000 per request) under one flow-control key of parallelism C,
//     which is how qstash-dev (and QStash) limits the attempts running
//     toward a destination at once. The drain time runs from the first
//     publish request to the moment qstash-dev reports nothing pending
//     (every delivery answered 2xx by the worker; none dead-lettered).
//   - baseline: the architecture of asynq (hibiken/asynq) without its
//     dependency: the jobs are pushed onto a Redis list (pipelined, 1,000
//     per round trip) and C go-redis workers take them with BLMOVE onto an
//     "active" list and acknowledge with LREM, doing nothing else. Drain
//     time: first push to last acknowledgement. It is lighter than asynq
//     (two plain commands per task where asynq runs two Lua scripts and
//     keeps task hashes and leases), so the ratio against it is
//     conservative.
//
// Runs alternate A B A B so machine noise hits both, and the test prints
// each run and the median ratio. Only figures are printed; nothing about
// speed is asserted. It runs only when asked:
//
//	JOBWORKER_DRAIN=10000 go test -run '^TestDrain$' -count=1 -v ./cmd/
//
// JOBWORKER_DRAIN_PAIRS (default 3) sets the A/B pairs per concurrency,
// JOBWORKER_DRAIN_CONC (default "16,64") the concurrencies.
func TestDrain(t *testing.T) {
	n := envInt(t, "JOBWORKER_DRAIN", 0)
	if n == 0 {
		t.Skip("set JOBWORKER_DRAIN=<jobs> to run the drain harness")
	}
	pairs := envInt(t, "JOBWORKER_DRAIN_PAIRS", 3)
	concs := []int{16, 64}
	if v := os.Getenv("JOBWORKER_DRAIN_CONC"); v != "" {
		concs = nil
		for f := range strings.SplitSeq(v, ",") {
			c, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || c <= 0 {
				t.Fatalf("JOBWORKER_DRAIN_CONC=%q: want concurrencies like 16,64", v)
			}
			concs = append(concs, c)
		}
	}

	rs := redistest.Start(t)
	workerBin := proctest.Build(t, "github.com/digis/jobworker/cmd/worker")
	qsBin := proctest.Build(t, "github.com/digis/jobworker/cmd/qstash-dev")
	qsPort := proctest.FreePort(t)
	qs := proctest.Start(t, qsBin, []string{"-port", strconv.Itoa(qsPort), "-log-level", "warn"}, "PORT="+strconv.Itoa(qsPort))
	qs.WaitStatus(t, "/v2/keys", http.StatusUnauthorized, 15*time.Second)
	wPort := proctest.FreePort(t)
	workerURL := "http://127.0.0.1:" + strconv.Itoa(wPort)
	workerEnv := []string{
		"PORT=" + strconv.Itoa(wPort), "REDIS_URL=" + rs.URL(), "WORKER_PUBLIC_URL=" + workerURL,
		"QSTASH_CURRENT_SIGNING_KEY=" + qstashdev.DevCurrentSigningKey,
		"QSTASH_NEXT_SIGNING_KEY=" + qstashdev.DevNextSigningKey,
		"STRIPE_WEBHOOK_SECRET=whsec_test", "QSTASH_URL=" + qs.URL, "QSTASH_TOKEN=" + qstashdev.DevToken,
		"DATABASE_URL=memory", "JOBWORKER_ENV=development", "OUTBOX_RELAY=off",
		// The worker's own defaults (LOG_LEVEL=info: one line per delivery)
		// unless the caller overrides them.
		"LOG_LEVEL=" + envOr("JOBWORKER_DRAIN_LOG_LEVEL", "info"), "LOG_FORMAT=json",
	}
	w := proctest.Start(t, workerBin, nil, workerEnv...)
	w.WaitHealthy(t)

	redisPID := rs.Client(t).InfoMap(context.Background(), "server").Item("Server", "process_id")
	d := &drainer{t: t, n: n, qsURL: qs.URL, workerURL: workerURL, redisAddr: rs.Addr(),
		pids: map[string]int{"qstash-dev": qs.Cmd.Process.Pid, "worker": w.Cmd.Process.Pid, "redis": atoi(t, redisPID), "harness": os.Getpid()}}
	d.warmUp()
	type result struct {
		qs, base       []float64
		qsCPU, baseCPU []map[string]float64 // CPU µs per job, by process
	}
	results := map[int]*result{}
	for _, c := range concs {
		results[c] = &result{}
		for p := range pairs {
			r := results[c]
			// Alternate which goes first, so neither always runs on a
			// machine the other has just warmed or loaded.
			runs := []func(){
				func() {
					before := d.cpu()
					r.qs = append(r.qs, d.qstashDev(c))
					r.qsCPU = append(r.qsCPU, d.cpuPerJob(before))
				},
				func() {
					before := d.cpu()
					r.base = append(r.base, d.redisList(c))
					r.baseCPU = append(r.baseCPU, d.cpuPerJob(before))
				},
			}
			if p%2 == 1 {
				slices.Reverse(runs)
			}
			for _, run := range runs {
				run()
			}
		}
	}
	t.Logf("drain of %d demo.hello jobs, jobs/s (external reference: asynq v0.26 drains 10k no-op tasks at 7.5–7.9k/s on this machine type)", n)
	for _, c := range concs {
		r := results[c]
		ratios := make([]float64, len(r.qs))
		for i := range r.qs {
			ratios[i] = r.qs[i] / r.base[i]
		}
		t.Logf("concurrency %d: qstash-dev→worker %s; redis-list baseline %s; ratio per pair %s; median qstash-dev→worker %.0f/s, baseline %.0f/s, ratio %.2f, vs asynq 7.5–7.9k/s %.2f–%.2f",
			c, fmtRates(r.qs), fmtRates(r.base), fmtRatios(ratios), median(r.qs), median(r.base), median(ratios),
			median(r.qs)/7900, median(r.qs)/7500)
		t.Logf("concurrency %d: CPU µs per job (median): qstash-dev→worker %s; baseline %s", c, fmtCPU(r.qsCPU), fmtCPU(r.baseCPU))
	}
}

// fmtCPU is the median CPU per job of each process over runs, and the sum.
func fmtCPU(runs []map[string]float64) string {
	var b strings.Builder
	total := 0.0
	for _, name := range []string{"qstash-dev", "worker", "redis", "harness"} {
		var xs []float64
		for _, r := range runs {
			xs = append(xs, r[name])
		}
		m := median(xs)
		if m < 0.5 {
			continue
		}
		total += m
		fmt.Fprintf(&b, "%s %.0f, ", name, m)
	}
	fmt.Fprintf(&b, "total %.0f", total)
	return b.String()
}

type drainer struct {
	t                           *testing.T
	n                           int
	qsURL, workerURL, redisAddr string
	round                       int
	pids                        map[string]int // process name → pid, for CPU accounting
}

// cpu reads each process's CPU time so far (user + system).
func (d *drainer) cpu() map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, pid := range d.pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue // not Linux: no CPU figures
		}
		// Fields after the parenthesised command: state is field 3,
		// utime and stime fields 14 and 15, in clock ticks (100 Hz).
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		ut, _ := strconv.Atoi(f[11])
		st, _ := strconv.Atoi(f[12])
		out[name] = time.Duration(ut+st) * 10 * time.Millisecond
	}
	return out
}

// cpuPerJob is the CPU each process used since before, in µs per job.
func (d *drainer) cpuPerJob(before map[string]time.Duration) map[string]float64 {
	out := map[string]float64{}
	for name, t := range d.cpu() {
		out[name] = float64((t - before[name]).Microseconds()) / float64(d.n)
	}
	return out
}

// warmUp sends a few deliveries and tasks through both paths so the
// first measured run does not pay for connections and page faults.
func (d *drainer) warmUp() {
	n := d.n
	d.n = min(n, 500)
	d.qstashDev(16)
	d.redisList(16)
	d.n = n
}

// qstashDev publishes d.n jobs to qstash-dev under one flow-control key of
// parallelism conc and returns jobs per second, from the first publish to
// nothing pending.
func (d *drainer) qstashDev(conc int) float64 {
	t := d.t
	d.round++
	key := "drain-" + strconv.Itoa(d.round)
	const perBatch = 1000
	var batches [][]byte
	for i := 0; i < d.n; i += perBatch {
		var b bytes.Buffer
		b.WriteByte('[')
		for j := i; j < min(i+perBatch, d.n); j++ {
			if j > i {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"destination":%q,"headers":{"Content-Type":"application/json","Upstash-Retries":"0","Upstash-Flow-Control-Key":%q,"Upstash-Flow-Control-Value":"parallelism=%d"},"body":"{\"name\":\"drain-%d-%d\"}"}`,
				d.workerURL+"/jobs/demo.hello", key, conc, d.round, j)
		}
		b.WriteByte(']')
		batches = append(batches, b.Bytes())
	}
	start := time.Now()
	for _, body := range batches {
		req, _ := http.NewRequest(http.MethodPost, d.qsURL+"/v2/batch", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		rb, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("batch publish: %d %s", res.StatusCode, rb)
		}
	}
	published := time.Since(start)
	st := qstashdevtest.AwaitIdleURL(t, d.qsURL, qstashdev.DevToken, 5*time.Minute)
	took := time.Since(start)
	t.Logf("qstash-dev→worker, %d jobs at concurrency %d: published in %v, drained in %v", d.n, conc, published.Round(time.Millisecond), took.Round(time.Millisecond))
	if st.Dead != 0 {
		t.Fatalf("%d deliveries dead-lettered: the worker refused them", st.Dead)
	}
	return float64(d.n) / took.Seconds()
}

// redisList is the asynq-shaped baseline: d.n tasks pushed onto a Redis
// list, conc workers moving each onto an active list (BLMOVE) and
// acknowledging it (LREM). Returns tasks per second, first push to last
// acknowledgement.
func (d *drainer) redisList(conc int) float64 {
	t := d.t
	d.round++
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: d.redisAddr, PoolSize: conc + 2, MinIdleConns: conc + 1})
	defer rdb.Close()
	pending, active := "drain:"+strconv.Itoa(d.round)+":pending", "drain:"+strconv.Itoa(d.round)+":active"
	// Open the pool's connections before the clock starts, as a running
	// asynq server would have them.
	var warm sync.WaitGroup
	for range conc + 1 {
		warm.Go(func() { rdb.Ping(ctx) })
	}
	warm.Wait()

	var acked atomic.Int64
	done := make(chan time.Time, 1)
	var errOnce sync.Once
	var firstErr error
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range conc {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				task, err := rdb.BLMove(ctx, pending, active, "RIGHT", "LEFT", time.Second).Result()
				if errors.Is(err, redis.Nil) {
					continue
				}
				if err == nil {
					err = rdb.LRem(ctx, active, 1, task).Err()
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				if acked.Add(1) == int64(d.n) {
					done <- time.Now()
				}
			}
		})
	}
	const perPipe = 1000
	start := time.Now()
	for i := 0; i < d.n; i += perPipe {
		pipe := rdb.Pipeline()
		for j := i; j < min(i+perPipe, d.n); j++ {
			pipe.LPush(ctx, pending, `{"type":"demo.hello","payload":{"name":"drain-`+strconv.Itoa(d.round)+`-`+strconv.Itoa(j)+`"}}`)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var end time.Time
	select {
	case end = <-done:
	case <-time.After(5 * time.Minute):
		t.Fatalf("baseline: %d of %d acknowledged in 5 minutes", acked.Load(), d.n)
	}
	close(stop)
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	if n, _ := rdb.LLen(ctx, active).Result(); n != 0 {
		t.Fatalf("baseline: %d tasks left active", n)
	}
	return float64(d.n) / end.Sub(start).Seconds()
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a number", name, v)
	}
	return n
}

func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtRates(xs []float64) string {
	var b strings.Builder
	for i, x := range xs {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%.0f", x)
	}
	return b.String()
}

func fmtRatios(xs []float64) string {
	var b strings.Builder
	for i, x := range xs {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%.2f", x)
	}
	return b.String()
}
