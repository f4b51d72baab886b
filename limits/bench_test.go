package limits

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/cputime"
	"github.com/digis/jobworker/internal/redistest"
)

// Benchmarks run against a private redis-server on loopback, client and
// server on the same machine. Run:
//
//	go test ./limits -run '^$' -bench . -benchtime 2s -count 3
//
// Baselines run in the same invocation, interleaved per concurrency level,
// so ratios compare like with like on a noisy machine.

const benchKeys = 100_000

// benchLease is the lease of the "leased" variants: a busy identifier's
// leases double up to it.
const benchLease = 256

// benchLimiter admits everything (the quota is huge), so every decision is a
// full script run with a write, the expensive path. lease > 0 turns on
// leases for the bench bucket.
func benchLimiter(b *testing.B, c Client, maxInFlight, lease int) *Limiter {
	b.Helper()
	cfg := Config{Client: c, MaxInFlight: maxInFlight}
	if lease > 0 {
		cfg.Leases = map[string]int{"bench": lease}
	}
	return benchLimiterCfg(b, cfg)
}

// benchLimiterCfg is benchLimiter with more of cfg: the bench bucket, the
// hash key and the deadline are filled in.
func benchLimiterCfg(b *testing.B, cfg Config) *Limiter {
	b.Helper()
	cfg.HashKey = testHashKey
	cfg.Tiers = map[string]Quota{"bench": {Limit: 1 << 30, Period: time.Minute}}
	cfg.Buckets = map[string]string{"bench": "bench"}
	cfg.Timeout = time.Second
	l, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return l
}

// benchIDs is the identifier pool the decision benchmarks draw from.
func benchIDs() []string {
	ids := make([]string, benchKeys)
	for i := range ids {
		ids[i] = "user:" + strconv.Itoa(i)
	}
	return ids
}

// decideWith is one decision of l, a refusal an error: every benchmark
// limit is far above what it can send.
func decideWith(l *Limiter) func(ctx context.Context, id string) error {
	return func(ctx context.Context, id string) error {
		res, err := l.Allow(ctx, "bench", id)
		if err == nil && !res.Allowed {
			err = fmt.Errorf("limits refused: %+v", res)
		}
		return err
	}
}

// decideRedisRate is decideWith for redis_rate, the baseline.
func decideRedisRate(rdb *redis.Client) func(ctx context.Context, id string) error {
	theirs := redis_rate.NewLimiter(rdb)
	limit := redis_rate.PerMinute(1 << 30)
	return func(ctx context.Context, id string) error {
		res, err := theirs.Allow(ctx, id, limit)
		if err == nil && res.Allowed != 1 {
			err = fmt.Errorf("redis_rate refused: %+v", res)
		}
		return err
	}
}

func benchClient(b *testing.B, srv *redistest.Server) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 128, ContextTimeoutEnabled: true})
	b.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// workload picks the identifier of each request. Each goroutine (client)
// gets its own picker.
type workload struct {
	name string
	// picker returns the identifier picker of goroutine w of g.
	picker func(w, g int, r *rand.Rand) func() int
}

// workloads, from the worst case for any local state to the best:
//   - uniform: every request one of 100k identifiers at random, so an
//     identifier comes back only every ~100k requests (seconds apart);
//   - zipf: 100k identifiers with a Zipf(1.1) popularity, the usual shape of
//     web traffic (a few clients make most requests);
//   - one-per-client: each goroutine is one client with one identifier, as
//     in a load test; with 1 goroutine it is redis_rate's own BenchmarkAllow
//     (one key, a quota never reached).
var workloads = []workload{
	{"uniform", func(_, _ int, r *rand.Rand) func() int {
		return func() int { return r.IntN(benchKeys) }
	}},
	{"zipf", func(_, _ int, r *rand.Rand) func() int {
		z := rand.NewZipf(r, 1.1, 1, benchKeys-1)
		return func() int { return int(z.Uint64()) }
	}},
	{"one-per-client", func(w, _ int, _ *rand.Rand) func() int {
		return func() int { return w }
	}},
}

// BenchmarkDecision compares one decision of this package with
// go-redis/redis_rate (GCRA) at 1, 16 and 64 concurrent callers, for each
// workload. It reports decisions/s and per-decision p50/p99.
func BenchmarkDecision(b *testing.B) {
	srv := redistest.Start(b)
	rdb := benchClient(b, srv)
	exact := benchLimiter(b, rdb, 0, 0)
	leased := benchLimiter(b, rdb, 0, benchLease)
	ids := benchIDs()
	impls := []struct {
		name   string
		decide func(ctx context.Context, id string) error
	}{
		{"redis_rate", decideRedisRate(rdb)},
		{"limits", decideWith(exact)},
		{"limits-leased", decideWith(leased)},
	}
	for _, wl := range workloads {
		for _, g := range []int{1, 16, 64} {
			for _, impl := range impls {
				b.Run(fmt.Sprintf("ids=%s/goroutines=%d/impl=%s", wl.name, g, impl.name), func(b *testing.B) {
					runConcurrent(b, g, "decisions/s", func(w int, r *rand.Rand) func(context.Context) error {
						pick := wl.picker(w, g, r)
						return func(ctx context.Context) error { return impl.decide(ctx, ids[pick()]) }
					})
				})
			}
		}
	}
}

// runConcurrent splits b.N calls over g goroutines and reports throughput and
// latency percentiles. newOp builds goroutine w's operation.
func runConcurrent(b *testing.B, g int, unit string, newOp func(w int, r *rand.Rand) func(context.Context) error) {
	b.Helper()
	ctx := context.Background()
	ops := make([]func(context.Context) error, g)
	for w := range ops {
		ops[w] = newOp(w, rand.New(rand.NewPCG(uint64(w), 42)))
	}
	app0, redis0 := cpuNow(b)
	lat := make([][]time.Duration, g)
	errs := make(chan error, g)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < g; w++ {
		n := b.N / g
		if w < b.N%g {
			n++
		}
		wg.Add(1)
		go func(w, n int) {
			defer wg.Done()
			op := ops[w]
			l := make([]time.Duration, 0, n)
			for i := 0; i < n; i++ {
				t0 := time.Now()
				if err := op(ctx); err != nil {
					errs <- err
					return
				}
				l = append(l, time.Since(t0))
			}
			lat[w] = l
		}(w, n)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	app1, redis1 := cpuNow(b)
	app, rds := app1-app0, redis1-redis0
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), unit)
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
	// CPU per operation is steadier than wall-clock rates on a shared, noisy
	// machine: this process (application + load generator) and redis-server.
	b.ReportMetric(float64(app.Microseconds())/float64(len(all)), "app-cpu-µs/op")
	b.ReportMetric(float64((app+rds).Microseconds())/float64(len(all)), "cpu-µs/op")
}

// cpuNow is the CPU time used so far by this process and by the
// redis-server processes that are its children (the benchmark's servers).
func cpuNow(b *testing.B) (self, redis time.Duration) {
	self = cputime.Self()
	pid := strconv.Itoa(os.Getpid())
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		stat, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil || !bytes.Contains(stat, []byte("(redis-server)")) {
			continue
		}
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
		if len(f) < 13 || f[1] != pid { // f[1] is the parent pid
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		redis += time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ = 100
	}
	return self, redis
}

// BenchmarkHTTP measures requests/s of one Echo route over real loopback
// HTTP (keep-alive, 16 concurrent clients) without the middleware, with it
// (every request asking Redis, and with leases), with only the headers it
// writes (fixed values, no limiter), and with a bare Redis GET per request,
// for each workload, all in the same run. The identity is a user id taken
// from a request header without canonicalizing its name, standing in for the
// id an auth middleware has already put on the request.
func BenchmarkHTTP(b *testing.B) {
	srv := redistest.Start(b)
	rdb := benchClient(b, srv)
	x, err := ParseIPSource("direct", "")
	if err != nil {
		b.Fatal(err)
	}
	user := func(c echo.Context) string {
		if v := c.Request().Header["X-User"]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	limiter := func(lease int) echo.MiddlewareFunc {
		mw, err := MiddlewareConfig{Limiter: benchLimiter(b, rdb, 0, lease), Bucket: "bench", IPExtractor: x,
			UserID: user}.ToMiddleware()
		if err != nil {
			b.Fatal(err)
		}
		return mw
	}
	handler, floor, headersOnly, users := benchHTTPParts(rdb, user)
	const g = 16
	for _, wl := range workloads {
		for _, variant := range []string{"without", "with", "with-leases", "headers-only", "redis-get-floor"} {
			b.Run("ids="+wl.name+"/middleware="+variant, func(b *testing.B) {
				e := echo.New()
				switch variant {
				case "with":
					e.GET("/streams/status", handler, limiter(0))
				case "with-leases":
					e.GET("/streams/status", handler, limiter(benchLease))
				case "headers-only":
					e.GET("/streams/status", handler, headersOnly)
				case "redis-get-floor":
					e.GET("/streams/status", handler, floor)
				default:
					e.GET("/streams/status", handler)
				}
				ts := httptest.NewServer(e)
				defer ts.Close()
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: g, MaxConnsPerHost: g}}
				defer client.CloseIdleConnections()
				url := ts.URL + "/streams/status"
				runConcurrent(b, g, "req/s", func(w int, r *rand.Rand) func(context.Context) error {
					pick := wl.picker(w, g, r)
					return func(ctx context.Context) error { return getStatus(ctx, client, url, users[pick()]) }
				})
			})
		}
	}
}

// BenchmarkBlockedOffender: a client that has used up its window is refused
// from the local block cache; the counting client proves no Redis call is
// made (redis-calls/op must be 0).
func BenchmarkBlockedOffender(b *testing.B) {
	srv := redistest.Start(b)
	counted := &countingClient{Client: benchClient(b, srv)}
	l, err := New(Config{Client: counted, HashKey: testHashKey})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 11; i++ {
		_, _ = l.Allow(ctx, "auth:otp", "ip:192.0.2.66")
	}
	before := counted.scripts.Load()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if res, _ := l.Allow(ctx, "auth:otp", "ip:192.0.2.66"); res.Reason != ReasonBlockedLocally {
				b.Errorf("not blocked locally: %+v", res)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(counted.scripts.Load()-before)/float64(b.N), "redis-calls/op")
}

// benchHTTPParts are what the HTTP benchmarks share: the route's handler
// (a small JSON answer, like the stream status), the floor of any limiter
// that asks Redis on every request (one plain GET round trip and nothing
// else), what the rate-limit headers alone cost (the same five headers
// with fixed values, no limiter), and the user ids.
func benchHTTPParts(rdb *redis.Client, user func(echo.Context) string) (handler echo.HandlerFunc, floor, headersOnly echo.MiddlewareFunc, users []string) {
	type status struct {
		Live    bool   `json:"live"`
		Viewers int    `json:"viewers"`
		Title   string `json:"title"`
	}
	handler = func(c echo.Context) error {
		return c.JSON(http.StatusOK, status{Live: true, Viewers: 42, Title: "hello"})
	}
	floor = func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			_ = rdb.Get(c.Request().Context(), "floor:"+user(c)).Err()
			return next(c)
		}
	}
	fixed := Result{Bucket: "bench", Allowed: true, Limit: 1 << 30, Period: time.Minute,
		Remaining: 1<<30 - 1, Reset: time.Now().Add(time.Minute), ResetAfter: time.Minute}
	headersOnly = func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			WriteHeaders(c.Response().Header(), fixed)
			return next(c)
		}
	}
	users = make([]string, benchKeys)
	for i := range users {
		users[i] = strconv.Itoa(i)
	}
	return handler, floor, headersOnly, users
}

// getStatus is one request of the HTTP benchmarks, as user.
func getStatus(ctx context.Context, client *http.Client, url, user string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("X-User", user)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
