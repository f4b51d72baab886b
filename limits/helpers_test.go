package limits

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/digis/jobworker/internal/metrictest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/redistest"
)

// countingClient counts the Redis round trips the limiter makes.
type countingClient struct {
	Client
	scripts atomic.Int64 // EVAL + EVALSHA
	dels    atomic.Int64
	pipes   atomic.Int64 // pipelines created (batches of ≥ 2 decisions)
}

func (c *countingClient) Eval(ctx context.Context, script string, keys []string, args ...interface{}) *redis.Cmd {
	c.scripts.Add(1)
	return c.Client.Eval(ctx, script, keys, args...)
}

func (c *countingClient) EvalSha(ctx context.Context, sha1 string, keys []string, args ...interface{}) *redis.Cmd {
	c.scripts.Add(1)
	return c.Client.EvalSha(ctx, sha1, keys, args...)
}

func (c *countingClient) Pipeline() redis.Pipeliner {
	c.pipes.Add(1)
	return &countingPipe{Pipeliner: c.Client.Pipeline(), n: &c.scripts}
}

// countingPipe counts scripts queued in a pipeline: each is one decision
// sent to Redis (batched, but still Redis work).
type countingPipe struct {
	redis.Pipeliner
	n *atomic.Int64
}

func (p *countingPipe) EvalSha(ctx context.Context, sha1 string, keys []string, args ...interface{}) *redis.Cmd {
	p.n.Add(1)
	return p.Pipeliner.EvalSha(ctx, sha1, keys, args...)
}

func (c *countingClient) Del(ctx context.Context, keys ...string) *redis.IntCmd {
	c.dels.Add(1)
	return c.Client.Del(ctx, keys...)
}

type testBundle struct {
	srv   *redistest.Server
	rdb   *redis.Client
	calls *countingClient
	reg   *prometheus.Registry
	l     *Limiter
}

// setup starts a private redis-server and a Limiter on it; mutate adjusts
// the config before New.
func setup(t *testing.T, mutate func(*Config)) *testBundle {
	t.Helper()
	return setupOn(t, redistest.Start(t), mutate)
}

func setupOn(t *testing.T, srv *redistest.Server, mutate func(*Config)) *testBundle {
	t.Helper()
	rdb := srv.Client(t)
	b := &testBundle{srv: srv, rdb: rdb, calls: &countingClient{Client: rdb}, reg: prometheus.NewRegistry()}
	cfg := Config{Client: b.calls, Prefix: "test:", Registerer: b.reg}
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
