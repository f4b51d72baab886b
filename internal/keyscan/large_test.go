package keyscan_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/keyscan"
	"github.com/digis/jobworker/internal/redistest"
)

// pingLoop PINGs addr back to back on its own connection until stop is
// closed and returns every round-trip time.
func pingLoop(t testing.TB, addr string, stop <-chan struct{}) func() []time.Duration {
	c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1, MaxRetries: -1, ReadTimeout: 5 * time.Second})
	var mu sync.Mutex
	var rtts []time.Duration
	done := make(chan struct{})
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			if err := c.Ping(ctx).Err(); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			rtts = append(rtts, time.Since(start))
			mu.Unlock()
		}
	}()
	return func() []time.Duration {
		<-done
		_ = c.Close()
		mu.Lock()
		defer mu.Unlock()
		slices.Sort(rtts)
		return rtts
	}
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(float64(len(d))*q))]
}

// large fills a private server with 500k keys over three prefixes, a
// fifth of them with a TTL.
func large(t testing.TB) (*redistest.Server, *redis.Client) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	fill(t, rdb, "jw:rl:strict:", 100_000, 16, time.Hour)
	fill(t, rdb, "jw:idem:http:", 250_000, 64, 0)
	fill(t, rdb, "jw:cache:status:", 150_000, 32, 0)
	return srv, rdb
}

// TestScanLargeKeyspace: 500k keys counted exactly per prefix while a PING
// loop runs on another connection; the PING times are logged (measured, not
// asserted: see BenchmarkScanUnderPing and docs/benchmarks.md).
func TestScanLargeKeyspace(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 500k keys")
	}
	t.Parallel()
	srv, rdb := large(t)
	stop := make(chan struct{})
	rtts := pingLoop(t, srv.Addr(), stop)
	rep, err := keyscan.Scan(context.Background(), rdb, keyscan.Options{MaxKeys: -1})
	close(stop)
	got := rtts()
	if err != nil {
		t.Fatal(err)
	}
	ps := byPrefix(rep)
	if rep.Keys != 500_000 || ps["jw:rl:strict:"].Keys != 100_000 || ps["jw:rl:strict:"].NoTTL != 0 ||
		ps["jw:idem:http:"].Keys != 250_000 || ps["jw:cache:status:"].Keys != 150_000 || ps["jw:cache:status:"].NoTTL != 150_000 {
		t.Errorf("counts: %d keys, %+v", rep.Keys, rep.Prefixes)
	}
	t.Logf("500k keys: %d PINGs during the scan, p50 %v, p99 %v, max %v", len(got), quantile(got, 0.5), quantile(got, 0.99), got[len(got)-1])
}

// BenchmarkScanUnderPing measures the slowest PING another client sees while
// 500k keys are walked: keyscan.Scan (SCAN COUNT 1000 plus pipelined
// TYPE/PTTL/MEMORY USAGE) against KEYS * and against an idle server, in the
// same run (the machine's own scheduling noise shows in the idle case).
//
//	go test ./internal/keyscan -run '^$' -bench ScanUnderPing -benchtime 3x
func BenchmarkScanUnderPing(b *testing.B) {
	srv, rdb := large(b)
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		walk func() error
	}{
		{name: "keyscan", walk: func() error {
			_, err := keyscan.Scan(ctx, rdb, keyscan.Options{MaxKeys: -1})
			return err
		}},
		{name: "KEYS", walk: func() error { return rdb.Keys(ctx, "*").Err() }},
		// The baseline: the same PING loop with nothing else talking to
		// Redis, for about as long as a scan (the sleep is the scenario).
		{name: "idle", walk: func() error { time.Sleep(2 * time.Second); return nil }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var worst, p99 time.Duration
			for b.Loop() {
				stop := make(chan struct{})
				rtts := pingLoop(b, srv.Addr(), stop)
				if err := bc.walk(); err != nil {
					b.Fatal(err)
				}
				close(stop)
				got := rtts()
				worst = max(worst, got[len(got)-1])
				p99 = max(p99, quantile(got, 0.99))
			}
			b.ReportMetric(float64(worst.Microseconds())/1000, "ping-max-ms")
			b.ReportMetric(float64(p99.Microseconds())/1000, "ping-p99-ms")
		})
	}
}
