package limits

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/redistest"
)

// TestCluster runs the core behaviour on a three-master Redis Cluster: the
// script's one key carries a hash tag, so it runs on whichever node owns the
// identifier, and identifiers spread over the nodes.
func TestCluster(t *testing.T) {
	t.Parallel()
	cc := redistest.StartCluster(t).Client(t)
	ctx := context.Background()
	counted := &countingClient{Client: cc}
	l, err := New(Config{Client: counted, Prefix: "app:", HashKey: testHashKey,
		Overrides: map[string]Quota{"messages:send": {Limit: 3, Period: time.Minute}}})
	if err != nil {
		t.Fatal(err)
	}
	// Scripts are cached per node: start with none anywhere (NOSCRIPT path).
	if err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		return m.ScriptFlush(ctx).Err()
	}); err != nil {
		t.Fatal(err)
	}

	t.Run("tenth passes, eleventh denied, per identifier", func(t *testing.T) {
		for i := 0; i < 40; i++ {
			id := fmt.Sprintf("user:%d", i)
			for j := 1; j <= 11; j++ {
				res, err := l.Allow(ctx, "auth:otp", id)
				if err != nil {
					t.Fatal(err)
				}
				if res.Allowed != (j <= 10) || (j <= 10 && res.Reason != ReasonAllowed) {
					t.Fatalf("%s request %d: %+v", id, j, res)
				}
			}
		}
	})
	t.Run("denied does not consume, peek, reset", func(t *testing.T) {
		if res, _ := l.AllowN(ctx, "messages:send", "user:x", 2); !res.Allowed || res.Remaining != 1 {
			t.Fatalf("AllowN 2: %+v", res)
		}
		if res, _ := l.AllowN(ctx, "messages:send", "user:x", 2); res.Allowed || res.Remaining != 1 {
			t.Fatalf("AllowN 2 again: %+v", res)
		}
		if res, _ := l.Peek(ctx, "messages:send", "user:x"); !res.Allowed || res.Remaining != 1 {
			t.Fatalf("Peek: %+v", res)
		}
		if err := l.Reset(ctx, "messages:send", "user:x"); err != nil {
			t.Fatal(err)
		}
		if res, _ := l.Peek(ctx, "messages:send", "user:x"); res.Remaining != 3 {
			t.Fatalf("Peek after Reset: %+v", res)
		}
	})
	t.Run("every key has a TTL and keys spread over masters", func(t *testing.T) {
		var mu sync.Mutex
		mastersWithKeys, total := 0, 0
		err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			keys, err := m.Keys(ctx, "*").Result()
			if err != nil {
				return err
			}
			for _, k := range keys {
				ttl, err := m.PTTL(ctx, k).Result()
				if err != nil {
					return err
				}
				if ttl <= 0 || ttl > time.Minute {
					return fmt.Errorf("key %q PTTL %s", k, ttl)
				}
				if !strings.HasPrefix(k, "app:rl:") {
					return fmt.Errorf("key %q lacks the prefix", k)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			total += len(keys)
			if len(keys) > 0 {
				mastersWithKeys++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if total != 40 || mastersWithKeys != 3 {
			t.Fatalf("%d keys on %d masters, want 40 on 3", total, mastersWithKeys)
		}
	})
	t.Run("leases", func(t *testing.T) {
		leased, err := New(Config{Client: cc, Prefix: "lease:", HashKey: testHashKey,
			Overrides: map[string]Quota{DefaultBucket: PerMinute(100)},
			Leases:    map[string]int{DefaultBucket: 10}})
		if err != nil {
			t.Fatal(err)
		}
		local := 0
		for i := 1; i <= 101; i++ {
			res, err := leased.Allow(ctx, DefaultBucket, "user:lease")
			if err != nil {
				t.Fatal(err)
			}
			if res.Allowed != (i <= 100) || (res.Allowed && res.Remaining != 100-i) {
				t.Fatalf("request %d: %+v", i, res)
			}
			if res.Reason == ReasonAllowedLocally {
				local++
			}
		}
		if local < 50 {
			t.Fatalf("only %d of 100 admissions came from leases", local)
		}
	})
}
