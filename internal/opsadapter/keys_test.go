package opsadapter_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/opsadapter"
	"github.com/digis/jobworker/internal/redistest"
)

func seed(t *testing.T, rdb redis.UniversalClient) {
	t.Helper()
	ctx := context.Background()
	for i := range 30 {
		rdb.Set(ctx, fmt.Sprintf("app:idem:qstash:{demo.hello}:msg_%d", i), "1", 48*time.Hour)
	}
	rdb.Set(ctx, "app:rl:strict:tips:quick:{aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}", "7", 30*time.Second)
	rdb.Set(ctx, "app:rl:strict:tips:quick:{bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb}", "2", 30*time.Second)
	rdb.Set(ctx, "app:cache:status:{alice}", "{}", 10*time.Second)
	rdb.Set(ctx, "app:ops:stats:{1}", "x", 0)
	rdb.Set(ctx, "other-app:rl:x:y:{z}", "100", 0) // not this deployment's
}

func TestKeysSample(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	seed(t, rdb)
	k := opsadapter.NewKeys(rdb, "app:", time.Second)
	rep, err := k.Sample(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sampled != 34 || !rep.Complete {
		t.Fatalf("sampled %d (complete %v), want all 34 keys of app:", rep.Sampled, rep.Complete)
	}
	got := map[string]int{}
	for _, p := range rep.Prefixes {
		got[p.Prefix] = p.Count
		if p.Prefix == "idem:qstash:" && p.TTL[">=1d"] != 30 {
			t.Errorf("idem:qstash: TTLs %v, want 30 at >=1d", p.TTL)
		}
		if p.Prefix == "ops:stats:" && p.TTL["none"] != 1 {
			t.Errorf("ops:stats: TTLs %v, want 1 without TTL", p.TTL)
		}
	}
	if got["idem:qstash:"] != 30 || got["rl:strict:tips:quick:"] != 2 || got["cache:status:"] != 1 {
		t.Errorf("prefixes %v", got)
	}
	if len(rep.TopLimited) != 2 || rep.TopLimited[0].Count != 7 || rep.TopLimited[0].Bucket != "tips:quick" ||
		rep.TopLimited[0].Tier != "strict" || rep.TopLimited[0].Identity != "aaaaaaaaaaaa…" {
		t.Errorf("top limited %+v", rep.TopLimited)
	}

	// A sample stops at its limit and says so.
	rep, err = k.Sample(context.Background(), 5)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sampled != 5 || rep.Complete {
		t.Errorf("limited sample: %d keys, complete %v", rep.Sampled, rep.Complete)
	}
}

func TestKeysSampleCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = rdb.Close() })
	seed(t, rdb)
	rep, err := opsadapter.NewKeys(rdb, "app:", time.Second).Sample(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sampled != 34 {
		t.Errorf("sampled %d keys over the cluster, want 34", rep.Sampled)
	}
}
