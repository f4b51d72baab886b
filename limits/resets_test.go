package limits

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/testwait"
)

// instance is one API instance's limiter on the shared Redis, with its own
// connection, clock and local cache, listening for resets.
func instance(t *testing.T, srv *redistest.Server, listen bool, leases map[string]int) *Limiter {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, ReadTimeout: 2 * time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	l, err := New(Config{Client: rdb, Prefix: "test:", HashKey: testHashKey, Timeout: 2 * time.Second,
		Leases: leases, now: newFakeClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	if listen {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = l.Listen(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		// Listen empties the cache when its subscription is confirmed;
		// wait for that before the test fills it.
		testwait.For(t, 5*time.Second, "the reset listener subscribed", func() bool {
			n, err := rdb.PubSubNumSub(context.Background(), "test:"+ResetChannel).Result()
			return err == nil && n["test:"+ResetChannel] >= 1
		})
	}
	return l
}

// TestResetReachesEveryInstance: an identity blocked in two instances'
// local caches (one of them also holding a lease) is admitted by both at
// once after a reset made by a third limiter, as jobctl limits reset makes
// it. Without Listen the instances would refuse from memory until their
// cached window ends.
func TestResetReachesEveryInstance(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	a := instance(t, srv, true, nil)
	b := instance(t, srv, true, map[string]int{"tips:quick": 4})
	ops := instance(t, srv, false, nil)
	for i := 0; ; i++ {
		res, err := b.Allow(ctx, "tips:quick", "user:1")
		if err != nil {
			t.Fatal(err)
		}
		if !res.Allowed {
			break
		}
		if i > 20 {
			t.Fatal("the window never filled")
		}
	}
	for _, l := range []*Limiter{a, b} {
		if res, _ := l.Allow(ctx, "tips:quick", "user:1"); res.Allowed || (l == b && res.Reason != ReasonBlockedLocally) {
			t.Fatalf("before the reset: %+v", res)
		}
	}
	if res, _ := b.Allow(ctx, "tips:quick", "user:1"); res.Reason != ReasonBlockedLocally {
		t.Fatalf("b does not block from memory: %s", res.Reason)
	}
	if err := ops.Reset(ctx, "tips:quick", "user:1"); err != nil {
		t.Fatal(err)
	}
	key := ops.key(ops.buckets["tips:quick"], "user:1")
	for name, l := range map[string]*Limiter{"a": a, "b": b} {
		testwait.For(t, 5*time.Second, name+" forgot the window", func() bool { return l.cache.peek(key, l.now()).until.IsZero() })
		res, err := l.Allow(ctx, "tips:quick", "user:1")
		if err != nil || !res.Allowed || res.Reason != ReasonAllowed {
			t.Errorf("%s after the reset: %+v, %v", name, res, err)
		}
	}
}

// TestListenForgetsAllOnResubscribe: a reset published while an instance
// was not subscribed is covered by emptying its cache when it subscribes.
func TestListenForgetsAllOnResubscribe(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	l := instance(t, srv, false, map[string]int{"tips:quick": 4})
	ctx := context.Background()
	for range 3 {
		if _, err := l.Allow(ctx, "tips:quick", "user:2"); err != nil {
			t.Fatal(err)
		}
	}
	if l.cache.len() == 0 {
		t.Fatal("nothing cached")
	}
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Listen(lctx) }()
	testwait.For(t, 5*time.Second, "the cache emptied on subscribe", func() bool { return l.cache.len() == 0 })
	cancel()
	<-done
}

func TestListenNeedsPubSub(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	if err := b.l.Listen(context.Background()); err != ErrNoPubSub {
		t.Errorf("Listen on a client without Pub/Sub = %v", err)
	}
}
