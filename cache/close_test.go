package cache

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/redistest"
)

// startRefresh serves a stale value of "k" and leaves its background
// refresh running compute; it returns once compute has begun.
func startRefresh(t *testing.T, b *testBundle, clock *fakeClock, compute func(context.Context) (string, error)) {
	t.Helper()
	ctx := context.Background()
	opts := []Option{WithStaleWhileRevalidate(time.Hour)}
	if _, err := GetOrCompute(ctx, b.c, "k", time.Second, func(context.Context) (string, error) { return "v1", nil }, opts...); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second) // stale, inside the SWR window
	running := make(chan struct{})
	var o Outcome
	v, err := GetOrCompute(ctx, b.c, "k", time.Second, func(ctx context.Context) (string, error) {
		close(running)
		return compute(ctx)
	}, append(opts, WithOutcome(&o))...)
	if err != nil || v != "v1" || o != OutcomeStaleServed {
		t.Fatalf("stale read: %q, %v, %s", v, err, o)
	}
	<-running
}

// TestCloseWaitsForRefresh: Close returns only after a background refresh
// in flight has finished and stored its value, so a process may close
// Redis right after; later calls get ErrClosed.
func TestCloseWaitsForRefresh(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	b := setup(t, Config{Now: clock.Now})
	release := make(chan struct{})
	startRefresh(t, b, clock, func(context.Context) (string, error) {
		<-release
		return "v2", nil
	})
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		closed <- b.c.Close(ctx)
	}()
	close(release)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	raw, err := b.rdb.Get(context.Background(), "cache:{k}").Bytes()
	if err != nil {
		t.Fatal(err)
	}
	e, err := decodeEnvelope(raw)
	var v string
	if err == nil {
		err = json.Unmarshal(e.payload, &v)
	}
	if err != nil || v != "v2" {
		t.Fatalf("stored after Close: %q (%v), want the refresh's v2", v, err)
	}
	if n := b.rdb.Exists(context.Background(), "lock:cache:{k}").Val(); n != 0 {
		t.Fatal("the refresh's lock is still held after Close")
	}
	_, err = GetOrCompute(context.Background(), b.c, "k", time.Second, func(context.Context) (string, error) { return "v3", nil })
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
}

// TestCloseDeadlineCancelsRefresh: Close keeps waiting while a refresh
// runs, until its own deadline; then it cancels the refresh's context and
// reports the deadline.
func TestCloseDeadlineCancelsRefresh(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	b := setup(t, Config{Now: clock.Now})
	sawCancel := make(chan error, 1)
	startRefresh(t, b, clock, func(ctx context.Context) (string, error) {
		<-ctx.Done()
		sawCancel <- ctx.Err()
		return "", ctx.Err()
	})
	// The refresh blocks until cancelled, so only the deadline ends Close.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.c.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want context.DeadlineExceeded", err)
	}
	select {
	case err := <-sawCancel:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("refresh saw %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the refresh was not cancelled")
	}
}

// TestCloseWaitsForAbandonedCalls: with a client that ignores context
// deadlines, a call the cache gave up on at RedisTimeout still holds a
// connection; Close returns only once it has ended.
func TestCloseWaitsForAbandonedCalls(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t) // ReadTimeout 2s, no ContextTimeoutEnabled
	obs := &observedRedis{Redis: rdb}
	c, err := New(obs, Config{RedisTimeout: 50 * time.Millisecond, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Ping(context.Background()).Err(); err != nil { // warm a connection
		t.Fatal(err)
	}
	srv.Pause() // hung: the GET below blocks in its read
	t.Cleanup(srv.Resume)
	var o Outcome
	v, err := GetOrCompute(context.Background(), c, "k", time.Minute, func(context.Context) (string, error) {
		return "computed", nil
	}, WithOutcome(&o))
	if err != nil || v != "computed" || o != OutcomeDegraded {
		t.Fatalf("with Redis hung: %q, %v, %s", v, err, o)
	}
	if n := obs.inflight.Load(); n != 1 {
		t.Fatalf("%d Redis calls in flight, want the abandoned GET", n)
	}
	type closeResult struct {
		err      error
		inflight int32
	}
	closed := make(chan closeResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := c.Close(ctx)
		closed <- closeResult{err, obs.inflight.Load()}
	}()
	srv.Resume() // the GET gets its answer
	r := <-closed
	if r.err != nil || r.inflight != 0 {
		t.Fatalf("Close = %v with %d Redis calls still in flight", r.err, r.inflight)
	}
}
