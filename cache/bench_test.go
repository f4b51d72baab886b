package cache

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// Run (bounded, loopback; figures in docs/benchmarks.md):
//
//	go test ./cache -run '^$' -bench . -benchtime 20000x   (hits)
//	go test ./cache -run '^$' -bench Stampede -benchtime 10x

// BenchmarkHit: the cost of a hit next to a plain GET of the same key (the
// baseline), one goroutine. "watchdog" is a client without
// ContextTimeoutEnabled, where each Redis call runs in a goroutine bounded
// by RedisTimeout.
func BenchmarkHit(b *testing.B) {
	srv := redistest.Start(b)
	ctx := context.Background()
	direct := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	b.Cleanup(func() { _ = direct.Close() })
	type value struct {
		Live    bool   `json:"live"`
		Viewers int    `json:"viewers"`
		Title   string `json:"title"`
	}
	compute := func(context.Context) (value, error) {
		return value{Live: true, Viewers: 1234, Title: "an evening stream"}, nil
	}
	for _, bc := range []struct {
		name string
		rdb  *redis.Client
	}{{"ctxtimeout", direct}, {"watchdog", srv.Client(b)}} {
		c, err := New(bc.rdb, Config{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := GetOrCompute(ctx, c, "hit", time.Hour, compute); err != nil {
			b.Fatal(err)
		}
		// Baseline and cache calls alternate inside one loop, so both see
		// the same machine noise; ns/op covers the pair.
		b.Run(bc.name, func(b *testing.B) {
			base := make([]time.Duration, 0, b.N)
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				t := time.Now()
				if err := bc.rdb.Get(ctx, "cache:{hit}").Err(); err != nil {
					b.Fatal(err)
				}
				base = append(base, time.Since(t))
				t = time.Now()
				if _, err := GetOrCompute(ctx, c, "hit", time.Hour, compute); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t))
			}
			slices.Sort(base)
			slices.Sort(lat)
			p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
			b50, b99 := base[len(base)/2], base[len(base)*99/100]
			b.ReportMetric(float64(p50.Microseconds()), "hit-p50-µs")
			b.ReportMetric(float64(p99.Microseconds()), "hit-p99-µs")
			b.ReportMetric(float64(b50.Microseconds()), "GET-p50-µs")
			b.ReportMetric(float64(b99.Microseconds()), "GET-p99-µs")
			b.ReportMetric(float64(p50)/float64(b50), "p50-ratio")
		})
	}
}

var stampedeKeys atomic.Int64 // a cold key per expiry, across -count runs

// BenchmarkStampede: each iteration is one expiry of a hot key: 1002
// callers over three instances (own clients and pools) hit it cold at
// once. The computation holds until every caller has called in, so all of
// them arrive while the key is cold. Baseline: naive cache-aside (GET, on a
// miss compute and SET). waiter-lag is how long a caller that did not
// compute returned after the value was computed.
func BenchmarkStampede(b *testing.B) {
	const callers = 1002
	srv := redistest.Start(b)
	ctx := context.Background()
	var instances []*Cache
	var clients []*redis.Client
	for i := 0; i < 3; i++ {
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true, PoolSize: 32})
		b.Cleanup(func() { _ = rdb.Close() })
		c, err := New(rdb, Config{})
		if err != nil {
			b.Fatal(err)
		}
		instances, clients = append(instances, c), append(clients, rdb)
	}
	// expiry is one round: arrive() is called by each caller once it has
	// called in, compute() blocks until all have, and records when it
	// returns.
	type expiry struct {
		key          string
		arrived      atomic.Int32
		allIn        chan struct{}
		computed     atomic.Int64 // unix ns of the last compute return
		computations *atomic.Int64
	}
	arrive := func(e *expiry) {
		if e.arrived.Add(1) == callers {
			close(e.allIn)
		}
	}
	compute := func(e *expiry) string {
		e.computations.Add(1)
		<-e.allIn
		e.computed.Store(time.Now().UnixNano())
		return "v"
	}
	run := func(b *testing.B, call func(inst int, e *expiry) (bool, error)) {
		var computations atomic.Int64
		var lags []time.Duration
		var mu sync.Mutex
		iter := 0
		for b.Loop() {
			iter++
			e := &expiry{key: fmt.Sprintf("stampede:%d", stampedeKeys.Add(1)), allIn: make(chan struct{}), computations: &computations}
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := 0; i < callers; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					computed, err := call(i%3, e)
					done := time.Now()
					if err != nil {
						b.Error(err)
					}
					if !computed {
						mu.Lock()
						lags = append(lags, done.Sub(time.Unix(0, e.computed.Load())))
						mu.Unlock()
					}
				}()
			}
			close(start)
			wg.Wait()
		}
		b.ReportMetric(float64(computations.Load())/float64(iter), "computations/expiry")
		if len(lags) > 0 {
			slices.Sort(lags)
			b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "waiter-lag-p50-ms")
			b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds())/1000, "waiter-lag-p99-ms")
		}
	}
	b.Run("baseline_cache_aside", func(b *testing.B) {
		run(b, func(inst int, e *expiry) (bool, error) {
			rdb := clients[inst]
			err := rdb.Get(ctx, e.key).Err()
			arrive(e)
			if err == nil {
				return false, nil
			}
			return true, rdb.Set(ctx, e.key, compute(e), time.Minute).Err()
		})
	})
	b.Run("GetOrCompute", func(b *testing.B) {
		run(b, func(inst int, e *expiry) (bool, error) {
			var o Outcome
			arrive(e)
			_, err := GetOrCompute(ctx, instances[inst], e.key, time.Minute, func(context.Context) (string, error) {
				return compute(e), nil
			}, WithOutcome(&o))
			return o == OutcomeMissComputed, err
		})
	})
}
