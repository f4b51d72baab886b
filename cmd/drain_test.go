package cmd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
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
// given concurrency toward the worker, against two asynq-shaped queues in
// the same run and on the same redis-server.
//
//   - qstash-dev → worker: the jobs are published through POST /v2/batch
//     (1,000 per request) under one flow-control key of parallelism C,
//     which is how qstash-dev (and QStash) limits the attempts running
//     toward a destination at once. The drain time runs from the first
//     publish request to the moment qstash-dev reports nothing pending
//     (every delivery answered 2xx by the worker; none dead-lettered).
//   - asynq-shaped: the Redis work asynq (hibiken/asynq) does per task,
//     without its dependency, in its architecture: a task hash and its id
//     pushed onto a pending list (one script per task, pipelined 1,000 per
//     round trip); one dispatching goroutine that takes a token of a
//     semaphore of C and dequeues with a script (id moved onto an active
//     list, hash marked active, a lease in a sorted set); a goroutine per
//     task that runs the no-op handler and acknowledges with a script
//     (off the active list and the lease set, hash deleted, processed
//     counters incremented). Drain time: first enqueue to last
//     acknowledgement. asynq itself also sleeps a second when it finds
//     its queues empty and keeps more state; this stand-in retries after
//     a millisecond, so it is, if anything, faster than asynq.
//   - redis-list: the floor of a Redis queue: a plain list drained by C
//     go-redis workers with BLMOVE onto an active list and LREM as
//     acknowledgement, nothing else.
//
// Runs rotate (A B C, B C A, ...) so machine noise hits all, and the test
// prints each run, the median ratios and the CPU each process used per
// job (from /proc: the least load-sensitive figure on a shared machine).
// Only figures are printed; nothing about speed is asserted. It runs only
// when asked:
//
//	JOBWORKER_DRAIN=10000 go test -run '^TestDrain$' -count=1 -v ./cmd/
//
// JOBWORKER_DRAIN_ROUNDS (default 3) sets the rounds per concurrency,
// JOBWORKER_DRAIN_CONC (default "16,64") the concurrencies,
// JOBWORKER_DRAIN_LOG_LEVEL (default info, the worker's default) the
// worker's LOG_LEVEL, and JOBWORKER_DRAIN_COMPARE_BIN a second qstash-dev
// executable (say, built from main) measured in the same rounds, for a
// before/after ratio.
func TestDrain(t *testing.T) {
	n := envInt(t, "JOBWORKER_DRAIN", 0)
	if n == 0 {
		t.Skip("set JOBWORKER_DRAIN=<jobs> to run the drain harness")
	}
	rounds := envInt(t, "JOBWORKER_DRAIN_ROUNDS", 3)
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
	startQS := func(bin string) *proctest.Proc {
		port := proctest.FreePort(t)
		qs := proctest.Start(t, bin, []string{"-port", strconv.Itoa(port), "-log-level", "warn"}, "PORT="+strconv.Itoa(port))
		qs.WaitStatus(t, "/v2/keys", http.StatusUnauthorized, 15*time.Second)
		return qs
	}
	qs := startQS(proctest.Build(t, "github.com/digis/jobworker/cmd/qstash-dev"))
	var qsOld *proctest.Proc
	if bin := os.Getenv("JOBWORKER_DRAIN_COMPARE_BIN"); bin != "" {
		qsOld = startQS(bin)
	}
	wPort := proctest.FreePort(t)
	workerURL := "http://127.0.0.1:" + strconv.Itoa(wPort)
	// The worker logs to a file, as a deployment's log collector would
	// take them, not into this process's memory.
	logFile := filepath.Join(t.TempDir(), "worker.log")
	w := proctest.Start(t, "/bin/sh", []string{"-c", `exec "$0" >"$1" 2>&1`, workerBin, logFile},
		"PORT="+strconv.Itoa(wPort), "REDIS_URL="+rs.URL(), "WORKER_PUBLIC_URL="+workerURL,
		"QSTASH_CURRENT_SIGNING_KEY="+qstashdev.DevCurrentSigningKey,
		"QSTASH_NEXT_SIGNING_KEY="+qstashdev.DevNextSigningKey,
		"STRIPE_WEBHOOK_SECRET=whsec_test", "QSTASH_URL="+qs.URL, "QSTASH_TOKEN="+qstashdev.DevToken,
		"DATABASE_URL=memory", "JOBWORKER_ENV=development", "OUTBOX_RELAY=off",
		"LOG_LEVEL="+envOr("JOBWORKER_DRAIN_LOG_LEVEL", "info"), "LOG_FORMAT=json")
	w.WaitHealthy(t)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("worker log (last 4 KiB):\n%s", b[max(0, len(b)-4096):])
		}
	})

	redisPID := rs.Client(t).InfoMap(context.Background(), "server").Item("Server", "process_id")
	d := &drainer{t: t, n: n, workerURL: workerURL, redisAddr: rs.Addr(),
		pids: map[string]int{"worker": w.Cmd.Process.Pid, "redis": atoi(t, redisPID), "harness": os.Getpid()}}
	kinds := []drainKind{
		{name: "qstash-dev", run: func(c int) float64 { return d.qstashDev(qs.URL, c) }, pid: qs.Cmd.Process.Pid},
		{name: "asynq-shaped", run: d.asynqShaped},
		{name: "redis-list", run: d.redisList},
	}
	if qsOld != nil {
		kinds = append(kinds, drainKind{name: "qstash-dev (compare)", run: func(c int) float64 { return d.qstashDev(qsOld.URL, c) }, pid: qsOld.Cmd.Process.Pid})
	}
	// Warm-up: connections, page faults, the worker's first requests.
	d.n = min(n, 500)
	for _, k := range kinds {
		k.run(16)
	}
	d.n = n

	type runs struct {
		rate []float64
		cpu  []map[string]float64 // CPU µs per job, by process
	}
	for _, c := range concs {
		res := make([]runs, len(kinds))
		for r := range rounds {
			for i := range kinds {
				k := (i + r) % len(kinds)
				kind := kinds[k]
				if kind.pid != 0 {
					d.pids["qstash-dev"] = kind.pid
				} else {
					delete(d.pids, "qstash-dev")
				}
				before := d.cpu()
				res[k].rate = append(res[k].rate, kind.run(c))
				res[k].cpu = append(res[k].cpu, d.cpuPerJob(before))
			}
		}
		t.Logf("concurrency %d, %d jobs, %d rounds (external reference: asynq v0.26 drains 10k no-op tasks at 7.5–7.9k/s on this machine type):", c, n, rounds)
		for k, kind := range kinds {
			line := fmt.Sprintf("  %-22s jobs/s %s (median %.0f)", kind.name, fmtRates(res[k].rate), median(res[k].rate))
			if k > 0 {
				line += fmt.Sprintf("; qstash-dev / this: %s (median %.2f)", fmtRatios(ratios(res[0].rate, res[k].rate)), median(ratios(res[0].rate, res[k].rate)))
			}
			t.Logf("%s; CPU µs/job: %s", line, fmtCPU(res[k].cpu))
		}
		t.Logf("  qstash-dev / asynq's documented 7.5–7.9k/s: %.2f–%.2f", median(res[0].rate)/7900, median(res[0].rate)/7500)
	}
}

// drainKind is one way of draining the jobs; pid is the qstash-dev process
// it uses, if any.
type drainKind struct {
	name string
	run  func(conc int) float64
	pid  int
}

func ratios(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] / b[i]
	}
	return out
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
	t                    *testing.T
	n                    int
	workerURL, redisAddr string
	round                int
	pids                 map[string]int // process name → pid, for CPU accounting
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

// qstashDev publishes d.n jobs to qstash-dev under one flow-control key of
// parallelism conc and returns jobs per second, from the first publish to
// nothing pending.
func (d *drainer) qstashDev(qsURL string, conc int) float64 {
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
		req, _ := http.NewRequest(http.MethodPost, qsURL+"/v2/batch", bytes.NewReader(body))
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
	st := qstashdevtest.AwaitIdleURL(t, qsURL, qstashdev.DevToken, 5*time.Minute)
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

// The asynq-shaped queue's scripts: the Redis work asynq does per task
// (written for this harness from asynq's documented design, not taken
// from its code). Keys are built from the prefix passed in ARGV, so they
// run on a standalone Redis only, which is all the harness needs.
var (
	// asynqEnqueue stores one task and queues its id. KEYS[1] the task
	// hash, KEYS[2] the pending list; ARGV[1] the message, ARGV[2] the id,
	// ARGV[3] the enqueue time. Returns 0 for an id already known.
	asynqEnqueue = redis.NewScript(`
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "pending", "pending_since", ARGV[3])
redis.call("LPUSH", KEYS[2], ARGV[2])
return 1`)
	// asynqDequeue takes the oldest pending task: its id moves onto the
	// active list, its hash is marked active, a lease to ARGV[1] is
	// recorded. KEYS[1] pending, KEYS[2] active, KEYS[3] the lease set;
	// ARGV[2] the task hashes' key prefix. Returns {id, message} or nil.
	asynqDequeue = redis.NewScript(`
local id = redis.call("RPOPLPUSH", KEYS[1], KEYS[2])
if not id then return false end
local key = ARGV[2] .. id
redis.call("HSET", key, "state", "active")
redis.call("HDEL", key, "pending_since")
redis.call("ZADD", KEYS[3], ARGV[1], id)
return {id, redis.call("HGET", key, "msg")}`)
	// asynqDone acknowledges task ARGV[1]: off the active list (KEYS[1])
	// and the lease set (KEYS[2]), its hash (KEYS[3]) deleted, the daily
	// (KEYS[4], expiring at ARGV[2]) and total (KEYS[5]) processed
	// counters incremented.
	asynqDone = redis.NewScript(`
if redis.call("LREM", KEYS[1], 0, ARGV[1]) == 0 then return redis.error_reply("task not active") end
redis.call("ZREM", KEYS[2], ARGV[1])
redis.call("DEL", KEYS[3])
if redis.call("INCR", KEYS[4]) == 1 then redis.call("EXPIREAT", KEYS[4], ARGV[2]) end
redis.call("INCR", KEYS[5])
return 1`)
)

// asynqShaped drains d.n tasks the way asynq does (see TestDrain) with conc
// workers and returns tasks per second, first enqueue to last
// acknowledgement.
func (d *drainer) asynqShaped(conc int) float64 {
	t := d.t
	d.round++
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: d.redisAddr, PoolSize: conc + 4, MinIdleConns: conc + 2})
	defer rdb.Close()
	prefix := "asynq:" + strconv.Itoa(d.round) + ":"
	pending, active, lease := prefix+"pending", prefix+"active", prefix+"lease"
	taskPrefix := prefix + "t:"
	for _, s := range []*redis.Script{asynqEnqueue, asynqDequeue, asynqDone} {
		if err := s.Load(ctx, rdb).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var warm sync.WaitGroup
	for range conc + 2 {
		warm.Go(func() { rdb.Ping(ctx) })
	}
	warm.Wait()

	var firstErr atomic.Pointer[error]
	fail := func(err error) { firstErr.CompareAndSwap(nil, &err) }
	done := make(chan time.Time, 1)
	var acked atomic.Int64
	var tasks sync.WaitGroup
	dispatched := make(chan struct{})
	sema := make(chan struct{}, conc)
	go func() {
		defer close(dispatched)
		for taken := 0; taken < d.n && firstErr.Load() == nil; {
			sema <- struct{}{}
			res, err := asynqDequeue.EvalSha(ctx, rdb, []string{pending, active, lease},
				time.Now().Add(30*time.Second).Unix(), taskPrefix).StringSlice()
			if errors.Is(err, redis.Nil) {
				<-sema
				time.Sleep(time.Millisecond) // asynq: a second
				continue
			}
			if err != nil {
				fail(err)
				<-sema
				return
			}
			taken++
			id := res[0]
			tasks.Go(func() {
				defer func() { <-sema }()
				// The handler: a no-op.
				err := asynqDone.EvalSha(ctx, rdb, []string{active, lease, taskPrefix + id, prefix + "processed:day", prefix + "processed"},
					id, time.Now().Add(24*time.Hour).Unix()).Err()
				if err != nil {
					fail(err)
					return
				}
				if acked.Add(1) == int64(d.n) {
					done <- time.Now()
				}
			})
		}
	}()
	const perPipe = 1000
	start := time.Now()
	for i := 0; i < d.n; i += perPipe {
		pipe := rdb.Pipeline()
		for j := i; j < min(i+perPipe, d.n); j++ {
			id := strconv.Itoa(j)
			asynqEnqueue.EvalSha(ctx, pipe, []string{taskPrefix + id, pending},
				`{"type":"demo.hello","payload":{"name":"drain-`+strconv.Itoa(d.round)+`-`+id+`"}}`, id, time.Now().Unix())
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var end time.Time
	select {
	case end = <-done:
	case <-time.After(5 * time.Minute):
		t.Fatalf("asynq-shaped: %d of %d acknowledged in 5 minutes", acked.Load(), d.n)
	}
	<-dispatched
	tasks.Wait()
	if p := firstErr.Load(); p != nil {
		t.Fatal(*p)
	}
	return float64(d.n) / end.Sub(start).Seconds()
}
