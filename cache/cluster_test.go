package cache

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/redistest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// TestCluster: every script and Invalidate work on Redis Cluster, for keys
// with and without their own hash tag (no CROSSSLOT).
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	t.Parallel()
	cl := redistest.StartCluster(t)
	rdb := cl.Client(t)
	reg := prometheus.NewRegistry()
	// The cluster shares two cores with the other parallel tests under
	// -race: a generous RedisTimeout keeps slow answers from counting as
	// failures, which are what this test looks for (CROSSSLOT).
	if err := rdb.ForEachShard(context.Background(), func(ctx context.Context, n *redis.Client) error {
		return n.Ping(ctx).Err()
	}); err != nil {
		t.Fatal(err)
	}
	// Each computation holds until its lock has been extended once, so the
	// extend script runs on the cluster too.
	keys := []string{"status:{1}", "status:2", "status:3", "count:tips:30d:{7}", "a", "b", "c"}
	keyer := newKeyer("app:", false)
	type gate struct {
		once sync.Once
		open chan struct{}
	}
	gates := map[string]*gate{} // by lock key; read-only once built
	for _, k := range keys {
		rk, _ := keyer.keys(k)
		gates[rk.lock] = &gate{open: make(chan struct{})}
	}
	obs := &observedRedis{Redis: rdb, afterScript: onExtend(func(lock string) {
		if g := gates[lock]; g != nil {
			g.once.Do(func() { close(g.open) })
		}
	})}
	c, err := New(obs, Config{Prefix: "app:", LockTTL: 300 * time.Millisecond, Registerer: reg,
		RedisTimeout: 2 * time.Second, MaxComputeTime: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	ctx := context.Background()
	var calls atomic.Int32
	compute := func(k string) func(context.Context) (string, error) {
		rk, _ := c.keyer.keys(k)
		return func(ctx context.Context) (string, error) {
			calls.Add(1)
			select {
			case <-gates[rk.lock].open:
			case <-ctx.Done():
				return "", fmt.Errorf("lock of %s never extended: %w", k, ctx.Err())
			}
			return "v:" + k, nil
		}
	}
	var wg sync.WaitGroup
	for _, k := range keys {
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := GetOrCompute(ctx, c, k, time.Minute, compute(k), WithStaleWhileRevalidate(time.Second))
				if err != nil || v != "v:"+k {
					t.Errorf("%s: %q %v", k, v, err)
				}
			}()
		}
	}
	wg.Wait()
	if n := calls.Load(); n != int32(len(keys)) {
		t.Fatalf("%d computations for %d keys", n, len(keys))
	}
	if n := counter(t, reg, "jobworker_cache_redis_errors_total"); n != 0 {
		t.Fatalf("%v Redis errors (CROSSSLOT?)", n)
	}
	if err := c.Invalidate(ctx, keys...); err != nil {
		t.Fatalf("invalidate: %v", err)
	}
	for _, k := range keys {
		rk, _ := c.keyer.keys(k)
		if n := rdb.Exists(ctx, rk.value).Val(); n != 0 {
			t.Fatalf("%s survived invalidation", rk.value)
		}
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
