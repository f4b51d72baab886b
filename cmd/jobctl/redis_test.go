package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/idempotency"
	"github.com/digis/jobworker/internal/apiapp"
	"github.com/digis/jobworker/internal/keyscan"
	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/limits"
	"github.com/digis/jobworker/outbox"
)

func fillKeys(t *testing.T, rdb redis.Cmdable, format string, n int, ttl time.Duration) {
	t.Helper()
	ctx := context.Background()
	pipe := rdb.Pipeline()
	for i := range n {
		pipe.Set(ctx, fmt.Sprintf(format, i), "secret-value", ttl)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	fillKeys(t, rdb, "jw:rl:strict:tips:quick:{%d}", 300, time.Minute)
	fillKeys(t, rdb, "jw:cache:status:{u%d}", 50, 0)
	fillKeys(t, rdb, "other:%d", 10, 0)
	c := (&ctl{}).set("REDIS_URL", srv.URL(), "REDIS_KEY_PREFIX", "jw:")
	var rep keyscan.Report
	c.json(t, &rep, "keys", "-count", "50", "-pause", "0", "*")
	if rep.Keys != 350 || len(rep.Prefixes) != 2 || rep.Prefixes[1].Prefix != "jw:rl:strict:tips:quick:" || rep.Prefixes[1].Keys != 300 || rep.Prefixes[1].NoTTL != 0 {
		t.Fatalf("keys report = %+v", rep)
	}
	out, errs := c.want(t, exitOK, "keys", "-values", "-progress", "cache:*")
	if !strings.Contains(out, "jw:cache:status:") || strings.Contains(out, "secret-value") || !strings.Contains(out, "<12 bytes, sha256:") {
		t.Errorf("keys -values (redacted):\n%s", out)
	}
	if !strings.Contains(errs, "scanning [") || !strings.Contains(errs, "1/1 nodes done") {
		t.Errorf("no progress bar on stderr: %q", errs)
	}
	out, _ = c.want(t, exitOK, "keys", "-values", "-reveal", "-max", "1", "cache:*")
	if !strings.Contains(out, "secret-value") || !strings.Contains(out, "(1 of 50 keys listed)") {
		t.Errorf("keys -reveal:\n%s", out)
	}
	c.want(t, exitUsage, "keys", "-reveal", "*")
	c.want(t, exitUsage, "keys", "-pause", "-1s", "*")
}

func TestKeysCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	t.Parallel()
	cl := redistest.StartCluster(t)
	rdb := cl.Client(t)
	ctx := context.Background()
	for i := range 600 { // spread over the three masters
		if err := rdb.Set(ctx, fmt.Sprintf("jw:idem:qstash:{job%d}:m", i), "v", time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	c := (&ctl{}).set("REDIS_URL", cl.URL(), "REDIS_KEY_PREFIX", "jw:")
	var rep keyscan.Report
	c.json(t, &rep, "keys", "-count", "20", "idem:*")
	if rep.Keys != 600 || rep.Nodes != 3 || len(rep.Prefixes) != 1 || rep.Prefixes[0].Keys != 600 {
		t.Fatalf("cluster keys = %d on %d nodes, %+v", rep.Keys, rep.Nodes, rep.Prefixes)
	}
}

// TestLimits: jobctl addresses the API's windows with the API's own
// configuration, and its reset reaches an instance's local block cache.
func TestLimits(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	env := (&ctl{}).set("REDIS_URL", srv.URL(), "REDIS_KEY_PREFIX", "jw:", "RATE_LIMIT_HASH_KEY", "limits-hash-key-for-the-test-0123")
	cfg, err := apiapp.LimiterConfig(func(k string) string { return env.env[k] })
	if err != nil {
		t.Fatal(err)
	}
	cfg.Client = srv.Client(t)
	api, err := limits.New(cfg) // one API instance, its block cache on
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	listening := make(chan struct{})
	go func() { defer close(listening); _ = api.Listen(ctx) }()
	t.Cleanup(func() { cancel(); <-listening })
	testwaitSubscribed(t, srv, "jw:"+limits.ResetChannel)

	for range 10 {
		if _, err := api.Allow(context.Background(), "tips:quick", "user:42"); err != nil {
			t.Fatal(err)
		}
	}
	if res, _ := api.Allow(context.Background(), "tips:quick", "user:42"); res.Allowed || res.Reason != limits.ReasonBlockedLocally {
		t.Fatalf("the API instance does not block from memory: %+v", res)
	}
	var show struct{ Limit, Remaining int }
	env.json(t, &show, "limits", "show", "tips:quick", "user:42")
	if show.Limit != 10 || show.Remaining != 0 {
		t.Errorf("limits show = %+v", show)
	}
	env.json(t, &show, "limits", "reset", "tips:quick", "user:42")
	if show.Remaining != 10 {
		t.Errorf("limits reset = %+v", show)
	}
	waitFor(t, "the API instance admits again", func() bool {
		res, err := api.Allow(context.Background(), "tips:quick", "user:42")
		return err == nil && res.Allowed
	})
	env.want(t, exitUsage, "limits", "show", "no:such", "user:42")
	env.want(t, exitUsage, "limits", "show", "tips:quick", "42")
	env.want(t, exitOK, "limits", "show", "tips:quick", "ip:2001:db8::1")
	env.set("RATE_LIMIT_HASH_KEY", "").want(t, exitConfig, "limits", "show", "tips:quick", "user:42")
}

func testwaitSubscribed(t *testing.T, srv *redistest.Server, channel string) {
	t.Helper()
	rdb := srv.Client(t)
	waitFor(t, "subscribed to "+channel, func() bool {
		n, err := rdb.PubSubNumSub(context.Background(), channel).Result()
		return err == nil && n[channel] >= 1
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for wait := time.Millisecond; !cond(); wait = min(2*wait, 20*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(wait) // polling the condition, as testwait.For does
	}
}

func TestIdem(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	store, err := idempotency.NewStore(srv.Client(t), idempotency.StoreConfig{Prefix: "jw:", Namespace: "qstash"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	running, err := store.Acquire(ctx, "{tips.settle}:msg_1", "fp-1")
	if err != nil || running.Lease == nil {
		t.Fatalf("Acquire = %+v, %v", running, err)
	}
	done, err := store.Acquire(ctx, "{tips.settle}:msg_2", "fp-2")
	if err != nil {
		t.Fatal(err)
	}
	if err := done.Lease.Complete(ctx, []byte(`{"secret":"answer"}`)); err != nil {
		t.Fatal(err)
	}
	c := (&ctl{}).set("REDIS_URL", srv.URL(), "REDIS_KEY_PREFIX", "jw:")
	var rec struct {
		Key, State, Value string
		TTL               time.Duration
	}
	c.json(t, &rec, "idem", "show", "qstash:{tips.settle}:msg_2")
	if rec.Key != "jw:idem:qstash:{tips.settle}:msg_2" || rec.State != "done" || strings.Contains(rec.Value, "secret") || rec.TTL <= 0 {
		t.Errorf("idem show = %+v", rec)
	}
	c.json(t, &rec, "idem", "show", "jw:idem:qstash:{tips.settle}:msg_1")
	if rec.State != "lease" {
		t.Errorf("idem show lease = %+v", rec)
	}
	c.want(t, exitUsage, "idem", "forget", "qstash:{tips.settle}:msg_1")
	c.want(t, exitOK, "idem", "forget", "-force", "qstash:{tips.settle}:msg_1")
	c.want(t, exitOK, "idem", "forget", "idem:qstash:{tips.settle}:msg_2")
	c.want(t, exitNotFound, "idem", "show", "qstash:{tips.settle}:msg_2")
	// Forgotten, the message runs again.
	again, err := store.Acquire(ctx, "{tips.settle}:msg_2", "fp-2")
	if err != nil || again.Outcome != idempotency.Acquired {
		t.Errorf("after forget: %+v, %v", again, err)
	}
}

func TestOutboxStatus(t *testing.T) {
	t.Parallel()
	db := pgtest.Create(t)
	ctx := context.Background()
	if err := outbox.Migrate(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	for i, state := range []string{"pending", "pending", "sent", "failed"} {
		if _, err := db.Pool.Exec(ctx, `INSERT INTO jobworker_outbox (id, kind, body, state, attempts, last_error, finished_at, created_at)
			VALUES (gen_random_uuid(), 'tips.notify-creator', '{}', $1::text, $2::int, CASE WHEN $1::text = 'failed' THEN 'qstash said 400' END,
			        CASE WHEN $1::text <> 'pending' THEN now() END, now() - interval '1 minute' * $2::int)`, state, i); err != nil {
			t.Fatal(err)
		}
	}
	c := (&ctl{}).set("DATABASE_URL", db.URL)
	var st struct {
		Pending, Sent, Failed int
		OldestPending         time.Duration
		LatestFailed          []struct{ Job, LastError string }
	}
	c.json(t, &st, "outbox", "status")
	if st.Pending != 2 || st.Sent != 1 || st.Failed != 1 || st.OldestPending < time.Minute || len(st.LatestFailed) != 1 || st.LatestFailed[0].LastError != "qstash said 400" {
		t.Errorf("outbox status = %+v", st)
	}
	c.set("DATABASE_URL", "memory").want(t, exitConfig, "outbox", "status")
}
