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
// once; the computation takes 50ms. Baseline: naive cache-aside (GET, on a
// miss compute and SET).
func BenchmarkStampede(b *testing.B) {
	const (
		callers = 1002
		compute = 50 * time.Millisecond
	)
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
	run := func(b *testing.B, call func(inst int, key string, calls *atomic.Int64) (bool, error)) {
		var computations atomic.Int64
		var waits []time.Duration
		var mu sync.Mutex
		iter := 0
		for b.Loop() {
			iter++
			key := fmt.Sprintf("stampede:%d", stampedeKeys.Add(1))
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := 0; i < callers; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					t := time.Now()
					computed, err := call(i%3, key, &computations)
					d := time.Since(t)
					if err != nil {
						b.Error(err)
					}
					if !computed {
						mu.Lock()
						waits = append(waits, d)
						mu.Unlock()
					}
				}()
			}
			close(start)
			wg.Wait()
		}
		b.ReportMetric(float64(computations.Load())/float64(iter), "computations/expiry")
		if len(waits) > 0 {
			slices.Sort(waits)
			b.ReportMetric(float64(waits[len(waits)/2].Microseconds())/1000, "waiter-p50-ms")
			b.ReportMetric(float64(waits[len(waits)*99/100].Microseconds())/1000, "waiter-p99-ms")
		}
	}
	b.Run("baseline_cache_aside", func(b *testing.B) {
		run(b, func(inst int, key string, calls *atomic.Int64) (bool, error) {
			rdb := clients[inst]
			err := rdb.Get(ctx, key).Err()
			if err == nil {
				return false, nil
			}
			calls.Add(1)
			time.Sleep(compute)
			return true, rdb.Set(ctx, key, "v", time.Minute).Err()
		})
	})
	b.Run("GetOrCompute", func(b *testing.B) {
		run(b, func(inst int, key string, calls *atomic.Int64) (bool, error) {
			var o Outcome
			_, err := GetOrCompute(ctx, instances[inst], key, time.Minute, func(context.Context) (string, error) {
				calls.Add(1)
				time.Sleep(compute)
				return "v", nil
			}, WithOutcome(&o))
			return o == OutcomeMissComputed, err
		})
	})
}
