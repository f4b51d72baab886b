package redisconn_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/redisconn"
	"github.com/digis/jobworker/internal/redistest"
)

func TestOpenSingleNode(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, err := redisconn.Open(redisconn.Config{URL: srv.URL() + "/2"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := redisconn.Ping(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "k", "v", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	// The /2 selects database 2: the key is not in database 0.
	if n, _ := srv.Client(t).Exists(ctx, "k").Result(); n != 0 {
		t.Fatal("DB number in the URL ignored")
	}
}

func TestOpenCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t)
	c, err := redisconn.Open(redisconn.Config{URL: cl.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*redis.ClusterClient); !ok {
		t.Fatalf("redis+cluster:// gave %T, want *redis.ClusterClient", c)
	}
	ctx := context.Background()
	for _, k := range []string{"a", "b", "c", "d", "e", "f"} {
		if err := c.Set(ctx, k, 1, time.Minute).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
	}
}

func TestTLSSchemes(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"rediss://default:pw@example.upstash.io:6379", "rediss+cluster://h1:6379?addr=h2:6379"} {
		c, err := redisconn.Open(redisconn.Config{URL: u})
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		var tlsOn bool
		switch cc := c.(type) {
		case *redis.Client:
			tlsOn = cc.Options().TLSConfig != nil
		case *redis.ClusterClient:
			tlsOn = cc.Options().TLSConfig != nil
		}
		_ = c.Close()
		if !tlsOn {
			t.Fatalf("%s: TLS not enabled", u)
		}
	}
}

func TestInvalidURLs(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "   ", "http://h:1", "redis://user:s3cr3t@h:port", "redis+cluster://h1?addr=h2", "::"} {
		err := redisconn.Config{URL: u}.Validate()
		if !errors.Is(err, redisconn.ErrInvalidURL) {
			t.Errorf("%q: err = %v, want ErrInvalidURL", u, err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("password in error %q", err)
		}
	}
}

// A hung Redis must turn into an error within the configured deadline, even
// for a caller whose context has no deadline at all.
func TestDeadlineOnEveryCall(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, err := redisconn.Open(redisconn.Config{URL: srv.URL(), Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	defer srv.Resume()
	for _, call := range []struct {
		name string
		do   func() error
	}{
		{"command", func() error { return c.Get(ctx, "x").Err() }},
		{"pipeline", func() error {
			_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error { p.Get(ctx, "x"); return nil })
			return err
		}},
	} {
		start := time.Now()
		err := call.do()
		if err == nil || errors.Is(err, redis.Nil) {
			t.Fatalf("%s: a paused Redis answered", call.name)
		}
		// 100 ms deadline; allow generous slack for a loaded CI machine but
		// far below the seconds an unbounded call would hang.
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Fatalf("%s took %s with a 100ms deadline", call.name, d)
		}
	}
	srv.Resume()
	if err := redisconn.Ping(ctx, c); err != nil {
		t.Fatalf("after resume: %v", err)
	}
}
