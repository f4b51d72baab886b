package cache

import (
	"context"
	"crypto/sha1"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
	return b.instanceOn(t, b.srv.Client(t), cfg)
}

// observedInstance is another Cache, on an observedRedis over its own
// client; hook (may be nil) becomes the wrapper's afterScript.
func (b *testBundle) observedInstance(t *testing.T, cfg Config, hook func(string, []string, *redis.Cmd)) (*Cache, *observedRedis) {
	t.Helper()
	obs := &observedRedis{Redis: b.srv.Client(t), afterScript: hook}
	c, _ := b.instanceOn(t, obs, cfg)
	return c, obs
}

// instanceOn is a Cache on rdb with its own registry, closed at test end.
func (b *testBundle) instanceOn(t *testing.T, rdb Redis, cfg Config) (*Cache, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	if cfg.RedisTimeout == 0 {
		// Tests share two cores under -race: 100ms pool waits happen and
		// would (correctly) fail open. Timeouts are tested in TestRedisDown.
		cfg.RedisTimeout = time.Second
	}
	c, err := New(rdb, cfg)
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

// counter sums the samples of a counter whose labels include the pairs
// given (name, value, ...); 0 when absent.
func counter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
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

// observedRedis wraps the client a Cache uses, so a test can see its Redis
// traffic: the calls in flight, and each script call as it returns. (Like
// asynq's wrapping broker, it observes the real server; it fakes nothing.)
// A Cache on it uses the watchdog path of bounded, since it is not a
// *redis.Client.
type observedRedis struct {
	Redis
	inflight atomic.Int32
	// afterScript, set before the Cache is used, sees every script call
	// (by script hash) with its keys and its reply.
	afterScript func(sha string, keys []string, cmd *redis.Cmd)
}

func (o *observedRedis) begin() func() {
	o.inflight.Add(1)
	return func() { o.inflight.Add(-1) }
}

func (o *observedRedis) script(sha string, keys []string, cmd *redis.Cmd) *redis.Cmd {
	if o.afterScript != nil {
		o.afterScript(sha, keys, cmd)
	}
	return cmd
}

func (o *observedRedis) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	defer o.begin()()
	return o.script(sha, keys, o.Redis.EvalSha(ctx, sha, keys, args...))
}

func (o *observedRedis) Eval(ctx context.Context, src string, keys []string, args ...any) *redis.Cmd {
	defer o.begin()()
	return o.script(fmt.Sprintf("%x", sha1.Sum([]byte(src))), keys, o.Redis.Eval(ctx, src, keys, args...))
}

func (o *observedRedis) Get(ctx context.Context, key string) *redis.StringCmd {
	defer o.begin()()
	return o.Redis.Get(ctx, key)
}

func (o *observedRedis) Del(ctx context.Context, keys ...string) *redis.IntCmd {
	defer o.begin()()
	return o.Redis.Del(ctx, keys...)
}

func (o *observedRedis) Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	defer o.begin()()
	return o.Redis.Pipelined(ctx, fn)
}

// onExtend returns an afterScript hook that calls fn with the lock key
// each time the extend script succeeds on it.
func onExtend(fn func(lockKey string)) func(string, []string, *redis.Cmd) {
	return func(sha string, keys []string, cmd *redis.Cmd) {
		if sha != extendScript.Hash() || len(keys) == 0 {
			return
		}
		if n, err := cmd.Int(); err == nil && n == 1 {
			fn(keys[0])
		}
	}
}

// waitExpired returns once Redis has expired key, told by the server's
// keyspace notifications (the test owns the server, so it may CONFIG SET).
func waitExpired(t *testing.T, rdb *redis.Client, key string) {
	t.Helper()
	ctx := context.Background()
	if err := rdb.ConfigSet(ctx, "notify-keyspace-events", "Ex").Err(); err != nil {
		t.Fatal(err)
	}
	sub := rdb.Subscribe(ctx, "__keyevent@0__:expired")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription is live
		t.Fatal(err)
	}
	if rdb.Exists(ctx, key).Val() == 0 { // expired before we listened
		return
	}
	expired := sub.Channel()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-expired:
			if m.Payload == key {
				return
			}
		case <-deadline:
			t.Fatalf("%s did not expire within 10s", key)
		}
	}
}
