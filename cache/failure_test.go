package cache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// holdLock starts a computation on c that holds key's mini-lock until
// release is closed. It returns once the computation is running.
func holdLock(t *testing.T, c *Cache, key string, ttl time.Duration, opts ...Option) (release func(), result <-chan string) {
	t.Helper()
	running := make(chan struct{})
	rel := make(chan struct{})
	res := make(chan string, 1)
	go func() {
		v, err := GetOrCompute(context.Background(), c, key, ttl, func(context.Context) (string, error) {
			close(running)
			<-rel
			return "holder", nil
		}, opts...)
		if err != nil {
			v = "error: " + err.Error()
		}
		res <- v
	}()
	<-running
	var once sync.Once
	release = func() { once.Do(func() { close(rel) }) }
	t.Cleanup(release)
	return release, res
}

func TestWaitBudget(t *testing.T) {
	t.Parallel()
	const budget = 200 * time.Millisecond
	tests := []struct {
		name        string
		withStale   bool
		wantOutcome Outcome
		wantValue   string
	}{
		{name: "no stale value: compute without the lock", wantOutcome: OutcomeLockTimeout, wantValue: "waiter"},
		{name: "stale-if-error value: serve it", withStale: true, wantOutcome: OutcomeStaleServed, wantValue: "old"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := newFakeClock()
			cfg := Config{Now: clock.Now, LockTTL: time.Second, RedisTimeout: time.Second}
			b := setup(t, cfg)
			other, _ := b.instance(t, cfg)
			opts := []Option{WithStaleIfError(time.Hour)}
			ctx := context.Background()
			if tt.withStale {
				if _, err := GetOrCompute(ctx, b.c, "k", time.Second, func(context.Context) (string, error) {
					return "old", nil
				}, opts...); err != nil {
					t.Fatal(err)
				}
				clock.Advance(2 * time.Second) // past the TTL, inside stale-if-error
			}
			release, holderRes := holdLock(t, b.c, "k", time.Second, opts...)

			var o Outcome
			var waitedFor time.Duration
			start := time.Now()
			v, err := GetOrCompute(ctx, other, "k", time.Second, func(context.Context) (string, error) {
				waitedFor = time.Since(start)
				return "waiter", nil
			}, append(opts, WithWaitBudget(budget), WithOutcome(&o))...)
			elapsed := time.Since(start)
			if err != nil || v != tt.wantValue || o != tt.wantOutcome {
				t.Fatalf("got %q, %v, %s; want %q, %s", v, err, o, tt.wantValue, tt.wantOutcome)
			}
			if waitedFor == 0 {
				waitedFor = elapsed
			}
			// Gave up within the budget (plus scheduling slack under -race).
			if waitedFor < budget-10*time.Millisecond || waitedFor > budget+150*time.Millisecond {
				t.Fatalf("waited %v, budget %v", waitedFor, budget)
			}
			t.Logf("gave up after %v (budget %v)", waitedFor, budget)
			release()
			if v := <-holderRes; v != "holder" {
				t.Fatalf("holder got %q", v)
			}
		})
	}
}

// TestLockExtension: a computation longer than LockTTL keeps its lock, so
// a waiter on another instance waits for it instead of computing too.
func TestLockExtension(t *testing.T) {
	t.Parallel()
	// LockTTL is short for a quick test, long enough that a loaded machine
	// does not stall an extension past it.
	cfg := Config{LockTTL: 600 * time.Millisecond, WaitBudget: 10 * time.Second, RedisTimeout: time.Second}
	b := setup(t, cfg)
	extends := make(chan struct{}, 64)
	holder, _ := b.observedInstance(t, cfg, onExtend(func(string) {
		select {
		case extends <- struct{}{}:
		default:
		}
	}))
	waiting := make(chan struct{}, 1)
	other, _ := b.observedInstance(t, cfg, func(sha string, _ []string, cmd *redis.Cmd) {
		if v, err := cmd.Slice(); sha == readOrLockScript.Hash() && err == nil && len(v) > 0 && v[0] == int64(stateHeld) {
			select {
			case waiting <- struct{}{}:
			default:
			}
		}
	})
	release, holderRes := holdLock(t, holder, "k", time.Minute)
	got := make(chan string, 1)
	var waiterComputed atomic.Bool
	go func() {
		v, _ := GetOrCompute(context.Background(), other, "k", time.Minute, func(context.Context) (string, error) {
			waiterComputed.Store(true)
			return "waiter", nil
		})
		got <- v
	}()
	// Once the waiter has found the lock held, let the holder extend it
	// four times: the extensions are LockTTL/3 apart, so the lock then has
	// outlived its LockTTL while the waiter polled.
	timeout := time.After(10 * time.Second)
	wait := func(sig <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-sig:
		case v := <-got:
			t.Fatalf("waiter returned %q while the holder was computing", v)
		case <-timeout:
			t.Fatalf("no %s within 10s", what)
		}
	}
	wait(waiting, "waiter on the lock")
	for len(extends) > 0 { // extensions before the waiter came count for nothing
		<-extends
	}
	for range 4 {
		wait(extends, "lock extension")
	}
	release()
	if v := <-got; v != "holder" || waiterComputed.Load() {
		t.Fatalf("waiter got %q (computed: %v)", v, waiterComputed.Load())
	}
	<-holderRes
}

func TestInvalidate(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	c2, _ := b.instance(t, Config{})
	c3, _ := b.instance(t, Config{})
	ctx := context.Background()
	var version atomic.Int32
	version.Store(1)
	compute := func(context.Context) (string, error) { return fmt.Sprintf("v%d", version.Load()), nil }
	for _, c := range []*Cache{b.c, c2, c3} {
		if v, err := GetOrCompute(ctx, c, "status:{42}", time.Hour, compute); err != nil || v != "v1" {
			t.Fatalf("warm: %q %v", v, err)
		}
	}
	version.Store(2) // the source of truth changes…
	if err := c2.Invalidate(ctx, "status:{42}", "other"); err != nil {
		t.Fatal(err)
	}
	// …and every instance sees it on its very next read.
	for i, c := range []*Cache{c3, b.c, c2} {
		if v, err := GetOrCompute(ctx, c, "status:{42}", time.Hour, compute); err != nil || v != "v2" {
			t.Fatalf("instance %d after invalidate: %q %v", i, v, err)
		}
	}
	if err := b.c.Invalidate(ctx); err != nil {
		t.Fatalf("no keys: %v", err)
	}
	if err := b.c.Invalidate(ctx, ""); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("empty key: %v", err)
	}
}

// TestInvalidateFencesInflight: a value computed from data read before the
// invalidation must not be stored after it.
func TestInvalidateFencesInflight(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	ctx := context.Background()
	release, holderRes := holdLock(t, b.c, "k", time.Hour)
	if err := b.c.Invalidate(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	release()
	if v := <-holderRes; v != "holder" {
		t.Fatalf("holder's caller got %q", v)
	}
	if n := b.rdb.Exists(ctx, "cache:{k}").Val(); n != 0 {
		t.Fatal("pre-invalidation value was stored")
	}
	if n := counter(t, b.reg, "jobworker_cache_writes_skipped_total", "reason", "lock_lost"); n != 1 {
		t.Fatalf("lock_lost = %v", n)
	}
	v, err := GetOrCompute(ctx, b.c, "k", time.Hour, func(context.Context) (string, error) { return "fresh", nil })
	if err != nil || v != "fresh" {
		t.Fatalf("after: %q %v", v, err)
	}
}

func TestRedisDown(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		pause bool // SIGSTOP (hung) instead of stopped (refused)
		// ctxTimeouts uses a client that honours context deadlines itself;
		// otherwise the cache's watchdog must bound the call.
		ctxTimeouts bool
	}{
		{name: "stopped"},
		{name: "paused, watchdog", pause: true},
		{name: "paused, ContextTimeoutEnabled", pause: true, ctxTimeouts: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const redisTimeout = 80 * time.Millisecond
			b := setup(t, Config{})
			rdb := b.srv.Client(t)
			if tt.ctxTimeouts {
				rdb = redis.NewClient(&redis.Options{Addr: b.srv.Addr(), MaxRetries: -1, ContextTimeoutEnabled: true})
				t.Cleanup(func() { _ = rdb.Close() })
			}
			reg := prometheus.NewRegistry()
			c, err := New(rdb, Config{RedisTimeout: redisTimeout, Registerer: reg})
			if err != nil {
				t.Fatal(err)
			}
			if err := rdb.Ping(context.Background()).Err(); err != nil { // warm a connection
				t.Fatal(err)
			}
			if tt.pause {
				b.srv.Pause()
				t.Cleanup(b.srv.Resume)
			} else {
				b.srv.Stop()
			}
			var calls atomic.Int32
			const callers = 50
			var wg sync.WaitGroup
			start := time.Now()
			for i := 0; i < callers; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var o Outcome
					v, err := GetOrCompute(context.Background(), c, "k", time.Minute, func(context.Context) (string, error) {
						calls.Add(1)
						return "computed", nil
					}, WithOutcome(&o))
					if err != nil || v != "computed" || o != OutcomeDegraded {
						t.Errorf("got %q, %v, %s", v, err, o)
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			if elapsed > redisTimeout+500*time.Millisecond {
				t.Fatalf("callers took %v with RedisTimeout %v", elapsed, redisTimeout)
			}
			if n := outcomes(t, reg)[OutcomeDegraded]; n != callers {
				t.Fatalf("degraded = %d, want %d", n, callers)
			}
			t.Logf("%d callers answered in %v with %d computations", callers, elapsed, calls.Load())
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if tt.pause {
				b.srv.Resume()
			}
			_ = c.Close(ctx)
		})
	}
}

func TestStaleWhileRevalidate(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	b := setup(t, Config{Now: clock.Now})
	ctx := context.Background()
	opts := []Option{WithStaleWhileRevalidate(time.Hour)}
	var calls atomic.Int32
	refreshed := make(chan struct{}, 10)
	compute := func(context.Context) (string, error) {
		n := calls.Add(1)
		if n > 1 {
			refreshed <- struct{}{}
		}
		return fmt.Sprintf("v%d", n), nil
	}
	if v, err := GetOrCompute(ctx, b.c, "k", time.Second, compute, opts...); err != nil || v != "v1" {
		t.Fatalf("warm: %q %v", v, err)
	}
	clock.Advance(2 * time.Second) // stale, inside the SWR window

	// A hot key: everyone gets the stale value at once; one refresh runs.
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var o Outcome
			v, err := GetOrCompute(ctx, b.c, "k", time.Second, compute, append(opts, WithOutcome(&o))...)
			if err != nil || (v == "v1") != (o == OutcomeStaleServed) {
				t.Errorf("got %q, %v, %s", v, err, o)
			}
		}()
	}
	wg.Wait()
	<-refreshed
	// The refresh lands (the detached work it runs in ends, see Close);
	// the next read is a fresh hit.
	b.c.wg.Wait()
	var o Outcome
	if v, err := GetOrCompute(ctx, b.c, "k", time.Second, compute, append(opts, WithOutcome(&o))...); err != nil || v != "v2" || o != OutcomeHit {
		t.Fatalf("after the refresh: %q, %v, %s", v, err, o)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d computations, want 2", n)
	}
}

func TestComputeFailure(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	tests := []struct {
		name      string
		compute   func(context.Context) (string, error)
		withStale bool
		wantErr   string
		wantValue string
		wantOut   Outcome
	}{
		{name: "error", compute: func(context.Context) (string, error) { return "", boom },
			wantErr: "boom", wantOut: OutcomeError},
		{name: "panic", compute: func(context.Context) (string, error) { panic("kaboom") },
			wantErr: "panicked: kaboom", wantOut: OutcomeError},
		{name: "error with a stale-if-error value", compute: func(context.Context) (string, error) { return "", boom },
			withStale: true, wantValue: "old", wantOut: OutcomeStaleServed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := newFakeClock()
			b := setup(t, Config{Now: clock.Now})
			ctx := context.Background()
			opts := []Option{WithStaleIfError(time.Hour)}
			if tt.withStale {
				if _, err := GetOrCompute(ctx, b.c, "k", time.Second, func(context.Context) (string, error) {
					return "old", nil
				}, opts...); err != nil {
					t.Fatal(err)
				}
				clock.Advance(2 * time.Second)
			}
			var o Outcome
			v, err := GetOrCompute(ctx, b.c, "k", time.Second, tt.compute, append(opts, WithOutcome(&o))...)
			if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) ||
				v != tt.wantValue || o != tt.wantOut {
				t.Fatalf("got %q, %v, %s", v, err, o)
			}
			// The lock is released at once: the next caller computes without waiting.
			if n := b.rdb.Exists(ctx, "lock:cache:{k}").Val(); n != 0 {
				t.Fatal("lock left behind after a failed computation")
			}
		})
	}
}

// TestWaiterLeaves: a caller that gives up does not cancel the computation
// others share.
func TestWaiterLeaves(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	release := make(chan struct{})
	running := make(chan struct{})
	var computeErr atomic.Value
	compute := func(ctx context.Context) (string, error) {
		close(running)
		<-release
		computeErr.Store(fmt.Sprint(ctx.Err()))
		return "shared", nil
	}
	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	leaderDone := make(chan error, 1)
	go func() {
		_, err := GetOrCompute(leaderCtx, b.c, "k", time.Minute, compute)
		leaderDone <- err
	}()
	<-running
	other := make(chan string, 1)
	go func() {
		v, _ := GetOrCompute(context.Background(), b.c, "k", time.Minute, compute)
		other <- v
	}()
	cancelLeader()
	if err := <-leaderDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("leader: %v", err)
	}
	close(release)
	if v := <-other; v != "shared" {
		t.Fatalf("other caller got %q", v)
	}
	if got := computeErr.Load(); got != "<nil>" {
		t.Fatalf("computation saw ctx error %v", got)
	}
}

// TestMixedTypes: callers of one key with different Go types share the
// flight and each gets its own type, through the codec.
func TestMixedTypes(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	joined := make(chan struct{}, 1)
	b.c.hooks.joined = func() { joined <- struct{}{} }
	type status struct {
		Live bool `json:"live"`
	}
	running, release := make(chan struct{}), make(chan struct{})
	leader := make(chan status, 1)
	go func() {
		v, _ := GetOrCompute(context.Background(), b.c, "k", time.Minute, func(context.Context) (status, error) {
			close(running)
			<-release
			return status{Live: true}, nil
		})
		leader <- v
	}()
	<-running
	got := make(chan map[string]any, 1)
	var o Outcome
	go func() {
		v, err := GetOrCompute(context.Background(), b.c, "k", time.Minute, func(context.Context) (map[string]any, error) {
			return nil, errors.New("must not run")
		}, WithOutcome(&o))
		if err != nil {
			t.Error(err)
		}
		got <- v
	}()
	<-joined // the second caller waits on the leader's flight
	close(release)
	if v := <-leader; !v.Live {
		t.Fatalf("leader got %+v", v)
	}
	if v := <-got; v["live"] != true || o != OutcomeWaitedHit {
		t.Fatalf("joined caller got %v (%s)", v, o)
	}
}

func TestClosed(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	if err := b.c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err := GetOrCompute(context.Background(), b.c, "k", time.Second, func(context.Context) (int, error) { return 1, nil })
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}
