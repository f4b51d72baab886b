package limits

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/redistest"
)

// withLease puts the "default" bucket on quota q with lease n.
func withLease(q Quota, n int) func(*Config) {
	return func(c *Config) {
		c.Overrides = map[string]Quota{DefaultBucket: q}
		c.Leases = map[string]int{DefaultBucket: n}
	}
}

// twoInstances are two limiters on one redis-server, as two processes of a
// deployment would be.
func twoInstances(t *testing.T, q Quota, lease int) (*testBundle, *testBundle) {
	t.Helper()
	srv := redistest.Start(t)
	return setupOn(t, srv, withLease(q, lease)), setupOn(t, srv, withLease(q, lease))
}

// counter reads the window counter of id in the default bucket.
func counter(t *testing.T, b *testBundle, id string) int {
	t.Helper()
	n, err := b.rdb.Get(context.Background(), b.l.key(b.l.buckets[DefaultBucket], id)).Int()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	return n
}

func TestLeaseBusyIdentifierSkipsRedisAndStaysExact(t *testing.T) {
	t.Parallel()
	const limit, lease, calls = 1000, 64, 1000
	b := setup(t, withLease(PerMinute(limit), lease))
	ctx := context.Background()
	_, _ = b.l.Peek(ctx, DefaultBucket, "warm-up") // loads the script (EVALSHA, NOSCRIPT, EVAL)
	b.calls.scripts.Store(0)
	var local int
	for i := 1; i <= calls; i++ {
		res, err := b.l.Allow(ctx, DefaultBucket, "user:1")
		if err != nil {
			t.Fatal(err)
		}
		if !res.Allowed {
			t.Fatalf("request %d refused: %+v", i, res)
		}
		// One instance: what it reports is exact, leased or not.
		if res.Remaining != limit-i {
			t.Fatalf("request %d: Remaining %d, want %d (%s)", i, res.Remaining, limit-i, res.Reason)
		}
		if res.Reason == ReasonAllowedLocally {
			local++
		}
	}
	scripts := int(b.calls.scripts.Load())
	// The first request of the window takes no lease; then leases double
	// (1, 2, 4, …) up to 64 and shrink to half of what is left near the end.
	if scripts > 40 || scripts < calls/lease {
		t.Fatalf("%d Redis decisions for %d requests with lease %d", scripts, calls, lease)
	}
	if local != calls-scripts {
		t.Fatalf("%d local admissions, want %d", local, calls-scripts)
	}
	if got := b.metric(t, "jobworker_ratelimit_decisions_total", map[string]string{"bucket": DefaultBucket, "reason": "allowed-locally"}); int(got) != local {
		t.Fatalf("allowed-locally metric = %v, want %d", got, local)
	}
	res, _ := b.l.Allow(ctx, DefaultBucket, "user:1")
	if res.Allowed || res.Remaining != 0 || counter(t, b, "user:1") != limit {
		t.Fatalf("past the limit: %+v, counter %d", res, counter(t, b, "user:1"))
	}
	t.Logf("%d requests, %d Redis decisions", calls, scripts)
}

func TestLeaseFirstRequestTakesNoLease(t *testing.T) {
	t.Parallel()
	b := setup(t, withLease(PerMinute(100), 10))
	ctx := context.Background()
	if res, _ := b.l.Allow(ctx, DefaultBucket, "user:2"); res.Reason != ReasonAllowed || counter(t, b, "user:2") != 1 {
		t.Fatalf("first: %+v, counter %d", res, counter(t, b, "user:2"))
	}
	// The second takes itself plus one for later.
	if res, _ := b.l.Allow(ctx, DefaultBucket, "user:2"); res.Reason != ReasonAllowed || res.Remaining != 98 || counter(t, b, "user:2") != 3 {
		t.Fatalf("second: %+v, counter %d", res, counter(t, b, "user:2"))
	}
	// Peek counts the request this instance holds as remaining, like Allow.
	if res, _ := b.l.Peek(ctx, DefaultBucket, "user:2"); res.Remaining != 98 {
		t.Fatalf("Peek: %+v", res)
	}
	if res, _ := b.l.Allow(ctx, DefaultBucket, "user:2"); res.Reason != ReasonAllowedLocally || res.Remaining != 97 {
		t.Fatalf("third: %+v", res)
	}
	// A lease never serves a larger cost than it holds: AllowN asks Redis.
	if res, _ := b.l.AllowN(ctx, DefaultBucket, "user:2", 5); res.Reason != ReasonAllowed || res.Remaining != 92 {
		t.Fatalf("AllowN(5): %+v", res)
	}
}

// TestLeaseNeverExceedsLimit: two limiters (two instances) with leases and
// many goroutines each keep asking until they are refused. Together they
// admit exactly the limit: leases never take a window past it, and as long
// as every instance keeps asking, none of it is stranded. Every refusal
// reports nothing remaining: a refusal while this instance holds leased
// requests would be a lie twice over (the request could have been served).
func TestLeaseNeverExceedsLimit(t *testing.T) {
	t.Parallel()
	const limit, lease = 200, 16
	one, two := twoInstances(t, PerMinute(limit), lease)
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for _, l := range []*Limiter{one.l, two.l} {
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					res, err := l.Allow(context.Background(), DefaultBucket, "ip:192.0.2.9")
					if err != nil || res.Reason.Degraded() || res.Reason == ReasonOverloaded {
						t.Errorf("Allow: %+v %v", res, err)
						return
					}
					if !res.Allowed {
						if res.Remaining != 0 {
							t.Errorf("refused with Remaining %d: %+v", res.Remaining, res)
						}
						h := http.Header{}
						WriteHeaders(h, res)
						if h.Get(HeaderRemaining) != "0" || !strings.Contains(h.Get(HeaderRateLimit), ";r=0;") {
							t.Errorf("refusal headers %v", h)
						}
						return
					}
					admitted.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	if got := admitted.Load(); got != limit {
		t.Fatalf("admitted %d, limit %d", got, limit)
	}
	if n := counter(t, one, "ip:192.0.2.9"); n != limit {
		t.Fatalf("counter %d, limit %d", n, limit)
	}
}

// TestLeaseHeldIsBoundedUnderConcurrency: many concurrent callers of one
// busy identifier on one instance never make it hold more than the lease:
// what Redis counts beyond what was admitted is what the instance holds.
func TestLeaseHeldIsBoundedUnderConcurrency(t *testing.T) {
	t.Parallel()
	const lease, goroutines, each = 8, 32, 50
	b := setup(t, withLease(PerMinute(1_000_000), lease))
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if res, err := b.l.Allow(context.Background(), DefaultBucket, "user:7"); err != nil || !res.Allowed {
					t.Errorf("Allow: %+v %v", res, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	e := b.l.cache.peek(b.l.key(b.l.buckets[DefaultBucket], "user:7"), b.clock.Now())
	held := counter(t, b, "user:7") - goroutines*each
	if held != e.tokens || held < 0 || held > lease || e.asked != 0 {
		t.Fatalf("Redis counts %d beyond the admissions, the instance holds %d (asking %d), lease %d",
			held, e.tokens, e.asked, lease)
	}
}

// TestLeaseStrandedIsBounded: an instance that leased ahead and then sees no
// more traffic keeps at most Lease requests of the window from the others.
func TestLeaseStrandedIsBounded(t *testing.T) {
	t.Parallel()
	const limit, lease = 100, 8
	idle, busy := twoInstances(t, PerMinute(limit), lease)
	ctx := context.Background()
	admitted := 0
	for i := 0; i < 12; i++ { // enough for the lease to grow to its cap
		if res, _ := idle.l.Allow(ctx, DefaultBucket, "user:3"); res.Allowed {
			admitted++
		}
	}
	held := idle.l.cache.peek(idle.l.key(idle.l.buckets[DefaultBucket], "user:3"), idle.clock.Now()).tokens
	if held < 1 || held > lease {
		t.Fatalf("idle instance holds %d, want 1..%d", held, lease)
	}
	for {
		res, _ := busy.l.Allow(ctx, DefaultBucket, "user:3")
		if !res.Allowed {
			break
		}
		admitted++
	}
	if admitted != limit-held {
		t.Fatalf("admitted %d with %d held elsewhere, want %d", admitted, held, limit-held)
	}
	// The idle instance can still spend what it holds.
	if res, _ := idle.l.Allow(ctx, DefaultBucket, "user:3"); res.Reason != ReasonAllowedLocally {
		t.Fatalf("held lease: %+v", res)
	}
}

// TestLeaseEndsWithItsWindow: once this instance's clock passes the
// window's end, a held lease is dropped, never spent: the next request asks
// Redis. (Redis's own window is still open here, as if this instance's
// clock ran fast: the dropped requests stay counted and are not re-leased.)
func TestLeaseEndsWithItsWindow(t *testing.T) {
	t.Parallel()
	b := setup(t, withLease(Quota{Limit: 50, Period: time.Minute}, 10))
	ctx := context.Background()
	for i := 0; i < 4; i++ { // takes 1, then 1+1, then 1+3: three requests held
		_, _ = b.l.Allow(ctx, DefaultBucket, "user:4")
	}
	key := b.l.key(b.l.buckets[DefaultBucket], "user:4")
	held := b.l.cache.peek(key, b.clock.Now()).tokens
	if held == 0 {
		t.Fatal("no lease held")
	}
	b.clock.Advance(time.Minute)
	before := b.calls.scripts.Load()
	res, _ := b.l.Allow(ctx, DefaultBucket, "user:4")
	used := 4 + held + 1
	if res.Reason != ReasonAllowed || res.Remaining != 50-used || b.calls.scripts.Load() != before+1 || counter(t, b, "user:4") != used {
		t.Fatalf("after the window: %+v (%d Redis calls, counter %d)", res, b.calls.scripts.Load()-before, counter(t, b, "user:4"))
	}
}

func TestLeaseClearedByReset(t *testing.T) {
	t.Parallel()
	b := setup(t, withLease(PerMinute(50), 10))
	ctx := context.Background()
	for i := 0; i < 4; i++ {
		_, _ = b.l.Allow(ctx, DefaultBucket, "user:5")
	}
	if err := b.l.Reset(ctx, DefaultBucket, "user:5"); err != nil {
		t.Fatal(err)
	}
	if res, _ := b.l.Allow(ctx, DefaultBucket, "user:5"); res.Reason != ReasonAllowed || res.Remaining != 49 {
		t.Fatalf("after Reset: %+v", res)
	}
}

// TestLeaseOutlivesRedisOutage: requests an instance holds are admitted
// while Redis is down; after them the failure policy decides.
func TestLeaseOutlivesRedisOutage(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := setupOn(t, srv, func(c *Config) {
		withLease(PerMinute(50), 10)(c)
		c.Failure = map[string]FailureMode{DefaultBucket: FailureClosed}
	})
	ctx := context.Background()
	for i := 0; i < 4; i++ {
		_, _ = b.l.Allow(ctx, DefaultBucket, "user:6")
	}
	held := b.l.cache.peek(b.l.key(b.l.buckets[DefaultBucket], "user:6"), b.clock.Now()).tokens
	srv.Stop()
	for i := 0; i < held; i++ {
		if res, _ := b.l.Allow(ctx, DefaultBucket, "user:6"); res.Reason != ReasonAllowedLocally {
			t.Fatalf("held request %d with Redis down: %+v", i, res)
		}
	}
	if res, _ := b.l.Allow(ctx, DefaultBucket, "user:6"); res.Allowed || res.Reason != ReasonDegradedClosed {
		t.Fatalf("after the lease, fail closed: %+v", res)
	}
}

func TestParseLeases(t *testing.T) {
	t.Parallel()
	got, err := ParseLeases(" generous=12, streams:status=20 ,,")
	if err != nil || len(got) != 2 || got[TierGenerous] != 12 || got["streams:status"] != 20 {
		t.Fatalf("ParseLeases = %v, %v", got, err)
	}
	if got, err := ParseLeases(""); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v, %v", got, err)
	}
	for _, bad := range []string{"generous", "=3", "generous=-1", "generous=x", "generous=1,generous=2"} {
		var ce *ConfigError
		if _, err := ParseLeases(bad); !errors.As(err, &ce) || ce.Field != "Leases" || !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ParseLeases(%q) = %v, want a *ConfigError for Leases", bad, err)
		}
	}
}
