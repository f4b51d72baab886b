package workerapp_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/process"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/workerapp"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/webhooks/webhookstest"
)

type noopJob struct {
	N int `json:"n"`
}

func (noopJob) Kind() string { return "bench.noop" }

// BenchmarkDeliveries drives the worker's full production path (shared
// middleware and access log, QStash signature check, dedupe lease + done
// marker in Redis, dispatch of a no-op job) with 16 and 64 concurrent
// senders over loopback HTTP, and in the same run a baseline: a bare Echo
// handler doing one Redis SET NX per request. b.N is the number of
// deliveries per side. Signatures are made before the clock starts, so the
// load generator spends its CPU on HTTP only.
//
//	go test -run '^$' -bench Deliveries -benchtime 20000x ./internal/workerapp
func BenchmarkDeliveries(b *testing.B) {
	rs := redistest.Start(b)
	prodURL := startBenchWorker(b, rs.URL())
	baseURL := startBaseline(b, rs)
	body := []byte(`{"n":1}`)
	for _, senders := range []int{16, 64} {
		b.Run("senders="+strconv.Itoa(senders), func(b *testing.B) {
			prodReqs := signedRequests(b, prodURL, body, b.N, "p"+strconv.Itoa(senders))
			baseReqs := signedRequests(b, baseURL, body, b.N, "b"+strconv.Itoa(senders))
			b.ResetTimer()
			// Alternate the two sides in rounds, so a noisy neighbour on
			// this shared machine slows both alike instead of one.
			var base, prod loadResult
			const rounds = 5
			for r := 0; r < rounds; r++ {
				lo, hi := r*len(baseReqs)/rounds, (r+1)*len(baseReqs)/rounds
				base = base.add(load(b, baseReqs[lo:hi], senders))
				prod = prod.add(load(b, prodReqs[lo:hi], senders))
			}
			base, prod = base.done(), prod.done()
			b.StopTimer()
			b.ReportMetric(prod.perSecond, "deliveries/s")
			b.ReportMetric(base.perSecond, "baseline-req/s")
			b.ReportMetric(prod.perSecond/base.perSecond, "ratio")
			b.ReportMetric(prod.p50.Seconds()*1000, "p50-ms")
			b.ReportMetric(prod.p99.Seconds()*1000, "p99-ms")
			b.ReportMetric(base.p99.Seconds()*1000, "baseline-p99-ms")
		})
	}
}

// BenchmarkDeliveriesOpsStats measures what the ops console's flush costs
// deliveries: the production worker with the flush every 100 ms (a hundred
// times the default, so a cost would show) against the same worker with
// the flush off, on one Redis, alternating in rounds. The ratio is
// with-flush over without; 1.0 is free.
func BenchmarkDeliveriesOpsStats(b *testing.B) {
	rs := redistest.Start(b)
	// A generous Redis deadline on both sides: on a loaded shared machine
	// the default 250 ms turns queueing into 503s, which would end the run.
	offURL := startBenchWorker(b, rs.URL(), "OPS_STATS_INTERVAL", "0", "REDIS_TIMEOUT", "2s")
	onURL := startBenchWorker(b, rs.URL(), "OPS_STATS_INTERVAL", "100ms", "REDIS_TIMEOUT", "2s")
	for _, senders := range []int{16, 64} {
		b.Run("senders="+strconv.Itoa(senders), func(b *testing.B) {
			off, on := alternateLoads(b, offURL, onURL, "off", "on", senders)
			b.ReportMetric(on.perSecond, "flush-deliveries/s")
			b.ReportMetric(off.perSecond, "noflush-deliveries/s")
			b.ReportMetric(on.perSecond/off.perSecond, "ratio")
			b.ReportMetric(on.p99.Seconds()*1000, "flush-p99-ms")
			b.ReportMetric(off.p99.Seconds()*1000, "noflush-p99-ms")
		})
	}
}

type loadResult struct {
	perSecond float64
	p50, p99  time.Duration

	n       int
	elapsed time.Duration
	lat     []time.Duration
}

// add accumulates one round.
func (r loadResult) add(o loadResult) loadResult {
	r.n += o.n
	r.elapsed += o.elapsed
	r.lat = append(r.lat, o.lat...)
	return r
}

// done computes the rate and percentiles over every round.
func (r loadResult) done() loadResult {
	sort.Slice(r.lat, func(i, j int) bool { return r.lat[i] < r.lat[j] })
	r.perSecond = float64(r.n) / r.elapsed.Seconds()
	r.p50, r.p99 = r.lat[len(r.lat)/2], r.lat[len(r.lat)*99/100]
	return r
}

// load sends every request with `senders` concurrent clients and fails the
// benchmark on any non-200 answer.
func load(b *testing.B, reqs []benchRequest, senders int) loadResult {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: senders, MaxConnsPerHost: senders}}
	lat := make([]time.Duration, len(reqs))
	var next atomic.Int64
	var failed atomic.Int64
	var firstFailure atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(reqs) {
					return
				}
				r := reqs[i]
				req, _ := http.NewRequest(http.MethodPost, r.url, strings.NewReader(string(r.body)))
				req.Header = r.header
				t0 := time.Now()
				res, err := client.Do(req)
				lat[i] = time.Since(t0)
				if err != nil || res.StatusCode != 200 {
					if failed.Add(1) == 1 {
						firstFailure.Store(fmt.Sprintf("status %v, error %v", statusOf(res), err))
					}
				}
				if res != nil {
					// Drain before closing: a body closed unread makes
					// the transport drop the connection, and the side
					// that answers with a body (production) would then
					// pay a TCP dial and accept per request while the
					// empty-bodied baseline keeps its connections.
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	// Idle connections of finished rounds would otherwise pile up on both
	// servers (a goroutine each) for the rest of the run.
	client.CloseIdleConnections()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d requests failed; first: %v", n, len(reqs), firstFailure.Load())
	}
	return loadResult{n: len(reqs), elapsed: elapsed, lat: lat}
}

func statusOf(res *http.Response) any {
	if res == nil {
		return "none"
	}
	return res.StatusCode
}

type benchRequest struct {
	url    string
	header http.Header
	body   []byte
}

func signedRequests(b *testing.B, base string, body []byte, n int, idPrefix string) []benchRequest {
	url := base + "/jobs/bench.noop"
	out := make([]benchRequest, n)
	now := time.Now()
	for i := range out {
		sig, err := webhookstest.QStashSignature(qstashdev.DevCurrentSigningKey, url, body, now)
		if err != nil {
			b.Fatal(err)
		}
		h := http.Header{}
		h.Set("Content-Type", "application/json")
		h.Set("Upstash-Signature", sig)
		h.Set("Upstash-Message-Id", fmt.Sprintf("msg_%s_%d_%d", idPrefix, now.UnixNano(), i))
		h.Set("Upstash-Retried", "0")
		out[i] = benchRequest{url: url, header: h, body: body}
	}
	return out
}

// startBenchWorker runs the production wiring with access logging at info
// (to /dev/null, so the cost of writing log lines is still paid).
func startBenchWorker(b *testing.B, redisURL string, extraEnv ...string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	p := buildBenchWorker(b, redisURL, url, extraEnv...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Server.Serve(ctx, ln) }()
	b.Cleanup(func() { cancel(); <-done })
	return url
}

// buildBenchWorker is the production wiring for publicURL, with the no-op
// bench.noop job and its log going to /dev/null.
func buildBenchWorker(b *testing.B, redisURL, publicURL string, extraEnv ...string) *process.Process {
	vars := map[string]string{
		"REDIS_URL": redisURL, "WORKER_PUBLIC_URL": publicURL,
		"QSTASH_CURRENT_SIGNING_KEY": qstashdev.DevCurrentSigningKey,
		"QSTASH_NEXT_SIGNING_KEY":    qstashdev.DevNextSigningKey,
		"STRIPE_WEBHOOK_SECRET":      "whsec_bench", "QSTASH_TOKEN": "unused", "DATABASE_URL": "memory",
		"JOBWORKER_ENV": "development",
	}
	for i := 0; i+1 < len(extraEnv); i += 2 {
		vars[extraEnv[i]] = extraEnv[i+1]
	}
	cfg, err := workerapp.LoadConfig(envMap(vars))
	if err != nil {
		b.Fatal(err)
	}
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { devNull.Close() })
	stderr := os.Stderr
	os.Stderr = devNull // the process logger writes to os.Stderr
	p, err := workerapp.Build(cfg, workerapp.Deps{Register: func(reg *jobs.Registry, _ *process.Process) error {
		return jobs.Register(reg, func(context.Context, *jobs.Job[noopJob]) error { return nil })
	}})
	os.Stderr = stderr
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// startBaseline is the floor a dedupe-on-Redis handler cannot beat: Echo
// with no middleware and one SET NX per request.
func startBaseline(b *testing.B, rs *redistest.Server) string {
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	e := echo.New()
	e.POST("/jobs/:name", func(c echo.Context) error {
		ok, err := rdb.SetNX(c.Request().Context(), "base:"+c.Request().Header.Get("Upstash-Message-Id"), 1, time.Hour).Result()
		if err != nil || !ok {
			return c.NoContent(http.StatusInternalServerError)
		}
		return c.NoContent(http.StatusOK)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: e}
	go func() { _ = hs.Serve(ln) }()
	b.Cleanup(func() { _ = hs.Close(); _ = rdb.Close() })
	return "http://" + ln.Addr().String()
}

// alternateLoads sends b.N signed deliveries to each of two workers from
// senders goroutines, in six rounds that alternate which side goes first,
// so machine noise hits both alike.
func alternateLoads(b *testing.B, urlA, urlB, nameA, nameB string, senders int) (a, c loadResult) {
	body := []byte(`{"n":1}`)
	reqsA := signedRequests(b, urlA, body, b.N, nameA+strconv.Itoa(senders))
	reqsB := signedRequests(b, urlB, body, b.N, nameB+strconv.Itoa(senders))
	b.ResetTimer()
	const rounds = 6
	for r := 0; r < rounds; r++ {
		lo, hi := r*len(reqsA)/rounds, (r+1)*len(reqsA)/rounds
		if r%2 == 0 {
			a = a.add(load(b, reqsA[lo:hi], senders))
			c = c.add(load(b, reqsB[lo:hi], senders))
		} else {
			c = c.add(load(b, reqsB[lo:hi], senders))
			a = a.add(load(b, reqsA[lo:hi], senders))
		}
	}
	a, c = a.done(), c.done()
	b.StopTimer()
	return a, c
}
