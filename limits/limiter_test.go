package limits

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/logtest"
	"github.com/digis/jobworker/internal/redistest"
)

func TestAllowStrictTenThenDeny(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		cacheSize  int
		wantReason Reason
	}{
		{"redis decides", -1, ReasonDenied},
		{"local cache decides", 100, ReasonBlockedLocally},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(c *Config) { c.LocalCacheSize = tc.cacheSize })
			ctx := context.Background()
			before := time.Now()
			for i := 1; i <= 10; i++ {
				res, err := b.l.Allow(ctx, "tips:quick", "ip:203.0.113.7")
				if err != nil {
					t.Fatal(err)
				}
				if !res.Allowed || res.Reason != ReasonAllowed || res.Remaining != 10-i || res.Limit != 10 || res.Tier != TierStrict {
					t.Fatalf("request %d: %+v", i, res)
				}
			}
			res, err := b.l.Allow(ctx, "tips:quick", "ip:203.0.113.7")
			if err != nil {
				t.Fatal(err)
			}
			if res.Allowed || res.Reason != tc.wantReason || res.Remaining != 0 {
				t.Fatalf("11th: %+v", res)
			}
			if res.RetryAfter <= 58*time.Second || res.RetryAfter > time.Minute {
				t.Fatalf("11th RetryAfter = %s, want just under 1m", res.RetryAfter)
			}
			if lo, hi := before.Add(58*time.Second), time.Now().Add(61*time.Second); res.Reset.Before(lo) || res.Reset.After(hi) {
				t.Fatalf("Reset %s not in [%s, %s]", res.Reset, lo, hi)
			}
			if got := b.metric(t, "jobworker_ratelimit_decisions_total", map[string]string{"bucket": "tips:quick", "reason": "allowed"}); got != 10 {
				t.Fatalf("allowed decisions metric = %v", got)
			}
			if got := b.metric(t, "jobworker_ratelimit_decisions_total", map[string]string{"bucket": "tips:quick", "reason": string(tc.wantReason)}); got != 1 {
				t.Fatalf("%s decisions metric = %v", tc.wantReason, got)
			}
			// Another identifier and another bucket are untouched.
			for _, c := range [][2]string{{"tips:quick", "ip:203.0.113.8"}, {"auth:otp", "ip:203.0.113.7"}} {
				if res, _ := b.l.Allow(ctx, c[0], c[1]); !res.Allowed || res.Remaining != 9 {
					t.Fatalf("%v: %+v", c, res)
				}
			}
		})
	}
}

func TestDeniedRequestsDoNotConsume(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.Overrides = map[string]Quota{"default": {Limit: 3, Period: time.Minute}} })
	ctx := context.Background()
	steps := []struct {
		n           int
		wantAllowed bool
		wantRemain  int
	}{
		{2, true, 1},
		{2, false, 1}, // does not fit, and must not eat the last unit
		{2, false, 1}, // answered from the local cache, same answer
		{1, true, 0},
		{1, false, 0},
	}
	for i, s := range steps {
		res, err := b.l.AllowN(ctx, "default", "user:1", s.n)
		if err != nil {
			t.Fatal(err)
		}
		if res.Allowed != s.wantAllowed || res.Remaining != s.wantRemain {
			t.Fatalf("step %d AllowN(%d): %+v", i, s.n, res)
		}
	}
	key := b.l.key(b.l.buckets["default"], "user:1")
	if v, _ := b.rdb.Get(ctx, key).Int(); v != 3 {
		t.Fatalf("counter = %d, want 3", v)
	}
}

func TestWindowEndsAndAdmitsAgain(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.Overrides = map[string]Quota{"auth:otp": {Limit: 2, Period: 5 * time.Second}} })
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if res, _ := b.l.Allow(ctx, "auth:otp", "ip:198.51.100.1"); !res.Allowed {
			t.Fatalf("request %d refused: %+v", i, res)
		}
	}
	res, _ := b.l.Allow(ctx, "auth:otp", "ip:198.51.100.1")
	if res.Allowed || res.RetryAfter <= 0 || res.RetryAfter > 5*time.Second {
		t.Fatalf("3rd: %+v", res)
	}
	endWindow(t, b, "auth:otp", "ip:198.51.100.1", res.RetryAfter)
	res, _ = b.l.Allow(ctx, "auth:otp", "ip:198.51.100.1")
	if !res.Allowed || res.Remaining != 1 || res.Reason != ReasonAllowed {
		t.Fatalf("after RetryAfter: %+v", res)
	}
}

// endWindow checks that Redis ends id's window in bucket no later than
// retryAfter (what the client was told), then ends it now, on both clocks:
// the key expires in Redis, and this instance's clock passes retryAfter.
// No test waits for a window to pass by itself.
func endWindow(t *testing.T, b *testBundle, bucket, id string, retryAfter time.Duration) {
	t.Helper()
	ctx := context.Background()
	key := b.l.key(b.l.buckets[bucket], id)
	pttl, err := b.rdb.PTTL(ctx, key).Result()
	if err != nil || pttl <= 0 || pttl > retryAfter || retryAfter-pttl > time.Second {
		t.Fatalf("window ends in %s by Redis, client told %s (%v)", pttl, retryAfter, err)
	}
	if err := b.rdb.PExpireAt(ctx, key, time.UnixMilli(1)).Err(); err != nil {
		t.Fatal(err)
	}
	b.clock.Advance(retryAfter)
}

func TestPeekDoesNotConsume(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	res, err := b.l.Peek(ctx, "auth:login", "user:7")
	if err != nil || !res.Allowed || res.Remaining != 10 {
		t.Fatalf("Peek fresh: %+v %v", res, err)
	}
	if keys := allKeys(t, b.rdb); len(keys) != 0 {
		t.Fatalf("Peek created keys %v", keys)
	}
	for i := 0; i < 10; i++ {
		_, _ = b.l.Allow(ctx, "auth:login", "user:7")
	}
	res, _ = b.l.Peek(ctx, "auth:login", "user:7")
	if res.Allowed || res.Remaining != 0 || res.RetryAfter <= 0 {
		t.Fatalf("Peek spent: %+v", res)
	}
}

func TestResetClearsRedisAndLocalBlock(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	for i := 0; i < 11; i++ {
		_, _ = b.l.Allow(ctx, "calls:request", "user:9")
	}
	if err := b.l.Reset(ctx, "calls:request", "user:9"); err != nil {
		t.Fatal(err)
	}
	res, _ := b.l.Allow(ctx, "calls:request", "user:9")
	if !res.Allowed || res.Remaining != 9 {
		t.Fatalf("after Reset: %+v", res)
	}
	if b.calls.dels.Load() != 1 {
		t.Fatalf("Reset used %d DELs", b.calls.dels.Load())
	}
}

func TestKeysHaveTTLAndNoPII(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	ids := []string{"ip:203.0.113.7", "ip:2001:db8::/64", "user:alice"}
	for _, bucket := range []string{"auth:otp", "messages:send", "streams:status", "default"} {
		for _, id := range ids {
			for i := 0; i < 12; i++ {
				_, _ = b.l.Allow(ctx, bucket, id)
			}
			_, _ = b.l.Peek(ctx, bucket, id)
		}
	}
	// A counter left without expiry (by hand, or an older release) is repaired.
	orphan := b.l.key(b.l.buckets["default"], "user:orphan")
	if err := b.rdb.Set(ctx, orphan, 5, 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, _ = b.l.Allow(ctx, "default", "user:orphan")

	keys := allKeys(t, b.rdb)
	if len(keys) != 4*len(ids)+1 {
		t.Fatalf("got %d keys, want %d", len(keys), 4*len(ids)+1)
	}
	for _, k := range keys {
		ttl, err := b.rdb.PTTL(ctx, k).Result()
		if err != nil || ttl <= 0 || ttl > time.Minute {
			t.Errorf("key %q PTTL = %s, %v", k, ttl, err)
		}
		for _, pii := range []string{"203.0.113", "2001", "alice", "orphan"} {
			if strings.Contains(k, pii) {
				t.Errorf("key %q contains %q", k, pii)
			}
		}
		if !strings.HasPrefix(k, "test:rl:") || strings.Count(k, "{") != 1 || !strings.HasSuffix(k, "}") {
			t.Errorf("key %q does not follow test:rl:<tier>:<bucket>:{<hash>}", k)
		}
	}
	if want := "test:rl:strict:auth:otp:{"; !strings.HasPrefix(b.l.key(b.l.buckets["auth:otp"], "x"), want) {
		t.Errorf("key layout: %q", b.l.key(b.l.buckets["auth:otp"], "x"))
	}
}

func TestRepeatOffenderCostsNoRedisCalls(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		_, _ = b.l.Allow(ctx, "auth:otp", "ip:192.0.2.66")
	}
	before := b.calls.scripts.Load()
	for i := 0; i < 1000; i++ {
		res, _ := b.l.Allow(ctx, "auth:otp", "ip:192.0.2.66")
		if res.Allowed || res.Reason != ReasonBlockedLocally || res.RetryAfter <= 0 {
			t.Fatalf("repeat %d: %+v", i, res)
		}
	}
	if got := b.calls.scripts.Load() - before; got != 0 {
		t.Fatalf("blocked repeat offender made %d Redis calls", got)
	}
	if got := b.metric(t, "jobworker_ratelimit_local_cache_hits_total", map[string]string{"bucket": "auth:otp"}); got != 1000 {
		t.Fatalf("cache hits metric = %v", got)
	}
	// The block is per bucket: the same client is still welcome elsewhere.
	if res, _ := b.l.Allow(ctx, "streams:status", "ip:192.0.2.66"); !res.Allowed || b.calls.scripts.Load()-before != 1 {
		t.Fatalf("other bucket: %+v", res)
	}
}

// TestDegraded covers each failure mode with Redis stopped (connections
// refused) and hung (SIGSTOP: answers lost at the deadline).
func TestDegraded(t *testing.T) {
	t.Parallel()
	const limit = 3
	// Long enough for the healthy first call (a dial and a script load) on
	// two busy cores under -race; every degraded call waits it out once.
	const timeout = 250 * time.Millisecond
	type step struct {
		allowed bool
		reason  Reason
		action  string
	}
	local := []step{ // the outage limiter: at most the limit per window
		{true, ReasonDegradedLocal, "local-allowed"}, {true, ReasonDegradedLocal, "local-allowed"}, {true, ReasonDegradedLocal, "local-allowed"},
		{false, ReasonDegradedLocal, "local-refused"}, {false, ReasonDegradedLocal, "local-refused"},
	}
	closed := []step{{false, ReasonDegradedClosed, "closed"}, {false, ReasonDegradedClosed, "closed"}, {false, ReasonDegradedClosed, "closed"}}
	open := []step{{true, ReasonDegradedOpen, "open"}, {true, ReasonDegradedOpen, "open"}, {true, ReasonDegradedOpen, "open"}, {true, ReasonDegradedOpen, "open"}}
	for _, tc := range []struct {
		name       string
		failure    map[string]FailureMode
		bucket     string
		hang       bool // SIGSTOP instead of shutdown
		background bool // a client without ContextTimeoutEnabled: the batcher sends from a goroutine
		expect     []step
	}{
		{"stopped, moderate falls to the local limiter", nil, "default", false, false, local},
		{"stopped, strict fails closed by default", nil, "auth:otp", false, false, closed},
		{"stopped, strict set to local", map[string]FailureMode{TierStrict: FailureLocal}, "auth:otp", false, false, local},
		{"stopped, a bucket set to open", map[string]FailureMode{"tips:quick": FailureOpen}, "tips:quick", false, false, open},
		{"stopped, moderate set to closed", map[string]FailureMode{TierModerate: FailureClosed}, "default", false, false, closed},
		{"stopped, bucket entry wins over tier", map[string]FailureMode{TierModerate: FailureClosed, "default": FailureLocal}, "default", false, false, local},
		{"hung, local limiter within the deadline", nil, "default", true, false, local},
		{"hung, client ignoring deadlines", nil, "default", true, true, local},
		{"hung, strict fails closed", nil, "tips:quick", true, false, closed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs logtest.Buffer
			srv := redistest.Start(t)
			b := setupOn(t, srv, func(c *Config) {
				if tc.background {
					rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, ReadTimeout: 10 * time.Second})
					t.Cleanup(func() { _ = rdb.Close() })
					c.Client = rdb
				}
				c.Failure = tc.failure
				c.Timeout = timeout
				c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
				c.Overrides = map[string]Quota{tc.bucket: {Limit: limit, Period: time.Minute}}
			})
			ctx := context.Background()
			if res, _ := b.l.Allow(ctx, tc.bucket, "user:warm"); !res.Allowed || res.Reason != ReasonAllowed {
				t.Fatalf("healthy: %+v", res)
			}
			if tc.hang {
				b.srv.Pause()
				t.Cleanup(b.srv.Resume)
			} else {
				b.srv.Stop()
			}
			actions := map[string]int{}
			start := time.Now()
			admitted := 0
			for i, want := range tc.expect {
				res, err := b.l.Allow(ctx, tc.bucket, "user:1")
				if err != nil {
					t.Fatal(err)
				}
				if res.Reason != want.reason || res.Allowed != want.allowed || res.Err == nil || !res.Reason.Degraded() {
					t.Fatalf("degraded %d: %+v, want %+v", i, res, want)
				}
				if res.Allowed {
					admitted++
				}
				switch {
				case !res.Allowed && (res.Remaining != 0 || res.RetryAfter <= 0):
					t.Fatalf("refusal %d reports %d remaining, RetryAfter %s", i, res.Remaining, res.RetryAfter)
				case want.reason == ReasonDegradedClosed && res.RetryAfter != time.Second:
					t.Fatalf("closed RetryAfter %s", res.RetryAfter)
				case res.Allowed && res.Remaining != max(limit-admitted, 0):
					t.Fatalf("local admission %d reports %d remaining, want %d", i, res.Remaining, max(limit-admitted, 0))
				}
				actions[want.action]++
			}
			if el := time.Since(start); tc.hang && el > time.Duration(len(tc.expect))*timeout+2*time.Second {
				t.Fatalf("%d hung calls took %s: deadline not applied", len(tc.expect), el)
			}
			for action, n := range actions {
				if got := b.metric(t, "jobworker_ratelimit_degraded_total", map[string]string{"bucket": tc.bucket, "action": action}); int(got) != n {
					t.Fatalf("degraded{action=%s} = %v, want %d", action, got, n)
				}
			}
			if lines := strings.Count(logs.String(), "rate limit degraded"); lines != 1 {
				t.Fatalf("%d degraded log lines for %d decisions, want 1 (throttled):\n%s", lines, len(tc.expect), logs.String())
			}
			if strings.Contains(logs.String(), "user:1") {
				t.Fatal("identifier in logs")
			}
		})
	}
}

// TestDegradedLocalWindowEnds: the outage limiter's window is Period long
// by this instance's clock, then admits the limit again; it never holds
// more windows than DegradedCacheSize, refusing new identifiers instead of
// forgetting a live window.
func TestDegradedLocalWindowEnds(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) {
		c.Overrides = map[string]Quota{DefaultBucket: {Limit: 2, Period: time.Minute}}
		c.DegradedCacheSize = cacheShards // one window per shard
	})
	b.srv.Stop()
	ctx := context.Background()
	admitted := func(id string, n int) int {
		got := 0
		for range n {
			if res, _ := b.l.Allow(ctx, DefaultBucket, id); res.Allowed {
				got++
			}
		}
		return got
	}
	if got := admitted("user:1", 5); got != 2 {
		t.Fatalf("admitted %d in one local window, limit 2", got)
	}
	b.clock.Advance(59 * time.Second)
	if got := admitted("user:1", 1); got != 0 {
		t.Fatal("admitted before the local window ended")
	}
	b.clock.Advance(time.Second)
	if got := admitted("user:1", 5); got != 2 {
		t.Fatalf("admitted %d in the next local window, limit 2", got)
	}
	// Fill every shard, then some: a new identifier is refused (503), and
	// the live windows keep their counts.
	full := 0
	for i := range 10 * cacheShards {
		res, _ := b.l.Allow(ctx, DefaultBucket, "user:x"+strconv.Itoa(i))
		if res.Reason == ReasonDegradedClosed {
			full++
		}
	}
	if n := b.l.fallback.len(); n > cacheShards || full == 0 {
		t.Fatalf("outage limiter holds %d windows (bound %d), %d refused for room", n, cacheShards, full)
	}
	if got := admitted("user:1", 1); got != 0 {
		t.Fatal("a live local window was forgotten under pressure")
	}
}

func TestRecoversAfterRedisRestart(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	_, _ = b.l.Allow(ctx, "default", "user:1")
	b.srv.Stop()
	if res, _ := b.l.Allow(ctx, "default", "user:1"); res.Reason != ReasonDegradedLocal || !res.Allowed {
		t.Fatalf("stopped, in an outage: %+v", res)
	}
	b.srv.Restart()
	res, err := b.l.Allow(ctx, "default", "user:1")
	if err != nil || res.Reason != ReasonAllowed || res.Remaining != 58 {
		t.Fatalf("after restart: %+v %v", res, err)
	}
}

func TestNoScriptFallback(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	if err := b.rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if res, err := b.l.Allow(ctx, "default", "user:1"); err != nil || res.Reason != ReasonAllowed {
		t.Fatalf("after SCRIPT FLUSH: %+v %v", res, err)
	}
	if strings.Contains(windowScript, "replicate_commands") {
		t.Fatal("script calls redis.replicate_commands (Upstash rejects it)")
	}
}

func TestMisuse(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		bucket string
		id     string
		n      int
		want   error
	}{
		{"unknown bucket", "nope", "user:1", 1, ErrUnknownBucket},
		{"empty identifier", "default", "", 1, ErrNoIdentity},
		{"zero cost", "default", "user:1", 0, ErrInvalidCost},
		{"cost above limit", "auth:otp", "user:1", 11, ErrInvalidCost},
	} {
		if _, err := b.l.AllowN(ctx, tc.bucket, tc.id, tc.n); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.l.Allow(cctx, "default", "user:1"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled ctx: err = %v", err)
	}
	if n := b.calls.scripts.Load(); n > 1 {
		t.Errorf("misuse reached Redis %d times (at most the cancelled call may)", n)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	rdb := &countingClient{}
	k := testHashKey
	for _, tc := range []struct {
		name      string
		cfg       Config
		wantField string
		wantName  string
	}{
		{"no client", Config{HashKey: k}, "Client", ""},
		{"no hash key", Config{Client: rdb}, "HashKey", ""},
		{"short hash key", Config{Client: rdb, HashKey: []byte("0123456789abcde")}, "HashKey", ""},
		{"brace in prefix", Config{Client: rdb, HashKey: k, Prefix: "{app}:"}, "Prefix", ""},
		{"bucket with unknown tier", Config{Client: rdb, HashKey: k, Buckets: map[string]string{"x": "gold"}}, "Buckets", "x"},
		{"override for unknown bucket", Config{Client: rdb, HashKey: k, Overrides: map[string]Quota{"nope": PerMinute(1)}}, "Overrides", "nope"},
		{"zero limit", Config{Client: rdb, HashKey: k, Overrides: map[string]Quota{"default": {Limit: 0, Period: time.Minute}}}, "Overrides", "default"},
		{"sub-second period", Config{Client: rdb, HashKey: k, Overrides: map[string]Quota{"default": {Limit: 1, Period: 500 * time.Millisecond}}}, "Overrides", "default"},
		{"bad tier quota", Config{Client: rdb, HashKey: k, Tiers: map[string]Quota{"t": {Limit: 1}}, Buckets: map[string]string{"b": "t"}}, "Tiers", "t"},
		{"failure for unknown name", Config{Client: rdb, HashKey: k, Failure: map[string]FailureMode{"strikt": FailureClosed}}, "Failure", "strikt"},
		{"unknown failure mode", Config{Client: rdb, HashKey: k, Failure: map[string]FailureMode{TierStrict: "maybe"}}, "Failure", TierStrict},
		{"brace in bucket", Config{Client: rdb, HashKey: k, Buckets: map[string]string{"a{b}": TierStrict}}, "Buckets", "a{b}"},
		{"negative timeout", Config{Client: rdb, HashKey: k, Timeout: -time.Second}, "Timeout", ""},
		{"negative retry-after", Config{Client: rdb, HashKey: k, DegradedRetryAfter: -time.Second}, "DegradedRetryAfter", ""},
		{"negative queue", Config{Client: rdb, HashKey: k, MaxQueue: -1}, "MaxQueue", ""},
		{"negative degraded cache", Config{Client: rdb, HashKey: k, DegradedCacheSize: -1}, "DegradedCacheSize", ""},
		{"lease for unknown name", Config{Client: rdb, HashKey: k, Leases: map[string]int{"gold": 2}}, "Leases", "gold"},
		{"negative lease", Config{Client: rdb, HashKey: k, Leases: map[string]int{TierGenerous: -1}}, "Leases", TierGenerous},
		{"lease above the limit", Config{Client: rdb, HashKey: k, Leases: map[string]int{TierStrict: 11}}, "Leases", TierStrict},
		{"bucket lease above its override", Config{Client: rdb, HashKey: k, Leases: map[string]int{"default": 6},
			Overrides: map[string]Quota{"default": PerMinute(5)}}, "Leases", "default"},
		{"tier lease above a bucket's override", Config{Client: rdb, HashKey: k, Leases: map[string]int{TierModerate: 6},
			Overrides: map[string]Quota{"default": PerMinute(5)}}, "Leases", TierModerate},
		{"lease without local cache", Config{Client: rdb, HashKey: k, Leases: map[string]int{TierGenerous: 2}, LocalCacheSize: -1}, "Leases", TierGenerous},
	} {
		for _, call := range []struct {
			name string
			err  func() error
		}{
			{"Validate", tc.cfg.Validate},
			{"New", func() error { _, err := New(tc.cfg); return err }},
		} {
			err := call.err()
			var ce *ConfigError
			if !errors.Is(err, ErrInvalidConfig) || !errors.As(err, &ce) || ce.Field != tc.wantField || ce.Name != tc.wantName {
				t.Errorf("%s: %s() = %v (%+v), want a ConfigError on %s[%q]", tc.name, call.name, err, ce, tc.wantField, tc.wantName)
				continue
			}
			if strings.Contains(err.Error(), string(k)) || !strings.HasPrefix(err.Error(), "limits: invalid config: "+tc.wantField+": ") {
				t.Errorf("%s: message %q", tc.name, err)
			}
		}
	}
	if err := (Config{Client: rdb, HashKey: k}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	// Policies needs no client and reports the same policy errors.
	var ce *ConfigError
	if _, err := (Config{Leases: map[string]int{TierStrict: 11}}).Policies(); !errors.As(err, &ce) || ce.Field != "Leases" {
		t.Errorf("Policies: %v", err)
	}
}

func TestDefaultPolicies(t *testing.T) {
	t.Parallel()
	l, err := New(Config{Client: &countingClient{}, HashKey: testHashKey,
		Failure:   map[string]FailureMode{"auth:login": FailureLocal, TierGenerous: FailureOpen},
		Overrides: map[string]Quota{"streams:status": {Limit: 300, Period: time.Minute}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		bucket, tier string
		limit        int
		failure      FailureMode
	}{
		{"auth:otp", TierStrict, 10, FailureClosed},
		{"auth:login", TierStrict, 10, FailureLocal},
		{"tips:quick", TierStrict, 10, FailureClosed},
		{"content:upload", TierStrict, 10, FailureClosed},
		{"calls:request", TierStrict, 10, FailureClosed},
		{"messages:send", TierModerate, 60, FailureLocal},
		{"default", TierModerate, 60, FailureLocal},
		{"streams:status", TierGenerous, 300, FailureOpen},
	} {
		p, ok := l.Policy(tc.bucket)
		if !ok || p.Tier != tc.tier || p.Limit != tc.limit || p.Period != time.Minute || p.Failure != tc.failure {
			t.Errorf("%s: %+v", tc.bucket, p)
		}
	}
}

func TestParseOverrides(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		given    string
		expect   map[string]Quota
		wantName string // the item a failure names; "" = no error
	}{
		{"", map[string]Quota{}, ""},
		{"tips:quick=5/1m,streams:status=300/1m", map[string]Quota{"tips:quick": {5, time.Minute}, "streams:status": {300, time.Minute}}, ""},
		{" auth:otp = 3 / 30s ", map[string]Quota{"auth:otp": {3, 30 * time.Second}}, ""},
		{"default=100/h", map[string]Quota{"default": {100, time.Hour}}, ""},
		{"default=100", nil, "default"},
		{"=5/1m", nil, "=5/1m"},
		{"default=x/1m", nil, "default"},
		{"default=5/soon", nil, "default"},
		{"default=0/1m", nil, "default"},
		{"default=5/100ms", nil, "default"},
		{"default=5/1m,default=6/1m", nil, "default"},
	} {
		got, err := ParseOverrides(tc.given)
		var ce *ConfigError
		if tc.wantName != "" {
			if !errors.As(err, &ce) || ce.Field != "Overrides" || ce.Name != tc.wantName {
				t.Errorf("%q: err = %v, want a ConfigError naming %q", tc.given, err, tc.wantName)
			}
			continue
		}
		if err != nil || len(got) != len(tc.expect) {
			t.Errorf("%q: got %v, %v", tc.given, got, err)
		}
		for k, v := range tc.expect {
			if got[k] != v {
				t.Errorf("%q: %s = %v, want %v", tc.given, k, got[k], v)
			}
		}
	}
}

func TestParseFailure(t *testing.T) {
	t.Parallel()
	got, err := ParseFailure(" strict=local, auth:otp = CLOSED ,streams:status=open,,")
	if err != nil || len(got) != 3 || got[TierStrict] != FailureLocal || got["auth:otp"] != FailureClosed || got["streams:status"] != FailureOpen {
		t.Fatalf("ParseFailure = %v, %v", got, err)
	}
	for _, bad := range []struct{ given, name string }{
		{"strict", "strict"}, {"=open", "=open"}, {"strict=maybe", "strict"}, {"strict=open,strict=local", "strict"},
	} {
		var ce *ConfigError
		if _, err := ParseFailure(bad.given); !errors.As(err, &ce) || ce.Field != "Failure" || ce.Name != bad.name {
			t.Errorf("ParseFailure(%q) = %v, want a ConfigError naming %q", bad.given, err, bad.name)
		}
	}
	if got, err := ParseFailClosed(" strict, auth:otp ,,"); err != nil || len(got) != 2 || got[0] != "strict" || got[1] != "auth:otp" {
		t.Errorf("ParseFailClosed = %q, %v", got, err)
	}
	var ce *ConfigError
	if _, err := ParseFailClosed("strict,a{b}"); !errors.As(err, &ce) || ce.Field != FieldFailClosed || ce.Name != "a{b}" {
		t.Errorf("ParseFailClosed with a brace: %v", err)
	}
}

func TestLocalCacheIsBounded(t *testing.T) {
	t.Parallel()
	c := newLocalCache(64)
	now := newFakeClock().Now()
	for i := 0; i < 10000; i++ {
		c.settle(strings.Repeat("k", i%7)+string(rune('a'+i%26))+time.Duration(i).String(), localEntry{until: now.Add(time.Minute)}, 0, true, now)
	}
	if n := c.len(); n > 64+cacheShards {
		t.Fatalf("cache holds %d entries, bound is about 64", n)
	}
	c.settle("x", localEntry{until: now.Add(time.Second)}, 0, true, now)
	if e, out, _ := c.take("x", 1, 0, now.Add(2*time.Second)); out != askRedis || e != (localEntry{}) {
		t.Fatalf("expired entry used: %v %+v", out, e)
	}
}

// TestLocalCacheEvictsTheCheapest: a full shard makes room by dropping an
// identifier seen once before a busy identifier's lease, and that before a
// known-spent window.
func TestLocalCacheEvictsTheCheapest(t *testing.T) {
	t.Parallel()
	c := newLocalCache(cacheShards)
	now := newFakeClock().Now()
	s := &c.shards[0]
	live := now.Add(time.Minute)
	s.m["once-a"] = localEntry{taken: 1, remaining: 50, until: live}
	s.m["once-b"] = localEntry{taken: 1, remaining: 50, until: live}
	s.m["busy"] = localEntry{taken: 63, tokens: 30, remaining: 20, until: live}
	s.m["spent"] = localEntry{taken: 5, until: live}
	for _, want := range []string{"busy once spent", "busy spent", "spent", ""} {
		s.evict(now)
		var got []string
		for k := range s.m {
			got = append(got, strings.TrimSuffix(strings.TrimSuffix(k, "-a"), "-b"))
		}
		slices.Sort(got)
		if strings.Join(got, " ") != want {
			t.Fatalf("after eviction: %v, want %s", got, want)
		}
	}
}

func TestConcurrentCallersAreBatchedAndExact(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		ctxClient bool
	}{{"inline sender", true}, {"background sender", false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			var counted *countingClient
			b := setupOn(t, srv, func(c *Config) {
				counted = c.Client.(*gateClient).Client.(*countingClient)
				if tc.ctxClient {
					rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
					t.Cleanup(func() { _ = rdb.Close() })
					counted = &countingClient{Client: rdb}
					c.Client = counted
				}
				c.MaxInFlight = 1 // everything beyond one round trip queues
				c.LocalCacheSize = -1
				c.Timeout = 5 * time.Second
				c.Overrides = map[string]Quota{"default": {Limit: 100, Period: time.Minute}}
			})
			ctx := context.Background()
			// A fresh script cache: the first pipeline meets NOSCRIPT.
			if err := b.rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			const g, each = 64, 10
			var wg sync.WaitGroup
			var mu sync.Mutex
			allowed, denied := 0, 0
			release := make(chan struct{})
			for i := 0; i < g; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-release
					for j := 0; j < each; j++ {
						res, err := b.l.Allow(ctx, "default", "user:hot")
						mu.Lock()
						switch {
						case err != nil || res.Reason.Degraded() || res.Reason == ReasonOverloaded:
							t.Errorf("decision failed: %+v %v", res, err)
						case res.Allowed:
							allowed++
						default:
							denied++
						}
						mu.Unlock()
					}
				}()
			}
			close(release)
			wg.Wait()
			if allowed != 100 || denied != g*each-100 {
				t.Fatalf("allowed %d denied %d, want exactly 100 admitted", allowed, denied)
			}
			if counted.pipes.Load() == 0 || counted.merged.Load() == 0 {
				t.Fatalf("%d pipelines, %d merged batches under 64 concurrent callers, want both", counted.pipes.Load(), counted.merged.Load())
			}
			if n := counted.scripts.Load(); n < g*each {
				t.Fatalf("%d script runs for %d decisions", n, g*each)
			}
		})
	}
}

// TestMergedBatchesAcrossInstancesAreExact: three instances on one Redis,
// one round trip at a time each, so concurrent decisions leave as merged
// batches mixing identifiers and buckets of different limits (and the same
// identifier several times). Without leases (and without the local cache)
// every identifier gets exactly its limit across the instances, and the
// admitted requests report every Remaining from limit-1 down to 0 once:
// each decision got its own reply, which saw the counter exactly as it
// stood after the one before it. With leases the limit is still never
// passed, in admissions or in Redis.
func TestMergedBatchesAcrossInstancesAreExact(t *testing.T) {
	t.Parallel()
	for _, lease := range []int{0, 3} {
		t.Run("lease="+strconv.Itoa(lease), func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			limits := map[string]int{"a": 7, "b": 13}
			var instances []*testBundle
			for range 3 {
				instances = append(instances, setupOn(t, srv, func(c *Config) {
					c.MaxInFlight = 1
					c.Tiers = map[string]Quota{"a": {Limit: 7, Period: time.Minute}, "b": {Limit: 13, Period: time.Minute}}
					c.Buckets = map[string]string{"a": "a", "b": "b"}
					if lease > 0 {
						c.Leases = map[string]int{"a": lease, "b": lease}
					} else {
						// Each Remaining then comes from its own reply alone, not
						// merged with what the instance learnt from others.
						c.LocalCacheSize = -1
					}
				}))
			}
			const ids, g, each = 8, 48, 20
			type window struct{ bucket, id string }
			var mu sync.Mutex
			admitted := map[window][]int{} // Remaining of each admission
			var wg sync.WaitGroup
			release := make(chan struct{})
			for i := range g {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-release
					l := instances[i%len(instances)].l
					for j := range each {
						w := window{[]string{"a", "b"}[(i+j)%2], "user:" + strconv.Itoa((i*5+j/2)%ids)}
						res, err := l.Allow(context.Background(), w.bucket, w.id)
						if err != nil || res.Reason.Degraded() || res.Reason == ReasonOverloaded {
							t.Errorf("decision failed: %+v %v", res, err)
							return
						}
						if res.Allowed {
							mu.Lock()
							admitted[w] = append(admitted[w], res.Remaining)
							mu.Unlock()
						}
					}
				}()
			}
			close(release)
			wg.Wait()
			var merged int64
			for _, b := range instances {
				merged += b.calls.merged.Load()
			}
			if merged == 0 {
				t.Fatal("no merged batch was sent")
			}
			for bucket, limit := range limits {
				for id := range ids {
					w := window{bucket, "user:" + strconv.Itoa(id)}
					got := admitted[w]
					key := instances[0].l.key(instances[0].l.buckets[bucket], w.id)
					used, err := instances[0].rdb.Get(context.Background(), key).Int()
					if err != nil {
						t.Fatal(err)
					}
					if len(got) > limit || used > limit || len(got) > used {
						t.Fatalf("%v: %d admitted, counter %d, limit %d", w, len(got), used, limit)
					}
					if lease > 0 {
						continue
					}
					slices.Sort(got)
					if len(got) != limit || used != limit || got[0] != 0 || got[limit-1] != limit-1 || len(slices.Compact(got)) != limit {
						t.Fatalf("%v: admitted with Remaining %v, counter %d, want each of 0..%d once", w, got, used, limit-1)
					}
				}
			}
		})
	}
}

// TestKeysAreKeyedHashes: a Redis reader cannot reproduce a key from a
// guessed identity without HashKey: the key suffix is not the plain
// SHA-256 of the identity, limiters sharing the key agree on every key
// (and so on every window), and another key gives other keys.
func TestKeysAreKeyedHashes(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	one, two := setupOn(t, srv, nil), setupOn(t, srv, nil)
	other := setupOn(t, srv, func(c *Config) { c.HashKey = []byte("another-instance-key-0123456789") })
	ctx := context.Background()
	const id = "ip:203.0.113.7"
	if _, err := one.l.Allow(ctx, "auth:otp", id); err != nil {
		t.Fatal(err)
	}
	keys := allKeys(t, one.rdb)
	if len(keys) != 1 {
		t.Fatalf("keys %v", keys)
	}
	plain := sha256.Sum256([]byte(id))
	if guess := "test:rl:strict:auth:otp:{" + hex.EncodeToString(plain[:16]) + "}"; keys[0] == guess {
		t.Fatalf("key %s is the unkeyed hash of the identity", keys[0])
	}
	mac := hmac.New(sha256.New, testHashKey)
	mac.Write([]byte(id))
	if want := "test:rl:strict:auth:otp:{" + hex.EncodeToString(mac.Sum(nil)[:16]) + "}"; keys[0] != want {
		t.Fatalf("key %s, want HMAC-SHA-256 under HashKey %s", keys[0], want)
	}
	// The second instance shares the key: it sees the same window.
	res, err := two.l.Allow(ctx, "auth:otp", id)
	if err != nil || res.Remaining != 8 {
		t.Fatalf("second instance: %+v %v (want the shared window, 8 left)", res, err)
	}
	// Another key is another keyspace: a fresh window, a second key.
	if res, _ := other.l.Allow(ctx, "auth:otp", id); res.Remaining != 9 || len(allKeys(t, one.rdb)) != 2 {
		t.Fatalf("other key: %+v, keys %v", res, allKeys(t, one.rdb))
	}
}

// TestQueueingIsNotAnOutage: Redis behind a slow network (every round trip
// at least 300 ms, under the 500 ms Timeout) and one round trip at a time.
// A second decision arrives while the first is out, waits for it, then
// makes its own round trip: about 600 ms in all, longer than Timeout. It
// must not be degraded: the deadline measures Redis, not this process's
// queue.
func TestQueueingIsNotAnOutage(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const timeout = 500 * time.Millisecond
	// sent reports each round trip leaving, holding none.
	sent := &gateClient{entered: make(chan struct{}, 64), release: make(chan struct{})}
	close(sent.release)
	sent.hold.Store(true)
	b := setupOn(t, srv, func(c *Config) {
		// One connection, opened now: a handshake is several slow round trips.
		rdb := redis.NewClient(&redis.Options{Addr: redistest.Delay(t, srv.Addr(), 300*time.Millisecond),
			ContextTimeoutEnabled: true, MaxRetries: -1, PoolSize: 1})
		t.Cleanup(func() { _ = rdb.Close() })
		if err := rdb.Ping(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		sent.Client = &countingClient{Client: rdb}
		c.Client = sent
		c.Timeout = timeout
		c.MaxInFlight = 1
	})
	ctx := context.Background()
	if err := window.Load(ctx, b.rdb).Err(); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		res  Result
		err  error
		took time.Duration
	}
	decide := func(id string, out chan<- answer) {
		start := time.Now()
		res, err := b.l.Allow(ctx, "tips:quick", id)
		out <- answer{res, err, time.Since(start)}
	}
	first, second := make(chan answer, 1), make(chan answer, 1)
	go decide("user:1", first)
	<-sent.entered // the only slot is taken
	go decide("user:2", second)
	for _, ch := range []chan answer{first, second} {
		a := <-ch
		if a.err != nil || a.res.Reason != ReasonAllowed {
			t.Fatalf("decision after %s: %+v %v", a.took, a.res, a.err)
		}
		if ch == second && a.took <= timeout {
			t.Fatalf("the queued decision took %s, not above Timeout %s: the test proved nothing", a.took, timeout)
		}
	}
}

// TestOutageKeepsAKnownSpentWindow: when Redis fails, a window this
// instance knows is spent stays refused (blocked-locally, with its true
// Retry-After), and a leasing bucket's local window starts from what Redis
// last said was left, never from a fresh quota.
func TestOutageKeepsAKnownSpentWindow(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) {
		withLease(PerMinute(10), 4)(c)
		c.Timeout = 100 * time.Millisecond // a stopped Redis answers nothing within it
	})
	ctx := context.Background()
	for range 10 {
		_, _ = b.l.Allow(ctx, DefaultBucket, "user:spent")
	}
	for range 6 { // 6 admitted, and a lease held: 4 or fewer left unleased in Redis
		_, _ = b.l.Allow(ctx, DefaultBucket, "user:busy")
	}
	key := b.l.key(b.l.buckets[DefaultBucket], "user:busy")
	known := b.l.cache.peek(key, b.clock.Now())
	b.srv.Stop()
	b.clock.Advance(time.Second) // the lease's window by this clock is still open
	if res, _ := b.l.Allow(ctx, DefaultBucket, "user:spent"); res.Allowed || res.Reason != ReasonBlockedLocally || res.RetryAfter < 58*time.Second {
		t.Fatalf("spent window during the outage: %+v", res)
	}
	admitted := 0
	for range 20 {
		if res, _ := b.l.Allow(ctx, DefaultBucket, "user:busy"); res.Allowed {
			admitted++
		}
	}
	if admitted != known.tokens+known.remaining || 6+admitted > 10 {
		t.Fatalf("admitted %d more during the outage; this instance knew %d left (%d leased, %d in Redis)",
			admitted, known.tokens+known.remaining, known.tokens, known.remaining)
	}
}
