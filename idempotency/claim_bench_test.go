package idempotency_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/idempotency"
	"github.com/digis/jobworker/internal/cputime"
	"github.com/digis/jobworker/internal/redistest"
)

// BenchmarkClaimDone measures what a delivery's guarantees cost this
// process: a claim with a replay nonce (Acquire + WithNonce) and its done
// marker (CompleteAsync), from 16 and 64 goroutines, against one SET NX PX
// per operation on the same Redis in the same run (the floor of any
// dedupe). cpu-ns/op is this process's CPU time per operation (user and
// system, every goroutine); ratio is the claim's over SET NX's;
// redis-rt/op the claim's round trips per operation (SET NX makes one).
//
//	go test ./idempotency -run '^$' -bench ClaimDone -benchtime 50000x
func BenchmarkClaimDone(b *testing.B) {
	srv := redistest.Start(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true, PoolSize: 64})
	b.Cleanup(func() { _ = rdb.Close() })
	rt := &roundTrips{}
	rdb.AddHook(rt)
	store, err := idempotency.NewStore(rdb, idempotency.StoreConfig{Namespace: "bench", Timeout: 2 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close(context.Background()) })
	claim := func(ctx context.Context, i int64) error {
		id := strconv.FormatInt(i, 10)
		acq, err := store.Acquire(ctx, "{bench}:m"+id, "fp", idempotency.WithNonce("n"+id, time.Minute))
		if err == nil {
			acq.Lease.CompleteAsync(nil, nil)
		}
		return err
	}
	setNX := func(ctx context.Context, i int64) error {
		return rdb.SetNX(ctx, "base:"+strconv.FormatInt(i, 10), 1, time.Hour).Err()
	}
	var next int64
	for _, workers := range []int{16, 64} {
		b.Run("goroutines="+strconv.Itoa(workers), func(b *testing.B) {
			// Rounds alternate the two, so a noisy neighbour slows both.
			const rounds = 4
			var cpu [2]time.Duration
			var trips int64
			for r := 0; r < rounds; r++ {
				for side, op := range []func(context.Context, int64) error{claim, setNX} {
					n := b.N / rounds
					start := next
					next += int64(n)
					c0, t0 := cputime.Self(), rt.n.Load()
					if err := runOps(workers, start, n, op); err != nil {
						b.Fatal(err)
					}
					cpu[side] += cputime.Self() - c0
					if side == 0 {
						trips += rt.n.Load() - t0
					}
				}
			}
			per := func(d time.Duration) float64 { return float64(d) / float64(b.N/rounds*rounds) }
			b.ReportMetric(per(cpu[0]), "cpu-ns/op")
			b.ReportMetric(per(cpu[1]), "setnx-cpu-ns/op")
			b.ReportMetric(float64(cpu[0])/float64(cpu[1]), "ratio")
			b.ReportMetric(float64(trips)/float64(b.N/rounds*rounds), "redis-rt/op")
		})
	}
}

// runOps runs op for keys start … start+n-1 from workers goroutines.
func runOps(workers int, start int64, n int, op func(context.Context, int64) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := start
	end := start + int64(n)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= end {
					return
				}
				if err := op(context.Background(), i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}
