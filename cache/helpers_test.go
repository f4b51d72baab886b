package cache

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/metrictest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/redistest"
)

// testBundle is one Redis server and a first cache instance on it.
type testBundle struct {
	srv *redistest.Server
	rdb *redis.Client
	reg *prometheus.Registry
	c   *Cache
}

func setup(t *testing.T, cfg Config) *testBundle {
	t.Helper()
	srv := redistest.Start(t)
	b := &testBundle{srv: srv, rdb: srv.Client(t)}
	b.c, b.reg = b.instance(t, cfg)
	return b
}

// instance is another Cache on its own client: another app instance as far
// as Redis is concerned.
func (b *testBundle) instance(t *testing.T, cfg Config) (*Cache, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	if cfg.RedisTimeout == 0 {
		// Tests share two cores under -race: 100ms pool waits happen and
		// would (correctly) fail open. Timeouts are tested in TestRedisDown.
		cfg.RedisTimeout = time.Second
	}
	c, err := New(b.srv.Client(t), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c, reg
}

// counter reads one sample of a counter from a registry (label pairs as
// name, value, ...); 0 when absent.
func counter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	v, _ := metrictest.Value(t, reg, name, want)
	return v
}

func outcomes(t *testing.T, reg *prometheus.Registry) map[Outcome]int {
	t.Helper()
	m := map[Outcome]int{}
	for _, o := range allOutcomes {
		if n := int(counter(t, reg, "jobworker_cache_requests_total", "outcome", string(o))); n > 0 {
			m[o] = n
		}
	}
	return m
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_800_000_000, 0)} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

// assertAllKeysHaveTTL scans the whole server: nothing may live forever.
func assertAllKeysHaveTTL(t *testing.T, rdb *redis.Client) {
	t.Helper()
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, "*", 100).Iterator()
	n := 0
	for iter.Next(ctx) {
		n++
		ttl, err := rdb.PTTL(ctx, iter.Val()).Result()
		if err != nil {
			t.Fatalf("PTTL %s: %v", iter.Val(), err)
		}
		if ttl == -1 { // go-redis reports "no expiry" as -1ns (-2ns: expired meanwhile)
			t.Errorf("key %q has no TTL (%v)", iter.Val(), ttl)
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("scan: %v", err)
	}
	t.Logf("%d keys, all with a TTL", n)
}
