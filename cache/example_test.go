package cache_test

import (
	"context"
	"fmt"
	"time"

	"github.com/digis/jobworker/cache"
	"github.com/redis/go-redis/v9"
)

type streamStatus struct {
	Live    bool `json:"live"`
	Viewers int  `json:"viewers"`
}

// The usual shape: a status read through the cache, invalidated when the
// stream starts or stops. (Needs a Redis, so it is compiled, not run.)
func Example() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", ContextTimeoutEnabled: true})
	defer rdb.Close()
	c, err := cache.New(rdb, cache.Config{Prefix: "myapp:"})
	if err != nil {
		panic(err)
	}
	defer c.Close(context.Background())
	ctx := context.Background()

	var o cache.Outcome
	st, err := cache.GetOrCompute(ctx, c, "status:{42}", 10*time.Second,
		func(ctx context.Context) (streamStatus, error) {
			return streamStatus{Live: true, Viewers: 12}, nil // the database query
		},
		cache.WithStaleWhileRevalidate(5*time.Second), cache.WithOutcome(&o))
	if err != nil {
		panic(err)
	}
	fmt.Printf("live=%v viewers=%d outcome=%s\n", st.Live, st.Viewers, o)

	// The stream stopped: every instance recomputes on its next read.
	if err := c.Invalidate(ctx, "status:{42}"); err != nil {
		fmt.Println("invalidate:", err)
	}
}

// With Redis unreachable the cache fails open: the value is computed and
// returned, nothing is stored, and the call is counted as degraded.
func Example_failOpen() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer rdb.Close()
	c, err := cache.New(rdb, cache.Config{RedisTimeout: 50 * time.Millisecond})
	if err != nil {
		panic(err)
	}
	defer c.Close(context.Background())

	var o cache.Outcome
	st, err := cache.GetOrCompute(context.Background(), c, "status:{42}", 10*time.Second,
		func(ctx context.Context) (streamStatus, error) {
			return streamStatus{Live: true, Viewers: 12}, nil
		}, cache.WithOutcome(&o))
	fmt.Println(st.Live, st.Viewers, err, o)
	// Output: true 12 <nil> degraded
}
