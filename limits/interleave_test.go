package limits

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/redistest"
)

// Interleaved comparisons: on a shared machine a rate measured a minute
// after another is a different machine, so these benchmarks run every
// variant in short slots, A B C then B C A then C A B …, and report each
// variant's throughput as a ratio to the baseline's in the same round
// (median and range over the rounds), with per-operation latency pooled
// over all rounds, and CPU per operation (this process, load generator
// included, plus redis-server) with its ratio to the baseline's, median
// over the rounds: on a machine busy with other work, where wall-clock
// rates swing, it is the steadier figure of what a variant costs. Run
// with -benchtime 1x: one invocation is the whole comparison.
var (
	interleaveRounds = flag.Int("interleave.rounds", 8, "rounds of the interleaved benchmarks")
	interleaveSlot   = flag.Duration("interleave.slot", 400*time.Millisecond, "time each variant runs per round")
)

// variant is one contender of an interleaved comparison: newOp builds
// goroutine w's operation.
type variant struct {
	name  string
	newOp func(w int, r *rand.Rand) func(context.Context) error
	// redis, when set, counts the decisions sent to Redis so far; the
	// table then reports them per operation.
	redis func() int64
}

// slot is what one variant did in one round.
type slot struct {
	ops     int
	elapsed time.Duration
	cpu     time.Duration // this process and the benchmark's redis-servers
	lat     []time.Duration
	redis   int64 // decisions sent to Redis, when counted
}

// runFor runs g goroutines of v's operation for d and measures them. The
// pickers are seeded by goroutine and round, so every variant of a round
// sees the same identifiers.
func runFor(b *testing.B, v variant, g, round int, d time.Duration) slot {
	b.Helper()
	ops := make([]func(context.Context) error, g)
	for w := range ops {
		ops[w] = v.newOp(w, rand.New(rand.NewPCG(uint64(w), uint64(round))))
	}
	ctx := context.Background()
	lat := make([][]time.Duration, g)
	errs := make(chan error, g)
	var sent0 int64
	if v.redis != nil {
		sent0 = v.redis()
	}
	app0, redis0 := cpuNow(b)
	start := time.Now()
	stop := start.Add(d)
	var wg sync.WaitGroup
	for w := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := make([]time.Duration, 0, 4096)
			for {
				t0 := time.Now()
				if !t0.Before(stop) {
					break
				}
				if err := ops[w](ctx); err != nil {
					errs <- err
					return
				}
				l = append(l, time.Since(t0))
			}
			lat[w] = l
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	app1, redis1 := cpuNow(b)
	select {
	case err := <-errs:
		b.Fatalf("%s: %v", v.name, err)
	default:
	}
	all := slices.Concat(lat...)
	s := slot{ops: len(all), elapsed: elapsed, cpu: (app1 - app0) + (redis1 - redis0), lat: all}
	if v.redis != nil {
		s.redis = v.redis() - sent0
	}
	return s
}

// interleave runs the variants in rotating order for the configured
// rounds, g goroutines each, and reports for each variant its median rate
// (unit, e.g. "decisions/s"), pooled p50 and p99 per operation, CPU per
// operation, and its rate over the first variant's (the baseline) in the
// same round: median, min and max. The table is logged; the ratios are
// also benchmark metrics ("<variant>/<baseline>").
func interleave(b *testing.B, g int, unit string, variants []variant) {
	b.Helper()
	rounds, d := *interleaveRounds, *interleaveSlot
	res := make([][]slot, len(variants)) // [variant][round]
	for _, v := range variants {
		runFor(b, v, g, -1, d/4) // warm-up: connections, scripts, leases
	}
	b.ResetTimer()
	for r := range rounds {
		for k := range variants {
			i := (k + r) % len(variants)
			res[i] = append(res[i], runFor(b, variants[i], g, r, d))
		}
	}
	b.StopTimer()
	rate := func(s slot) float64 { return float64(s.ops) / s.elapsed.Seconds() }
	perOp := func(s slot) float64 { return float64(s.cpu) / float64(max(s.ops, 1)) }
	var out strings.Builder
	fmt.Fprintf(&out, "\n%d rounds of %s, %d goroutines\n", rounds, d, g)
	fmt.Fprintf(&out, "%-16s %12s %9s %9s %10s %9s %22s %10s\n", "variant", unit+" (med)", "p50", "p99", "CPU µs/op", "Redis/op", "vs "+variants[0].name+" med [min–max]", "CPU ratio")
	for i, v := range variants {
		var rates, ratios, cpuRatios []float64
		var all []time.Duration
		var ops int
		var cpu time.Duration
		var sent int64
		for r, s := range res[i] {
			sent += s.redis
			rates = append(rates, rate(s))
			ratios = append(ratios, rate(s)/rate(res[0][r]))
			cpuRatios = append(cpuRatios, perOp(s)/perOp(res[0][r]))
			all = append(all, s.lat...)
			ops += s.ops
			cpu += s.cpu
		}
		slices.Sort(all)
		slices.Sort(rates)
		slices.Sort(ratios)
		slices.Sort(cpuRatios)
		ratio, cpuRatio := "", ""
		if i > 0 {
			ratio = fmt.Sprintf("%.2f× [%.2f–%.2f]", median(ratios), ratios[0], ratios[len(ratios)-1])
			cpuRatio = fmt.Sprintf("%.2f×", median(cpuRatios))
			b.ReportMetric(median(ratios), v.name+"/"+variants[0].name)
		}
		sentPerOp := ""
		if v.redis != nil {
			sentPerOp = fmt.Sprintf("%.3f", float64(sent)/float64(ops))
		}
		fmt.Fprintf(&out, "%-16s %12.0f %9s %9s %10.1f %9s %22s %10s\n", v.name, median(rates),
			all[len(all)/2].Round(time.Microsecond), all[len(all)*99/100].Round(time.Microsecond),
			float64(cpu.Microseconds())/float64(ops), sentPerOp, ratio, cpuRatio)
	}
	b.Log(out.String())
}

func median(s []float64) float64 {
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchmarkExactVsRedisRate: decisions of the exact mode (no leases: every
// decision is made in Redis) against go-redis/redis_rate, interleaved, for
// the uniform and zipf workloads at 16 and 64 goroutines. "limits" is the
// default configuration (concurrent decisions merged into one script run
// per round trip, two round trips in flight); "limits-before" is the
// previous default: four in flight, batches sent as pipelines of one
// script run per decision. Run:
//
//	go test ./limits -run '^$' -bench ExactVsRedisRate -benchtime 1x
func BenchmarkExactVsRedisRate(b *testing.B) {
	srv := redistest.Start(b)
	rdb := benchClient(b, srv)
	ids := benchIDs()
	impls := []struct {
		name   string
		decide func(ctx context.Context, id string) error
	}{
		{"redis_rate", decideRedisRate(rdb)},
		{"limits", decideWith(benchLimiterCfg(b, Config{Client: rdb}))},
		{"limits-before", decideWith(benchLimiterCfg(b, Config{Client: rdb, MaxInFlight: 4, unmerged: true}))},
	}
	for _, wl := range workloads[:2] {
		for _, g := range []int{16, 64} {
			b.Run(fmt.Sprintf("ids=%s/goroutines=%d", wl.name, g), func(b *testing.B) {
				var vs []variant
				for _, impl := range impls {
					vs = append(vs, variant{name: impl.name, newOp: func(w int, r *rand.Rand) func(context.Context) error {
						pick := wl.picker(w, g, r)
						return func(ctx context.Context) error { return impl.decide(ctx, ids[pick()]) }
					}})
				}
				interleave(b, g, "decisions/s", vs)
			})
		}
	}
}

// BenchmarkHTTPZipfInterleaved: the Echo route of BenchmarkHTTP over real
// loopback HTTP at 16 and 64 keep-alive connections on the zipf workload,
// interleaved: "bare" (the same route, no limiter) is the baseline; "leases"
// is limits.Middleware with leases (Config.Leases 256: the head of the
// distribution is admitted from memory, the tail asks Redis, batched);
// "leases-before" the same with the previous batching (four round trips in
// flight, pipelines of one script run per decision);
// "exact" is the middleware without leases; "headers-only" writes the
// middleware's five headers with fixed values and no limiter (what the
// headers cost both sides); "get-floor" one plain Redis GET per request and
// no limiter, the floor of anything that asks Redis on every request. The
// limiters count the decisions they send to Redis (Redis/op). Loss = 1 -
// ratio. Run:
//
//	go test ./limits -run '^$' -bench HTTPZipfInterleaved -benchtime 1x
func BenchmarkHTTPZipfInterleaved(b *testing.B) {
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
	// Each limiter counts the decisions it sends to Redis.
	limiter := func(cfg Config) ([]echo.MiddlewareFunc, func() int64) {
		counted := &countingClient{Client: rdb}
		cfg.Client = counted
		mw, err := MiddlewareConfig{Limiter: benchLimiterCfg(b, cfg), Bucket: "bench", IPExtractor: x,
			UserID: user}.ToMiddleware()
		if err != nil {
			b.Fatal(err)
		}
		return []echo.MiddlewareFunc{mw}, counted.scripts.Load
	}
	handler, floor, headersOnly, users := benchHTTPParts(rdb, user)
	leases := map[string]int{"bench": benchLease}
	type route struct {
		name  string
		mw    []echo.MiddlewareFunc
		redis func() int64
	}
	counted := func(name string, cfg Config) route {
		mw, n := limiter(cfg)
		return route{name, mw, n}
	}
	routes := []route{
		{"bare", nil, nil},
		{"headers-only", []echo.MiddlewareFunc{headersOnly}, nil},
		counted("leases", Config{Leases: leases}),
		counted("leases-before", Config{Leases: leases, MaxInFlight: 4, unmerged: true}),
		counted("exact", Config{}),
		{"get-floor", []echo.MiddlewareFunc{floor}, nil},
	}
	zipf := workloads[1]
	for _, g := range []int{16, 64} {
		b.Run(fmt.Sprintf("ids=zipf/connections=%d", g), func(b *testing.B) {
			var vs []variant
			for _, rt := range routes {
				e := echo.New()
				e.GET("/streams/status", handler, rt.mw...)
				ts := httptest.NewServer(e)
				b.Cleanup(ts.Close)
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: g, MaxConnsPerHost: g}}
				b.Cleanup(client.CloseIdleConnections)
				url := ts.URL + "/streams/status"
				vs = append(vs, variant{rt.name, func(w int, r *rand.Rand) func(context.Context) error {
					pick := zipf.picker(w, g, r)
					return func(ctx context.Context) error { return getStatus(ctx, client, url, users[pick()]) }
				}, rt.redis})
			}
			interleave(b, g, "req/s", vs)
		})
	}
}

// BenchmarkWindowScriptRedisCost: what a decision costs Redis itself, from
// INFO commandstats (microseconds inside EVALSHA per decision), for the
// single-decision script and for merged batches of 8 and 32, on 5,000 live
// windows (GET, PTTL, INCRBY per decision). Run:
//
//	go test ./limits -run '^$' -bench WindowScriptRedisCost -benchtime 1x
func BenchmarkWindowScriptRedisCost(b *testing.B) {
	srv := redistest.Start(b)
	rdb := benchClient(b, srv)
	ctx := context.Background()
	const decisions, windows = 64 * 400, 5000
	for _, n := range []int{1, 8, 32} {
		b.Run("batch="+strconv.Itoa(n), func(b *testing.B) {
			send := func(round int) {
				p := rdb.Pipeline()
				for j := 0; j < 64/n; j++ {
					keys := make([]string, 0, n)
					args := make([]any, 0, 4*n)
					for i := range n {
						keys = append(keys, "w"+strconv.Itoa((round*64+j*n+i)%windows))
						args = append(args, 1<<30, 60000, 1, 1)
					}
					if n == 1 {
						window.EvalSha(ctx, p, keys, args...)
					} else {
						windowBatch.EvalSha(ctx, p, keys, args...)
					}
				}
				if _, err := p.Exec(ctx); err != nil {
					b.Fatal(err)
				}
			}
			for _, s := range []*redis.Script{window, windowBatch} {
				if err := s.Load(ctx, rdb).Err(); err != nil {
					b.Fatal(err)
				}
			}
			for r := range windows / 64 { // open every window first
				send(r)
			}
			if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for r := range decisions / 64 {
				send(r)
			}
			b.StopTimer()
			stats, err := rdb.Info(ctx, "commandstats").Result()
			if err != nil {
				b.Fatal(err)
			}
			_, rest, _ := strings.Cut(stats, "cmdstat_evalsha:")
			var calls, usec int64
			if _, err := fmt.Sscanf(rest, "calls=%d,usec=%d", &calls, &usec); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(usec)/float64(decisions), "redis-µs/decision")
			b.ReportMetric(float64(decisions)/float64(calls), "decisions/call")
		})
	}
}
