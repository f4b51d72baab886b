package idempotency_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/digis/jobworker/idempotency"
	"github.com/digis/jobworker/internal/logtest"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/testwait"
)

// lagging is a wall clock behind the real one: every claim computed from it
// has expired by the time Redis runs it, the state a claim is in when a
// stalled Redis runs it after its caller gave up.
func lagging() time.Time { return time.Now().Add(-time.Hour) }

// The fault of issue #14: Acquire times out on a stalled Redis, Redis then
// runs the queued claim. The caller's retry, through another store (another
// process), must find the key free at once, not held for a lease.
func TestStoreClaimRunAfterItsCallerGaveUpBlocksNothing(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	cfg := idempotency.StoreConfig{Namespace: "qstash", Timeout: 100 * time.Millisecond}
	gaveUp := cfg
	gaveUp.Now = lagging // its claims are past their expiry whenever Redis runs them
	a, err := idempotency.NewStore(client(t, srv), gaveUp)
	if err != nil {
		t.Fatal(err)
	}
	b, err := idempotency.NewStore(client(t, srv), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Load the script and open a's connection, so the stalled EVALSHA is
	// written to the socket (not stuck in a connection handshake) and runs
	// when Redis resumes instead of failing NOSCRIPT.
	if _, err := a.Acquire(ctx, "warm-up", ""); err != nil {
		t.Fatal(err)
	}

	srv.Pause()
	if _, err := a.Acquire(ctx, "msg_1", "fp"); !errors.Is(err, idempotency.ErrUnavailable) {
		srv.Resume()
		t.Fatalf("Acquire on a paused Redis = %v, want ErrUnavailable", err)
	}
	// a's process is gone: its background release never happens.
	closed, cancel := context.WithCancel(ctx)
	cancel()
	a.Close(closed)
	srv.Resume()

	res, err := b.Acquire(ctx, "msg_1", "fp")
	if err != nil || res.Outcome != idempotency.Acquired {
		t.Fatalf("retry after Redis resumed = %v, %v; want acquired at once", res.Outcome, err)
	}
	if err := res.Lease.Complete(ctx, []byte("ok")); err != nil {
		t.Fatal(err)
	}
}

// The same fault with the real clock: the store that gave up releases its
// claim in the background, or takes it over on its own retry.
func TestStoreAbandonedClaimIsReleasedOrTakenOver(t *testing.T) {
	t.Parallel()
	for _, retryThrough := range []string{"same store", "other store"} {
		t.Run(retryThrough, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			cfg := idempotency.StoreConfig{Timeout: 100 * time.Millisecond, ClaimGrace: 10 * time.Second}
			a, err := idempotency.NewStore(client(t, srv), cfg)
			if err != nil {
				t.Fatal(err)
			}
			retry := a
			if retryThrough == "other store" {
				if retry, err = idempotency.NewStore(client(t, srv), cfg); err != nil {
					t.Fatal(err)
				}
			}
			ctx := context.Background()
			// Loads the script and opens a's connection (see above).
			if _, err := a.Acquire(ctx, "warm-up", ""); err != nil {
				t.Fatal(err)
			}
			srv.Pause()
			_, err = a.Acquire(ctx, "k", "fp")
			srv.Resume() // the claim runs now, long before its 10 s grace ends
			if !errors.Is(err, idempotency.ErrUnavailable) {
				t.Fatalf("Acquire = %v, want ErrUnavailable", err)
			}
			var res idempotency.Result
			testwait.For(t, 5*time.Second, "the abandoned claim no longer blocks the key", func() bool {
				res, err = retry.Acquire(ctx, "k", "fp")
				return err == nil && res.Outcome == idempotency.Acquired
			})
			if err := res.Lease.Complete(ctx, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A host whose clock is behind Redis's would see every claim expire on
// arrival; Acquire notices (the answer came in time) and claims with a
// relative lease, once warning about the clock.
func TestStoreClockBehindRedisFallsBackToRelativeLease(t *testing.T) {
	t.Parallel()
	var logs logtest.Buffer
	srv := redistest.Start(t)
	rdb := client(t, srv)
	s, err := idempotency.NewStore(rdb, idempotency.StoreConfig{
		LeaseTTL: 20 * time.Second, Now: lagging,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, key := range []string{"a", "b"} {
		l := mustAcquire(t, s, key, "")
		if ttl := rdb.PTTL(ctx, l.Key()).Val(); ttl < 19*time.Second {
			t.Fatalf("lease PTTL = %s, want the relative LeaseTTL", ttl)
		}
		if res, err := s.Acquire(ctx, key, ""); err != nil || res.Outcome != idempotency.InProgress {
			t.Fatalf("second Acquire = %v, %v; want in progress", res.Outcome, err)
		}
	}
	if n := strings.Count(logs.String(), "clock is behind"); n != 1 {
		t.Fatalf("clock warnings = %d, want 1:\n%s", n, logs.String())
	}
}

// A claim lives only until its caller's deadline plus the grace; KeepAlive
// renews it before that into a full lease.
func TestStoreClaimIsShortUntilKeptAlive(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupStore(t, idempotency.StoreConfig{LeaseTTL: 30 * time.Second, Timeout: 200 * time.Millisecond, ClaimGrace: 300 * time.Millisecond})
	l := mustAcquire(t, b.store, "k", "")
	if ttl := b.rdb.PTTL(ctx, l.Key()).Val(); ttl <= 0 || ttl > 500*time.Millisecond {
		t.Fatalf("claim PTTL = %s, want at most Timeout+ClaimGrace", ttl)
	}
	kctx, stop := l.KeepAlive(ctx)
	defer stop()
	testwait.For(t, 5*time.Second, "the first renewal extends the claim to the lease TTL", func() bool {
		return b.rdb.PTTL(ctx, l.Key()).Val() > 20*time.Second
	})
	if kctx.Err() != nil {
		t.Fatalf("keep-alive context ended: %v", context.Cause(kctx))
	}
	// Unrenewed, a claim frees the key quickly (a crashed owner).
	mustAcquire(t, b.store, "other", "")
	testwait.For(t, 5*time.Second, "an unrenewed claim expires", func() bool {
		res, err := b.store.Acquire(ctx, "other", "")
		return err == nil && res.Outcome == idempotency.Acquired
	})
}

// Release and Complete that Redis does not answer are finished in the
// background once it does: the retry is not blocked for a lease, and a
// finished job is not run again.
func TestStoreFinishesReleaseAndCompleteAfterAnOutage(t *testing.T) {
	t.Parallel()
	for _, op := range []string{"release", "complete"} {
		t.Run(op, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			cfg := idempotency.StoreConfig{Timeout: 100 * time.Millisecond}
			a, err := idempotency.NewStore(client(t, srv), cfg)
			if err != nil {
				t.Fatal(err)
			}
			other, err := idempotency.NewStore(client(t, srv), cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			l := mustAcquire(t, a, "k", "fp")
			_, _ = l.KeepAlive(ctx) // renewed into a full lease: 30 s unless cleaned up
			testwait.For(t, 5*time.Second, "the claim renewed into a full lease", func() bool {
				return srv.Client(t).PTTL(ctx, l.Key()).Val() > 20*time.Second
			})
			srv.Pause()
			if op == "release" {
				err = l.Release(ctx)
			} else {
				err = l.Complete(ctx, []byte("result"))
			}
			srv.Resume()
			if !errors.Is(err, idempotency.ErrUnavailable) {
				t.Fatalf("%s on a paused Redis = %v, want ErrUnavailable", op, err)
			}
			want := map[string]idempotency.Outcome{"release": idempotency.Acquired, "complete": idempotency.Done}[op]
			testwait.For(t, 5*time.Second, op+" finished in the background", func() bool {
				res, err := other.Acquire(ctx, "k", "fp")
				return err == nil && res.Outcome == want && (op == "release" || string(res.Value) == "result")
			})
		})
	}
}

func TestStoreNonce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupStore(t, idempotency.StoreConfig{Namespace: "qstash"})
	nonce := idempotency.WithNonce("jwt_1", time.Minute)

	l := func() *idempotency.Lease {
		res, err := b.store.Acquire(ctx, "{job}:msg_1", "fp", nonce)
		if err != nil || res.Outcome != idempotency.Acquired {
			t.Fatalf("first use = %v, %v", res.Outcome, err)
		}
		return res.Lease
	}()
	// The same request sent twice gets the usual answer.
	if res, err := b.store.Acquire(ctx, "{job}:msg_1", "fp", nonce); err != nil || res.Outcome != idempotency.InProgress {
		t.Fatalf("same nonce, same key = %v, %v; want in progress", res.Outcome, err)
	}
	if err := l.Complete(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if res, err := b.store.Acquire(ctx, "{job}:msg_1", "fp", nonce); err != nil || res.Outcome != idempotency.Done {
		t.Fatalf("same nonce, same key after completion = %v, %v; want done", res.Outcome, err)
	}
	// A replay under another message id claims nothing.
	if _, err := b.store.Acquire(ctx, "{job}:msg_2", "fp", nonce); !errors.Is(err, idempotency.ErrNonceReused) {
		t.Fatalf("same nonce, other key = %v, want ErrNonceReused", err)
	}
	if n := b.rdb.Exists(ctx, "idem:qstash:{job}:msg_2").Val(); n != 0 {
		t.Fatal("a replayed nonce left a record behind")
	}
	// The nonce lives for its TTL only.
	keys := b.rdb.Keys(ctx, "idem:qstash:{job}:nonce:*").Val()
	if len(keys) != 1 {
		t.Fatalf("nonce keys = %v, want one", keys)
	}
	if ttl := b.rdb.PTTL(ctx, keys[0]).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("nonce PTTL = %s, want ≤ 1m", ttl)
	}
	if strings.Contains(b.rdb.Get(ctx, keys[0]).Val(), "msg_1") {
		t.Fatal("the nonce stores the key in clear; it should store a short digest")
	}
	// Fresh nonces for other keys work; a key without a hash tag is refused.
	if res, err := b.store.Acquire(ctx, "{job}:msg_2", "fp", idempotency.WithNonce("jwt_2", time.Minute)); err != nil || res.Outcome != idempotency.Acquired {
		t.Fatalf("fresh nonce = %v, %v", res.Outcome, err)
	}
	if _, err := b.store.Acquire(ctx, "msg_3", "fp", idempotency.WithNonce("jwt_3", time.Minute)); err == nil {
		t.Fatal("WithNonce on a key without a hash tag succeeded")
	}
}

func TestStoreNonceOnCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, err := idempotency.NewStore(redistest.StartCluster(t).Client(t), idempotency.StoreConfig{Prefix: "app:", Namespace: "qstash"})
	if err != nil {
		t.Fatal(err)
	}
	for _, job := range []string{"a", "b", "c", "d", "e", "f"} { // tags on several masters
		res, err := store.Acquire(ctx, "{"+job+"}:msg", "", idempotency.WithNonce("jwt_"+job, time.Minute))
		if err != nil || res.Outcome != idempotency.Acquired {
			t.Fatalf("%s: %v, %v", job, res.Outcome, err)
		}
		if _, err := store.Acquire(ctx, "{"+job+"}:other", "", idempotency.WithNonce("jwt_"+job, time.Minute)); !errors.Is(err, idempotency.ErrNonceReused) {
			t.Fatalf("%s replay: %v, want ErrNonceReused", job, err)
		}
	}
}

func TestStoreConfigErrorsNameTheField(t *testing.T) {
	t.Parallel()
	err := idempotency.StoreConfig{LeaseTTL: time.Millisecond}.Validate()
	var ce *idempotency.ConfigError
	if !errors.As(err, &ce) || ce.Field != "StoreConfig.LeaseTTL" || !errors.Is(err, idempotency.ErrInvalidConfig) {
		t.Fatalf("Validate = %v, want a *ConfigError for StoreConfig.LeaseTTL", err)
	}
}

// CompleteAsync: a later Acquire through the same store finds the record
// done at once (the write leaves in front of it); another store finds it
// within the write's short delay; Close waits for writes on their way; and
// a write Redis does not take is finished in the background like
// Complete's.
func TestStoreCompleteAsync(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	cfg := idempotency.StoreConfig{Timeout: 100 * time.Millisecond}
	a, err := idempotency.NewStore(client(t, srv), cfg)
	if err != nil {
		t.Fatal(err)
	}
	other, err := idempotency.NewStore(client(t, srv), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	done := make(chan error, 1)
	mustAcquire(t, a, "same", "fp").CompleteAsync([]byte("v1"), func(err error) { done <- err })
	if res, err := a.Acquire(ctx, "same", "fp"); err != nil || res.Outcome != idempotency.Done || string(res.Value) != "v1" {
		t.Fatalf("Acquire right after CompleteAsync = %v %q, %v; want done v1", res.Outcome, res.Value, err)
	}
	if err := <-done; err != nil {
		t.Fatalf("CompleteAsync reported %v", err)
	}

	mustAcquire(t, a, "elsewhere", "fp").CompleteAsync([]byte("v2"), nil)
	testwait.For(t, 5*time.Second, "the record seen done by another store", func() bool {
		res, err := other.Acquire(ctx, "elsewhere", "fp")
		return err == nil && res.Outcome == idempotency.Done && string(res.Value) == "v2"
	})

	// Lost: another owner took the key after the lease was released.
	lost := mustAcquire(t, a, "lost", "fp")
	if err := lost.Release(ctx); err != nil {
		t.Fatal(err)
	}
	mustAcquire(t, other, "lost", "fp")
	lost.CompleteAsync(nil, func(err error) { done <- err })
	if err := <-done; !errors.Is(err, idempotency.ErrLeaseLost) {
		t.Fatalf("CompleteAsync of a lost lease reported %v, want ErrLeaseLost", err)
	}

	// Redis stalled: reported unavailable, then written once it is back.
	l := mustAcquire(t, a, "stalled", "fp")
	srv.Pause()
	l.CompleteAsync([]byte("v3"), func(err error) { done <- err })
	err = <-done
	srv.Resume()
	if !errors.Is(err, idempotency.ErrUnavailable) {
		t.Fatalf("CompleteAsync on a paused Redis reported %v, want ErrUnavailable", err)
	}
	testwait.For(t, 5*time.Second, "the done record written in the background", func() bool {
		res, err := other.Acquire(ctx, "stalled", "fp")
		return err == nil && res.Outcome == idempotency.Done && string(res.Value) == "v3"
	})

	// Close sends what is still deferred and waits for it.
	mustAcquire(t, a, "at-close", "fp").CompleteAsync([]byte("v4"), nil)
	if n := a.Close(ctx); n != 0 {
		t.Fatalf("Close gave up %d", n)
	}
	if res, err := other.Acquire(ctx, "at-close", "fp"); err != nil || res.Outcome != idempotency.Done {
		t.Fatalf("after Close: %v, %v; want done", res.Outcome, err)
	}
}
