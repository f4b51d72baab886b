package limits

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/metrictest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/redistest"
)

// countingClient counts the Redis round trips the limiter makes.
type countingClient struct {
	Client
	// scripts counts the decisions sent to Redis: the keys of EVAL and
	// EVALSHA (every key of a window script is one decision, and a merged
	// batch carries several).
	scripts atomic.Int64
	merged  atomic.Int64 // merged batches sent (one script run, ≥ 2 decisions)
	dels    atomic.Int64
	pipes   atomic.Int64 // pipelines created (batches of ≥ 2 decisions)
}

func (c *countingClient) Eval(ctx context.Context, script string, keys []string, args ...interface{}) *redis.Cmd {
	c.scripts.Add(int64(len(keys)))
	return c.Client.Eval(ctx, script, keys, args...)
}

func (c *countingClient) EvalSha(ctx context.Context, sha1 string, keys []string, args ...interface{}) *redis.Cmd {
	c.scripts.Add(int64(len(keys)))
	return c.Client.EvalSha(ctx, sha1, keys, args...)
}

func (c *countingClient) Pipeline() redis.Pipeliner {
	c.pipes.Add(1)
	return &countingPipe{Pipeliner: c.Client.Pipeline(), c: c}
}

// countingPipe counts the decisions queued in a pipeline (batched, but
// still Redis work).
type countingPipe struct {
	redis.Pipeliner
	c *countingClient
}

func (p *countingPipe) EvalSha(ctx context.Context, sha1 string, keys []string, args ...interface{}) *redis.Cmd {
	p.c.scripts.Add(int64(len(keys)))
	if len(keys) > 1 {
		p.c.merged.Add(1)
	}
	return p.Pipeliner.EvalSha(ctx, sha1, keys, args...)
}

// Options passes the inner client's through, so the batcher sees whether it
// honours deadlines (see scriptbatch.RespectsDeadlines).
func (c *countingClient) Options() *redis.Options {
	if rc, ok := c.Client.(*redis.Client); ok {
		return rc.Options()
	}
	return nil
}

func (g *gateClient) Options() *redis.Options { return g.Client.(*countingClient).Options() }

func (c *countingClient) Del(ctx context.Context, keys ...string) *redis.IntCmd {
	c.dels.Add(1)
	return c.Client.Del(ctx, keys...)
}

// testHashKey is the HashKey of the tests' limiters.
var testHashKey = []byte("limits-test-hash-key-0123456789")

// fakeClock is the clock of what a test limiter keeps in memory (block
// cache, leases, the outage limiter), so windows, leases and OutageAfter
// pass without sleeping. Redis windows still follow the server's clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1767225600, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// gateClient is the test limiters' client. Once hold is set, it holds every
// single-decision EVALSHA until release is closed, reporting each on
// entered: a round trip Redis has not answered yet, with the limiter's slot
// provably taken.
type gateClient struct {
	Client
	hold    atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (g *gateClient) EvalSha(ctx context.Context, sha1 string, keys []string, args ...interface{}) *redis.Cmd {
	if !g.hold.Load() {
		return g.Client.EvalSha(ctx, sha1, keys, args...)
	}
	g.entered <- struct{}{}
	select {
	case <-g.release:
	case <-ctx.Done():
	}
	return g.Client.EvalSha(ctx, sha1, keys, args...)
}

type testBundle struct {
	srv   *redistest.Server
	rdb   *redis.Client
	calls *countingClient
	gate  *gateClient // between the limiter and calls
	reg   *prometheus.Registry
	clock *fakeClock
	l     *Limiter
}

// setup starts a private redis-server and a Limiter on it; mutate adjusts
// the config before New.
func setup(t *testing.T, mutate func(*Config)) *testBundle {
	t.Helper()
	return setupOn(t, redistest.Start(t), mutate)
}

// setupOn builds the bundle on srv. The limiter's client honours context
// deadlines, as in production (redisconn sets ContextTimeoutEnabled).
func setupOn(t *testing.T, srv *redistest.Server, mutate func(*Config)) *testBundle {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	b := &testBundle{srv: srv, rdb: rdb, calls: &countingClient{Client: rdb}, reg: prometheus.NewRegistry(), clock: newFakeClock()}
	b.gate = &gateClient{Client: b.calls, entered: make(chan struct{}, 64), release: make(chan struct{})}
	// A generous deadline: on two busy cores under -race a healthy round
	// trip can take longer than the 50 ms default. Tests of deadlines set
	// their own.
	cfg := Config{Client: b.gate, Prefix: "test:", Registerer: b.reg, HashKey: testHashKey, now: b.clock.Now, Timeout: 2 * time.Second}
	if mutate != nil {
		mutate(&cfg)
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	b.l = l
	return b
}

// metric reads one counter sample from the bundle's registry (0 if absent).
func (b *testBundle) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	return gather(t, b.reg, name, labels)
}

func gather(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	v, _ := metrictest.Value(t, reg, name, labels)
	return v
}

// allKeys lists every key of a single server.
func allKeys(t *testing.T, rdb redis.Cmdable) []string {
	t.Helper()
	keys, err := rdb.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	return keys
}
