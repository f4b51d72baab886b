package keyscan_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/keyscan"
	"github.com/digis/jobworker/internal/redistest"
)

// fill writes n string keys prefix+i (value of size bytes), ttl>0 sets an
// expiry, pipelined in batches.
func fill(t testing.TB, rdb redis.UniversalClient, prefix string, n, size int, ttl time.Duration) {
	t.Helper()
	ctx := context.Background()
	val := strings.Repeat("v", size)
	for start := 0; start < n; start += 1000 {
		pipe := rdb.Pipeline()
		for i := start; i < min(start+1000, n); i++ {
			pipe.Set(ctx, fmt.Sprintf("%s%d", prefix, i), val, ttl)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func byPrefix(rep keyscan.Report) map[string]keyscan.PrefixStats {
	out := map[string]keyscan.PrefixStats{}
	for _, p := range rep.Prefixes {
		out[p.Prefix] = p
	}
	return out
}

func TestPrefix(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ given, want string }{
		{given: "jw:idem:qstash:{tips.settle}:msg_1", want: "jw:idem:qstash:"},
		{given: "jw:rl:strict:tips:{abc}", want: "jw:rl:strict:tips:"},
		{given: "jw:cache:count:tips:30d:{c1}", want: "jw:cache:count:tips:30d:"},
		{given: "a:b:c", want: "a:b:"},
		{given: "plain", want: "plain"},
	} {
		if got := keyscan.Prefix(tt.given); got != tt.want {
			t.Errorf("Prefix(%q) = %q, want %q", tt.given, got, tt.want)
		}
	}
}

func TestScan(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	fill(t, rdb, "jw:rl:strict:", 2500, 8, time.Hour)
	fill(t, rdb, "jw:cache:", 700, 64, 0)
	fill(t, rdb, "other:", 300, 8, 0)
	ctx := context.Background()
	rdb.HSet(ctx, "jw:h:1", "a", "1", "b", "2")

	var mu sync.Mutex
	var last keyscan.Progress
	rep, err := keyscan.Scan(ctx, rdb, keyscan.Options{Pattern: "jw:*", Count: 100, MaxKeys: 5, Values: true,
		Progress: func(p keyscan.Progress) { mu.Lock(); last = p; mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Keys != 3201 || rep.Nodes != 1 {
		t.Fatalf("Keys = %d on %d nodes, want 3201 on 1", rep.Keys, rep.Nodes)
	}
	ps := byPrefix(rep)
	rl, cache := ps["jw:rl:strict:"], ps["jw:cache:"]
	if rl.Keys != 2500 || rl.NoTTL != 0 || rl.MaxTTL > time.Hour || rl.MinTTL < 50*time.Minute || rl.Bytes <= 0 {
		t.Errorf("rl stats = %+v", rl)
	}
	if cache.Keys != 700 || cache.NoTTL != 700 || cache.Bytes <= rl.Bytes*700/2500 {
		t.Errorf("cache stats = %+v (rl %+v)", cache, rl)
	}
	if _, ok := ps["other:"]; ok {
		t.Error("the pattern let other: through")
	}
	if len(rep.Listed) != 5 || rep.Listed[0].Key != "jw:cache:0" || rep.Listed[0].Type != "string" || rep.Listed[0].TTL != -1 {
		t.Errorf("Listed = %+v", rep.Listed)
	}
	if v := rep.Listed[0].Value; strings.Contains(v, "vvvv") || !strings.HasPrefix(v, "<64 bytes, sha256:") {
		t.Errorf("value not redacted: %q", v)
	}
	mu.Lock()
	if last.Done != 1 || last.Calls < 30 || last.Keys < 3201 {
		t.Errorf("last progress = %+v", last)
	}
	mu.Unlock()

	rep, err = keyscan.Scan(ctx, rdb, keyscan.Options{Pattern: "jw:h:*", Values: true, Reveal: true})
	if err != nil || len(rep.Listed) != 1 || rep.Listed[0].Value != "<hash, 2 fields>" {
		t.Errorf("hash listing = %+v, %v", rep.Listed, err)
	}
	rep, err = keyscan.Scan(ctx, rdb, keyscan.Options{Pattern: "jw:cache:1", Values: true, Reveal: true})
	if err != nil || len(rep.Listed) != 1 || rep.Listed[0].Value != strings.Repeat("v", 64) {
		t.Errorf("revealed listing = %+v, %v", rep.Listed, err)
	}
	if _, err := keyscan.Scan(ctx, rdb, keyscan.Options{Reveal: true}); err == nil {
		t.Error("Reveal without Values accepted")
	}
}

// TestScanCluster: every master is scanned and every key counted once.
func TestScanCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	t.Parallel()
	cl := redistest.StartCluster(t)
	rdb := cl.Client(t)
	fill(t, rdb, "jw:rl:{a}:", 1000, 8, time.Minute)
	fill(t, rdb, "jw:x:", 3000, 8, 0) // spread over the three masters
	var mu sync.Mutex
	var last keyscan.Progress
	rep, err := keyscan.Scan(context.Background(), rdb, keyscan.Options{Count: 200, MaxKeys: -1,
		Progress: func(p keyscan.Progress) { mu.Lock(); last = p; mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	ps := byPrefix(rep)
	if rep.Keys != 4000 || rep.Nodes != 3 || ps["jw:rl:"].Keys != 1000 || ps["jw:x:"].Keys != 3000 || len(rep.Listed) != 0 {
		t.Errorf("cluster report = %d keys on %d nodes, %+v", rep.Keys, rep.Nodes, rep.Prefixes)
	}
	mu.Lock()
	defer mu.Unlock()
	if last.Done != 3 {
		t.Errorf("progress = %+v, want 3 nodes done", last)
	}
}

// TestPause: Pause is waited between round trips (never after the last),
// and a context that ends during a pause ends the walk with its error.
// Not parallel: it swaps the package's wait.
func TestPause(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	fill(t, rdb, "k:", 1000, 8, 0)
	var waits []time.Duration
	restore := keyscan.SetPause(func(_ context.Context, d time.Duration) error {
		waits = append(waits, d)
		return nil
	})
	defer restore()
	var calls int64
	rep, err := keyscan.Scan(context.Background(), rdb, keyscan.Options{Count: 100, MaxKeys: -1, Pause: 3 * time.Millisecond,
		Progress: func(p keyscan.Progress) { calls = max(calls, p.Calls) }})
	if err != nil || rep.Keys != 1000 {
		t.Fatalf("Scan = %d keys, %v", rep.Keys, err)
	}
	if calls < 5 || int64(len(waits)) != calls-1 {
		t.Errorf("%d pauses for %d round trips, want one between each", len(waits), calls)
	}
	for _, d := range waits {
		if d != 3*time.Millisecond {
			t.Fatalf("paused %v, want 3ms", d)
		}
	}

	waits = nil
	if _, err := keyscan.Scan(context.Background(), rdb, keyscan.Options{Count: 100}); err != nil || len(waits) != 0 {
		t.Errorf("no Pause: %d pauses, %v", len(waits), err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	keyscan.SetPause(func(ctx context.Context, _ time.Duration) error {
		if n++; n == 3 {
			cancel()
		}
		return ctx.Err()
	})
	if _, err := keyscan.Scan(ctx, rdb, keyscan.Options{Count: 100, Pause: time.Second}); !errors.Is(err, context.Canceled) || n != 3 {
		t.Errorf("cancelled during the third pause: %v after %d pauses", err, n)
	}
	if _, err := keyscan.Scan(ctx, rdb, keyscan.Options{Pause: -time.Second}); !errors.Is(err, keyscan.ErrInvalidOptions) {
		t.Errorf("negative Pause: %v", err)
	}
}
