package cache

import (
	"context"
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
	c, err := New(rdb, Config{Prefix: "app:", Registerer: reg, RedisTimeout: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	ctx := context.Background()
	keys := []string{"status:{1}", "status:2", "status:3", "count:tips:30d:{7}", "a", "b", "c"}

	// The miss path (GET, readOrLock, the fenced store) under concurrency.
	var calls atomic.Int32
	var wg sync.WaitGroup
	for _, k := range keys {
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := GetOrCompute(ctx, c, k, time.Minute, func(context.Context) (string, error) {
					calls.Add(1)
					return "v:" + k, nil
				}, WithStaleWhileRevalidate(time.Second))
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
	// The lock's own scripts, called the way a computation calls them:
	// take the lock, extend it, release it.
	for _, k := range keys {
		rk, _ := c.keyer.keys(k)
		if n := rdb.Exists(ctx, rk.value).Val(); n != 0 {
			t.Fatalf("%s survived invalidation", rk.value)
		}
		token := newToken()
		if st, _, err := c.readOrLock(ctx, rk, token, time.Minute); err != nil || st != stateAcquired {
			t.Fatalf("%s: readOrLock = %v, %v", k, st, err)
		}
		if ok, err := c.extend(ctx, rk, token, time.Minute); err != nil || !ok {
			t.Fatalf("%s: extend = %v, %v", k, ok, err)
		}
		c.unlock(ctx, rk, token)
		if n := rdb.Exists(ctx, rk.lock).Val(); n != 0 {
			t.Fatalf("%s: lock left after unlock", k)
		}
	}
	if n := counter(t, reg, "jobworker_cache_redis_errors_total"); n != 0 {
		t.Fatalf("%v Redis errors (CROSSSLOT?)", n)
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
