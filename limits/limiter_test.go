package limits

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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
	b := setup(t, func(c *Config) { c.Overrides = map[string]Quota{"auth:otp": {Limit: 2, Period: time.Second}} })
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if res, _ := b.l.Allow(ctx, "auth:otp", "ip:198.51.100.1"); !res.Allowed {
			t.Fatalf("request %d refused: %+v", i, res)
		}
	}
	res, _ := b.l.Allow(ctx, "auth:otp", "ip:198.51.100.1")
	if res.Allowed || res.RetryAfter <= 0 || res.RetryAfter > time.Second {
		t.Fatalf("3rd: %+v", res)
	}
	// Wait as long as the limiter told the client to, plus a little: Redis
	// judges expiry by a clock it caches per event-loop turn, which may lag
	// real time by a millisecond or two under load. (HTTP clients see
	// Retry-After rounded up to whole seconds anyway.)
	<-time.After(res.RetryAfter + 20*time.Millisecond)
	res, _ = b.l.Allow(ctx, "auth:otp", "ip:198.51.100.1")
	if !res.Allowed || res.Remaining != 1 || res.Reason != ReasonAllowed {
		t.Fatalf("after RetryAfter: %+v", res)
	}
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
	b := setup(t, func(c *Config) { c.HashKey = []byte("k") })
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

func TestDegraded(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		failClosed  []string
		bucket      string
		hang        bool // SIGSTOP instead of shutdown
		ctxClient   bool // go-redis with ContextTimeoutEnabled (no helper goroutine)
		wantAllowed bool
	}{
		{"stopped, default fails open", nil, "auth:otp", false, false, true},
		{"stopped, strict fails closed", []string{"strict"}, "auth:otp", false, false, false},
		{"stopped, closed tier leaves moderate open", []string{"strict"}, "default", false, false, true},
		{"stopped, bucket fails closed", []string{"tips:quick"}, "tips:quick", false, false, false},
		{"hung, fails open within deadline", nil, "default", true, false, true},
		{"hung, fails closed within deadline", []string{"moderate"}, "default", true, false, false},
		{"hung, context-aware client", nil, "default", true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs syncBuffer
			srv := redistest.Start(t)
			b := setupOn(t, srv, func(c *Config) {
				if tc.ctxClient {
					rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1})
					t.Cleanup(func() { _ = rdb.Close() })
					c.Client = rdb
				}
				c.FailClosed = tc.failClosed
				c.Timeout = 30 * time.Millisecond
				c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			})
			ctx := context.Background()
			if res, _ := b.l.Allow(ctx, tc.bucket, "user:1"); !res.Allowed {
				t.Fatalf("healthy: %+v", res)
			}
			if tc.hang {
				b.srv.Pause()
				t.Cleanup(b.srv.Resume)
			} else {
				b.srv.Stop()
			}
			const n = 20
			start := time.Now()
			for i := 0; i < n; i++ {
				res, err := b.l.Allow(ctx, tc.bucket, "user:1")
				if err != nil {
					t.Fatal(err)
				}
				if res.Reason != ReasonDegraded || res.Allowed != tc.wantAllowed || res.Err == nil {
					t.Fatalf("degraded %d: %+v", i, res)
				}
				if !res.Allowed && (res.RetryAfter != time.Second || res.Remaining != 0) {
					t.Fatalf("fail-closed result: %+v", res)
				}
			}
			if el := time.Since(start); tc.hang && el > n*(30*time.Millisecond)+time.Second {
				t.Fatalf("%d hung calls took %s: deadline not applied", n, el)
			}
			action := map[bool]string{true: "open", false: "closed"}[tc.wantAllowed]
			if got := b.metric(t, "jobworker_ratelimit_degraded_total", map[string]string{"bucket": tc.bucket, "action": action}); got != n {
				t.Fatalf("degraded metric = %v, want %d", got, n)
			}
			if got := b.metric(t, "jobworker_ratelimit_decisions_total", map[string]string{"bucket": tc.bucket, "reason": "degraded"}); got != n {
				t.Fatalf("decisions{degraded} = %v, want %d", got, n)
			}
			if lines := strings.Count(logs.String(), "rate limit degraded"); lines != 1 {
				t.Fatalf("%d degraded log lines for %d decisions, want 1 (throttled):\n%s", lines, n, logs.String())
			}
			if strings.Contains(logs.String(), "user:1") {
				t.Fatal("identifier in logs")
			}
		})
	}
}

func TestRecoversAfterRedisRestart(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	_, _ = b.l.Allow(ctx, "default", "user:1")
	b.srv.Stop()
	if res, _ := b.l.Allow(ctx, "default", "user:1"); res.Reason != ReasonDegraded {
		t.Fatalf("stopped: %+v", res)
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
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no client", Config{}},
		{"brace in prefix", Config{Client: rdb, Prefix: "{app}:"}},
		{"bucket with unknown tier", Config{Client: rdb, Buckets: map[string]string{"x": "gold"}}},
		{"override for unknown bucket", Config{Client: rdb, Overrides: map[string]Quota{"nope": PerMinute(1)}}},
		{"zero limit", Config{Client: rdb, Overrides: map[string]Quota{"default": {Limit: 0, Period: time.Minute}}}},
		{"sub-second period", Config{Client: rdb, Overrides: map[string]Quota{"default": {Limit: 1, Period: 500 * time.Millisecond}}}},
		{"fail-closed unknown name", Config{Client: rdb, FailClosed: []string{"strikt"}}},
		{"brace in bucket", Config{Client: rdb, Buckets: map[string]string{"a{b}": TierStrict}}},
		{"negative timeout", Config{Client: rdb, Timeout: -time.Second}},
		{"lease for unknown name", Config{Client: rdb, Leases: map[string]int{"gold": 2}}},
		{"negative lease", Config{Client: rdb, Leases: map[string]int{TierGenerous: -1}}},
		{"lease above the limit", Config{Client: rdb, Leases: map[string]int{TierStrict: 11}}},
		{"bucket lease above its override", Config{Client: rdb, Leases: map[string]int{"default": 6},
			Overrides: map[string]Quota{"default": PerMinute(5)}}},
		{"lease without local cache", Config{Client: rdb, Leases: map[string]int{TierGenerous: 2}, LocalCacheSize: -1}},
	} {
		err := tc.cfg.Validate()
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Validate() = %v, want ErrInvalidConfig", tc.name, err)
		}
		if _, err := New(tc.cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: New() = %v", tc.name, err)
		}
	}
	if err := (Config{Client: rdb}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func TestDefaultPolicies(t *testing.T) {
	t.Parallel()
	l, err := New(Config{Client: &countingClient{}, FailClosed: []string{"strict"},
		Overrides: map[string]Quota{"streams:status": {Limit: 300, Period: time.Minute}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		bucket, tier string
		limit        int
		closed       bool
	}{
		{"auth:otp", TierStrict, 10, true},
		{"auth:login", TierStrict, 10, true},
		{"tips:quick", TierStrict, 10, true},
		{"content:upload", TierStrict, 10, true},
		{"calls:request", TierStrict, 10, true},
		{"messages:send", TierModerate, 60, false},
		{"default", TierModerate, 60, false},
		{"streams:status", TierGenerous, 300, false},
	} {
		p, ok := l.Policy(tc.bucket)
		if !ok || p.Tier != tc.tier || p.Limit != tc.limit || p.Period != time.Minute || p.FailClosed != tc.closed {
			t.Errorf("%s: %+v", tc.bucket, p)
		}
	}
}

func TestParseOverrides(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		given   string
		expect  map[string]Quota
		wantErr bool
	}{
		{"", map[string]Quota{}, false},
		{"tips:quick=5/1m,streams:status=300/1m", map[string]Quota{"tips:quick": {5, time.Minute}, "streams:status": {300, time.Minute}}, false},
		{" auth:otp = 3 / 30s ", map[string]Quota{"auth:otp": {3, 30 * time.Second}}, false},
		{"default=100/h", map[string]Quota{"default": {100, time.Hour}}, false},
		{"default=100", nil, true},
		{"=5/1m", nil, true},
		{"default=x/1m", nil, true},
		{"default=5/soon", nil, true},
		{"default=0/1m", nil, true},
		{"default=5/100ms", nil, true},
		{"default=5/1m,default=6/1m", nil, true},
	} {
		got, err := ParseOverrides(tc.given)
		if (err != nil) != tc.wantErr {
			t.Errorf("%q: err = %v", tc.given, err)
			continue
		}
		if tc.wantErr {
			continue
		}
		if len(got) != len(tc.expect) {
			t.Errorf("%q: got %v", tc.given, got)
		}
		for k, v := range tc.expect {
			if got[k] != v {
				t.Errorf("%q: %s = %v, want %v", tc.given, k, got[k], v)
			}
		}
	}
	if got := ParseFailClosed(" strict, auth:otp ,,"); len(got) != 2 || got[0] != "strict" || got[1] != "auth:otp" {
		t.Errorf("ParseFailClosed = %q", got)
	}
}

func TestLocalCacheIsBounded(t *testing.T) {
	t.Parallel()
	c := newLocalCache(64)
	now := time.Now()
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

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
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
			b := setupOn(t, srv, func(c *Config) {
				if tc.ctxClient {
					rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
					t.Cleanup(func() { _ = rdb.Close() })
					c.Client = &countingClient{Client: rdb}
				}
				c.MaxInFlight = 1 // everything beyond one round trip queues
				c.LocalCacheSize = -1
				c.Timeout = 5 * time.Second
				c.Overrides = map[string]Quota{"default": {Limit: 100, Period: time.Minute}}
			})
			counted := b.l.client.(*countingClient)
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
						case err != nil || res.Reason == ReasonDegraded:
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
			if counted.pipes.Load() == 0 {
				t.Fatal("no batch was formed under 64 concurrent callers")
			}
			if n := counted.scripts.Load(); n < g*each {
				t.Fatalf("%d script runs for %d decisions", n, g*each)
			}
		})
	}
}
