package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/idempotency"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/testwait"
)

type storeBundle struct {
	srv   *redistest.Server
	rdb   *redis.Client
	store *idempotency.Store
}

func setupStore(t *testing.T, cfg idempotency.StoreConfig) storeBundle {
	t.Helper()
	srv := redistest.Start(t)
	rdb := client(t, srv)
	store, err := idempotency.NewStore(rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return storeBundle{srv: srv, rdb: rdb, store: store}
}

// client honours context deadlines on the socket (ContextTimeoutEnabled),
// which StoreConfig.Timeout relies on, as production clients must.
func client(t *testing.T, srv *redistest.Server) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:                  srv.Addr(),
		DialTimeout:           time.Second,
		ReadTimeout:           2 * time.Second,
		WriteTimeout:          2 * time.Second,
		MaxRetries:            -1,
		ContextTimeoutEnabled: true,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func mustAcquire(t *testing.T, s *idempotency.Store, key, fp string) *idempotency.Lease {
	t.Helper()
	res, err := s.Acquire(context.Background(), key, fp)
	if err != nil || res.Outcome != idempotency.Acquired {
		t.Fatalf("Acquire(%q) = %v, %v; want acquired", key, res.Outcome, err)
	}
	return res.Lease
}

func TestStoreConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		given   idempotency.StoreConfig
		wantErr bool
	}{
		{"zero is defaults", idempotency.StoreConfig{}, false},
		{"stripe events", idempotency.StoreConfig{Namespace: "stripe", ResultTTL: 7 * 24 * time.Hour}, false},
		{"lease too short", idempotency.StoreConfig{LeaseTTL: time.Millisecond}, true},
		{"result shorter than lease", idempotency.StoreConfig{LeaseTTL: time.Minute, ResultTTL: time.Second}, true},
		{"timeout not below lease", idempotency.StoreConfig{LeaseTTL: time.Second, Timeout: time.Second}, true},
		{"negative timeout", idempotency.StoreConfig{Timeout: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.given.Validate(); (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, wantErr %v", err, tt.wantErr)
			}
			if _, err := idempotency.NewStore(redis.NewClient(&redis.Options{}), tt.given); (err != nil) != tt.wantErr {
				t.Fatalf("NewStore() = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
	if _, err := idempotency.NewStore(nil, idempotency.StoreConfig{}); err == nil {
		t.Fatal("NewStore(nil) succeeded")
	}
}

// The lifecycle, and the complaint "the in-flight reservation used the 24 h
// response TTL" (fullstackhero #1333): a lease lives LeaseTTL, a result
// ResultTTL, on one key.
func TestStoreLifecycleAndTwoTTLs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupStore(t, idempotency.StoreConfig{Prefix: "app1:", Namespace: "qstash", LeaseTTL: 5 * time.Second, ResultTTL: time.Hour})
	l := mustAcquire(t, b.store, "msg_1", "fp")
	if l.Key() != "app1:idem:qstash:msg_1" {
		t.Fatalf("Key() = %q", l.Key())
	}
	if ttl := b.rdb.PTTL(ctx, l.Key()).Val(); ttl <= 0 || ttl > 5*time.Second {
		t.Fatalf("lease PTTL = %s, want ≤ LeaseTTL", ttl)
	}
	res, err := b.store.Acquire(ctx, "msg_1", "fp")
	if err != nil || res.Outcome != idempotency.InProgress || res.TTL <= 0 || res.TTL > 5*time.Second {
		t.Fatalf("second Acquire = %+v, %v; want in progress with the lease TTL", res, err)
	}
	if err := l.Complete(ctx, []byte("result")); err != nil {
		t.Fatal(err)
	}
	if ttl := b.rdb.PTTL(ctx, l.Key()).Val(); ttl < 59*time.Minute {
		t.Fatalf("result PTTL = %s, want ResultTTL", ttl)
	}
	// Truxify #6898: claiming again must read the stored result, not win a
	// fresh lease.
	res, err = b.store.Acquire(ctx, "msg_1", "fp")
	if err != nil || res.Outcome != idempotency.Done || string(res.Value) != "result" || res.TTL < 59*time.Minute {
		t.Fatalf("Acquire after Complete = %+v, %v; want done with the stored value", res, err)
	}
	if err := l.Complete(ctx, []byte("again")); !errors.Is(err, idempotency.ErrLeaseLost) {
		t.Fatalf("second Complete = %v, want ErrLeaseLost", err)
	}
	if err := l.Release(ctx); !errors.Is(err, idempotency.ErrLeaseLost) {
		t.Fatalf("Release after Complete = %v, want ErrLeaseLost (record kept)", err)
	}
	if res, _ := b.store.Acquire(ctx, "msg_1", ""); res.Outcome != idempotency.Done {
		t.Fatalf("record gone after a late Release: %v", res.Outcome)
	}
}

func TestStoreFingerprint(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupStore(t, idempotency.StoreConfig{})
	l := mustAcquire(t, b.store, "k", "fp-a")
	tests := []struct {
		name        string
		fingerprint string
		want        error
	}{
		{"same", "fp-a", nil},
		{"different", "fp-b", idempotency.ErrFingerprintMismatch},
		{"unchecked", "", nil},
	}
	for _, phase := range []string{"leased", "done"} {
		if phase == "done" {
			if err := l.Complete(ctx, nil); err != nil {
				t.Fatal(err)
			}
		}
		for _, tt := range tests {
			res, err := b.store.Acquire(ctx, "k", tt.fingerprint)
			if !errors.Is(err, tt.want) && !(err == nil && tt.want == nil) {
				t.Fatalf("%s/%s: err = %v, want %v", phase, tt.name, err, tt.want)
			}
			if res.Outcome == idempotency.Acquired {
				t.Fatalf("%s/%s: acquired a held key", phase, tt.name)
			}
		}
	}
}

// Truxify PR #16261: a release or completion from a former owner must not
// touch a newer owner's lease.
func TestStoreOwnerChecks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupStore(t, idempotency.StoreConfig{})
	old := mustAcquire(t, b.store, "k", "")
	b.rdb.Del(ctx, old.Key()) // the old lease expired
	current := mustAcquire(t, b.store, "k", "")

	for name, call := range map[string]func() error{
		"Release":  func() error { return old.Release(ctx) },
		"Complete": func() error { return old.Complete(ctx, []byte("stale")) },
		"Renew":    func() error { return old.Renew(ctx) },
	} {
		if err := call(); !errors.Is(err, idempotency.ErrLeaseLost) {
			t.Fatalf("old.%s = %v, want ErrLeaseLost", name, err)
		}
	}
	if res, _ := b.store.Acquire(ctx, "k", ""); res.Outcome != idempotency.InProgress {
		t.Fatalf("current lease disturbed: %v", res.Outcome)
	}
	if err := current.Complete(ctx, []byte("fresh")); err != nil {
		t.Fatalf("current.Complete = %v", err)
	}
	if res, _ := b.store.Acquire(ctx, "k", ""); string(res.Value) != "fresh" {
		t.Fatalf("value = %q, want fresh", res.Value)
	}
}

func TestStoreReleaseFreesKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupStore(t, idempotency.StoreConfig{})
	l := mustAcquire(t, b.store, "k", "")
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	mustAcquire(t, b.store, "k", "") // Truxify #4622: a failed attempt never strands the key
}

func TestStoreCompleteAfterExpiryWithoutNewOwner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupStore(t, idempotency.StoreConfig{})
	l := mustAcquire(t, b.store, "k", "fp")
	b.rdb.Del(ctx, l.Key()) // expired, nobody claimed it
	if err := l.Complete(ctx, []byte("v")); err != nil {
		t.Fatalf("Complete = %v", err)
	}
	res, err := b.store.Acquire(ctx, "k", "other")
	if res.Outcome != idempotency.Done || !errors.Is(err, idempotency.ErrFingerprintMismatch) {
		t.Fatalf("Acquire = %v, %v; want done + mismatch (fingerprint kept)", res.Outcome, err)
	}
}

// A crashed owner (no Release) frees the key after one short lease.
func TestStoreCrashedOwnerFreesAfterLease(t *testing.T) {
	t.Parallel()
	b := setupStore(t, idempotency.StoreConfig{LeaseTTL: 100 * time.Millisecond, Timeout: 50 * time.Millisecond})
	mustAcquire(t, b.store, "k", "")
	testwait.For(t, 2*time.Second, "the key free again after a 100ms lease", func() bool {
		res, err := b.store.Acquire(context.Background(), "k", "")
		return err == nil && res.Outcome == idempotency.Acquired
	})
}

// LabsCrypt/remitlend #1624: concurrent identical claims, exactly one wins.
func TestStoreConcurrentAcquire(t *testing.T) {
	t.Parallel()
	b := setupStore(t, idempotency.StoreConfig{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[idempotency.Outcome]int{}
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := b.store.Acquire(context.Background(), "k", "fp")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			counts[res.Outcome]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if counts[idempotency.Acquired] != 1 || counts[idempotency.InProgress] != 49 {
		t.Fatalf("outcomes = %v, want 1 acquired and 49 in progress", counts)
	}
}

// Truxify #5846: a holder slower than the lease keeps the key while alive.
func TestStoreKeepAliveOutlivesLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lease := 500 * time.Millisecond // renewal every ~167 ms survives a loaded CI box
	b := setupStore(t, idempotency.StoreConfig{LeaseTTL: lease, Timeout: 250 * time.Millisecond})
	l := mustAcquire(t, b.store, "k", "")
	kctx, stop := l.KeepAlive(ctx)
	deadline := time.After(3 * lease)
	for done := false; !done; {
		select {
		case <-deadline:
			done = true
		case <-time.After(lease / 2):
			if res, err := b.store.Acquire(ctx, "k", ""); err != nil || res.Outcome != idempotency.InProgress {
				t.Fatalf("while kept alive: %v, %v", res.Outcome, err)
			}
		}
	}
	if kctx.Err() != nil {
		t.Fatalf("keep-alive context ended: %v", context.Cause(kctx))
	}
	if err := stop(); err != nil {
		t.Fatalf("stop = %v", err)
	}
	if err := l.Complete(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

func TestStoreKeepAliveReportsLoss(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		when func(t *testing.T, b storeBundle, l *idempotency.Lease)
	}{
		{"stolen", func(t *testing.T, b storeBundle, l *idempotency.Lease) {
			b.rdb.Del(context.Background(), l.Key())
			mustAcquire(t, b.store, "k", "")
		}},
		{"redis hung", func(_ *testing.T, b storeBundle, _ *idempotency.Lease) { b.srv.Pause() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupStore(t, idempotency.StoreConfig{LeaseTTL: 150 * time.Millisecond, Timeout: 50 * time.Millisecond})
			t.Cleanup(b.srv.Resume)
			l := mustAcquire(t, b.store, "k", "")
			kctx, stop := l.KeepAlive(context.Background())
			tt.when(t, b, l)
			select {
			case <-kctx.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("keep-alive context not cancelled after the lease was lost")
			}
			if !errors.Is(context.Cause(kctx), idempotency.ErrLeaseLost) {
				t.Fatalf("cause = %v, want ErrLeaseLost", context.Cause(kctx))
			}
			if err := stop(); !errors.Is(err, idempotency.ErrLeaseLost) {
				t.Fatalf("stop = %v, want ErrLeaseLost", err)
			}
		})
	}
}

// Fail closed (paySphere #1919): no Redis, no claim, a typed error.
func TestStoreUnavailable(t *testing.T) {
	t.Parallel()
	b := setupStore(t, idempotency.StoreConfig{})
	l := mustAcquire(t, b.store, "held", "")
	b.srv.Stop()
	ctx := context.Background()
	if _, err := b.store.Acquire(ctx, "k", ""); !errors.Is(err, idempotency.ErrUnavailable) {
		t.Fatalf("Acquire = %v, want ErrUnavailable", err)
	}
	for name, err := range map[string]error{"Renew": l.Renew(ctx), "Complete": l.Complete(ctx, nil), "Release": l.Release(ctx)} {
		if !errors.Is(err, idempotency.ErrUnavailable) {
			t.Fatalf("%s = %v, want ErrUnavailable", name, err)
		}
	}
}

func TestStoreCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cc := redistest.StartCluster(t).Client(t)
	for _, cfg := range []idempotency.StoreConfig{{}, {Prefix: "app:"}} {
		store, err := idempotency.NewStore(cc, cfg)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20; i++ { // keys spread over all three masters
			key := fmt.Sprintf("evt_%d", i)
			l := mustAcquire(t, store, key, "fp")
			if err := l.Renew(ctx); err != nil {
				t.Fatal(err)
			}
			if i%2 == 0 {
				err = l.Complete(ctx, []byte(key))
			} else {
				err = l.Release(ctx)
			}
			if err != nil {
				t.Fatal(err)
			}
			want := map[bool]idempotency.Outcome{true: idempotency.Done, false: idempotency.Acquired}[i%2 == 0]
			if res, err := store.Acquire(ctx, key, "fp"); err != nil || res.Outcome != want {
				t.Fatalf("%s: %v, %v; want %v", key, res.Outcome, err, want)
			}
		}
	}
}
