package redistest_test

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

func TestServerStopRestartKeepsData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if err := rdb.Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded against a stopped server")
	}
	srv.Restart()
	got, err := rdb.Get(ctx, "k").Result()
	if err != nil || got != "v" {
		t.Fatalf("after restart GET k = %q, %v; want v", got, err)
	}
}

func TestServerKillLosesData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	_ = rdb.Set(ctx, "k", "v", 0).Err()
	srv.Kill()
	srv.Restart()
	if n, _ := rdb.Exists(ctx, "k").Result(); n != 0 {
		t.Fatal("data survived SIGKILL without persistence")
	}
}

// Nothing sent after Pause returns is answered, even while the server is
// busy with another client's commands when it is paused (a thread still
// running on the other core must have stopped before Pause returns).
func TestServerPauseTimesOut(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := func() *redis.Client { // one that gives up at its context's deadline
		c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	rdb, busy := client(), client()
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // keeps redis-server running commands
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			_ = busy.Incr(ctx, "busy").Err()
			cancel()
		}
	}()
	defer func() { close(stop); <-done }()
	for round := 0; round < 20; round++ {
		srv.Pause()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			t.Fatalf("round %d: PING answered by a paused server", round)
		}
		srv.Resume()
		if err := rdb.Ping(context.Background()).Err(); err != nil {
			t.Fatalf("round %d, after resume: %v", round, err)
		}
	}
}

func TestServersAreIsolated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := redistest.Start(t), redistest.Start(t)
	if a.Addr() == b.Addr() {
		t.Fatal("two servers share an address")
	}
	_ = a.Client(t).Set(ctx, "only-a", 1, 0).Err()
	if n, _ := b.Client(t).Exists(ctx, "only-a").Result(); n != 0 {
		t.Fatal("key leaked between servers")
	}
}

func TestCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := redistest.StartCluster(t)
	cc := c.Client(t)
	// Keys spread over slots owned by different masters.
	for i := 0; i < 50; i++ {
		if err := cc.Set(ctx, fmt.Sprintf("key-%d", i), i, time.Minute).Err(); err != nil {
			t.Fatalf("SET on cluster: %v", err)
		}
	}
	var mu sync.Mutex
	withKeys := 0
	err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		n, err := m.DBSize(ctx).Result()
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if n > 0 {
			withKeys++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if withKeys != 3 {
		t.Fatalf("keys landed on %d masters, want 3", withKeys)
	}
	// A multi-key command is accepted when the keys share a hash tag.
	if err := cc.MSet(ctx, "{tag}a", 1, "{tag}b", 2).Err(); err != nil {
		t.Fatalf("MSET with one hash tag: %v", err)
	}
	if !strings.HasPrefix(c.URL(), "redis+cluster://") {
		t.Fatalf("URL %q", c.URL())
	}
}
